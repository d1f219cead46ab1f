"""homefeed: build, ship and run a personalized home feed."""

__version__ = "0.1.0"

import warnings as _warnings

# pandera imports pyspark.pandas when PySpark is installed, which warns about pandas 3 at import time; we never use
# pyspark.pandas (Spark runs our SQL), so the warning only confuses users of the CLI.
_warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
