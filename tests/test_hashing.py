"""Stable hashes: the same value hashes the same in every process, whatever its integer width."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from homefeed.hashing import stable_hash


def test_stable_hash_is_process_independent() -> None:
    assert stable_hash(np.array([1, 2, 3], np.int64)).tolist() == stable_hash(np.array([1, 2, 3])).tolist()
    assert int(stable_hash(np.array([0], np.int64))[0]) == 0xE220A8397B1DCDAF  # SplitMix64's first output from 0
    assert stable_hash(np.array(["a", "b", "a"], object))[0] == stable_hash(np.array(["a"], object))[0]


def test_a_string_hashes_the_same_in_another_process() -> None:
    code = (
        "import numpy as np; from homefeed.hashing import stable_hash; print(int(stable_hash(np.array(['user-7']))[0]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert int(out) == int(stable_hash(np.array(["user-7"], object))[0])
