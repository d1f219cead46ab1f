"""ETL aggregations: the daily feature sources later stages read (item, creator, user, user×topic, user×creator).

Written once as SQL (:mod:`.jobs`), run on DuckDB or Spark (:mod:`.engines`),
scheduled and recorded by :mod:`.run`.
"""

from homefeed.data.etl.engines import DuckDBEngine, Engine, SparkEngine, engine_for
from homefeed.data.etl.jobs import Params, outputs
from homefeed.data.etl.run import EtlError, EtlReport, run_etl, snapshot_lake

__all__ = [
    "DuckDBEngine",
    "Engine",
    "EtlError",
    "EtlReport",
    "Params",
    "SparkEngine",
    "engine_for",
    "outputs",
    "run_etl",
    "snapshot_lake",
]
