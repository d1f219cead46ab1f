"""Hashes that are the same in every process and on every machine, for buckets that must not move.

Python's ``hash`` of a string changes with each process (``PYTHONHASHSEED``), so anything persisted or shared
between processes — the NN's id-embedding buckets, an experiment's arm of a user, the sample of requests whose
served features are logged — hashes with this instead.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_hash(values: np.ndarray) -> np.ndarray:
    """A process-independent 64-bit hash of each value: SplitMix64 of integers, BLAKE2b of anything else."""
    if values.dtype.kind in "iu":
        # array arithmetic wraps around without a warning (only scalars warn), so no ``errstate``: entering one
        # cost more than hashing a request's few ids
        z = values.astype(np.uint64).reshape(-1) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))).reshape(values.shape)
    if len(values) <= 16:  # a request's few ids: hashing each costs less than finding the distinct ones first
        return np.array([_blake(u) for u in values.astype(str).tolist()], np.uint64)
    uniques, inverse = np.unique(values.astype(str), return_inverse=True)
    return np.array([_blake(u) for u in uniques.tolist()], np.uint64)[inverse]


def _blake(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
