"""`homefeed ingest` and `homefeed data check|etl`: logs into the lake, the daily checks, the ETL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from homefeed.cli.common import (
    OPEN_BANDIT,
    ConfigOption,
    UserError,
    app,
    console,
    load_settings,
    parse_day,
    styled,
    wide_console,
)
from homefeed.data.daily import CheckError, DayCheck, check_date
from homefeed.data.etl import EtlError, Params, engine_for, run_etl, snapshot_lake
from homefeed.data.ingest import IngestReport
from homefeed.data.ingest import ingest as ingest_file
from homefeed.data.lake import Lake
from homefeed.data.open_bandit import ingest_open_bandit
from homefeed.datasets import OPEN_BANDIT_SAMPLES, open_bandit_sample


def _ingest_table(title: str, reports: list[IngestReport], root: Path, tables: bool = False) -> Table:
    """One row per file (and table, where one file feeds several): rows in = written + duplicates + quarantined."""
    quarantined = any(r.reasons for r in reports)  # the reasons column only when there are some
    table = Table(title=title)
    for header in ("file",) + ("table",) * tables + ("rows in", "written", "duplicates", "quarantined"):
        table.add_column(header, justify="left" if header in ("file", "table") else "right")
    if quarantined:
        table.add_column("reasons")
    for r in reports:
        name = _source_name(Path(r.source), root)
        cells = [name, r.table] if tables else [name]
        cells += [f"{r.rows_in:,}", f"{r.written:,}", f"{r.duplicates:,}", f"{r.quarantined:,}"]
        if quarantined:
            cells.append(", ".join(f"{k} ({v})" for k, v in sorted(r.reasons.items())))
        table.add_row(*cells)
    return table


def _source_name(source: Path, root: Path) -> str:
    """A source file as the user named it: relative to the folder they gave, else its name."""
    return str(source.relative_to(root)) if root.is_dir() and source.is_relative_to(root) else source.name


@app.command()
def ingest(
    path: Annotated[
        Path | None, typer.Argument(help="A file, or a directory to ingest every matching file under.")
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(
            "--table", "-t", help="Canonical table: users, items, impressions, engagements (not for open-bandit)."
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="jsonl, csv, parquet (the default), or open-bandit (an Open Bandit Dataset folder or log).",
        ),
    ] = None,
    sample: Annotated[
        str | None,
        typer.Option(
            "--sample",
            help=f"Instead of PATH, the Open Bandit sample bundled with homefeed: {', '.join(OPEN_BANDIT_SAMPLES)}.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Check files against TABLE's contract: clean rows to the lake, failing rows to quarantine with a reason."""
    fmt = fmt or (OPEN_BANDIT if sample is not None else "parquet")
    if sample is not None:
        if path is not None or fmt != OPEN_BANDIT:
            raise UserError(
                f"--sample names the bundled Open Bandit sample: give it instead of PATH, with no --format"
                f" or --format {OPEN_BANDIT}"
            )
        path = open_bandit_sample(sample)
    elif path is None:
        raise UserError("give a PATH to ingest, or --sample for the bundled Open Bandit sample")
    if fmt == OPEN_BANDIT and table is not None:
        raise UserError(
            f"--table does not apply to --format {OPEN_BANDIT}: it writes users, items, impressions and engagements"
        )
    if fmt != OPEN_BANDIT and table is None:
        raise UserError(f"--table is required for --format {fmt}")
    settings = load_settings(config)
    paths = settings.resolved_paths
    lake = Lake(paths.lake)
    if fmt == OPEN_BANDIT:
        reports = ingest_open_bandit(path, lake, paths.quarantine)
        console.print(_ingest_table(f"ingest into {paths.lake} ({OPEN_BANDIT})", reports, path, tables=True))
        return
    suffix = {"jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv",), "parquet": (".parquet",)}.get(fmt, ())
    files = sorted(p for p in path.rglob("*") if p.suffix in suffix) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path}: no {fmt} files found")
    reports = [ingest_file(file, table, fmt, lake, paths.quarantine) for file in files]  # type: ignore[arg-type]
    console.print(_ingest_table(f"ingest into {paths.lake} ({table})", reports, path))


data_app = typer.Typer(help="The lake's data: daily checks and ETL aggregations.", no_args_is_help=True)
app.add_typer(data_app, name="data")

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


@data_app.command("check")
def data_check(
    date: Annotated[str, typer.Option("--date", "-d", metavar="YYYY-MM-DD", help="The day to check.")],
    tables: Annotated[
        list[str] | None,
        typer.Option(
            "--tables", "-t", metavar="T1,T2", help="Tables to check, comma-separated or repeated (default: all four)."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Check a day in the lake against its trailing baseline, store the findings, and exit 1 on an error.

    Exit codes: 0 no error; 1 an error-level finding (do not train on this day); 2 a bad date or table, or no data.
    """
    day = parse_day("--date", date)
    settings = load_settings(config)
    paths = settings.resolved_paths
    wanted = [t.strip() for item in tables or [] for t in item.split(",") if t.strip()]
    try:
        result = check_date(Lake(paths.lake), day, paths.checks, settings.checks, wanted or None)
    except CheckError as exc:
        raise UserError(str(exc)) from None
    # Messages are long: outside a terminal (CI logs, pipes) the table gets room for them.
    wide_console().print(_findings_table(result))
    counts = ", ".join(f"{n} {s}" + ("s" if n != 1 and s != "info" else "") for s, n in result.counts().items())
    verdict = ("FAILED", "bold red") if result.worst == "error" else ("passed", "green")
    console.print(
        styled(verdict, f" {day}: {counts} in {', '.join(result.tables)}; findings stored in {result.path}"),
        soft_wrap=True,
        highlight=False,
    )
    if result.worst == "error":
        raise typer.Exit(1)


@data_app.command("etl")
def data_etl(
    start: Annotated[str, typer.Option("--start", metavar="YYYY-MM-DD", help="First snapshot day.")],
    end: Annotated[
        str | None, typer.Option("--end", metavar="YYYY-MM-DD", help="Last snapshot day (default: --start).")
    ] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="duckdb | spark (default: backends.etl in the config).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute days that are up to date.")] = False,
    config: ConfigOption = None,
) -> None:
    """Compute the daily feature sources (item, creator, user, user×topic, user×creator) from the lake.

    Days whose inputs have not changed since they were computed are skipped, so re-running is cheap and safe.
    """
    first = parse_day("--start", start)
    last = parse_day("--end", end) if end else first
    settings = load_settings(config)
    paths = settings.resolved_paths
    backend = engine or settings.backends.etl
    if backend not in ("duckdb", "spark"):
        raise UserError(f"--engine: {backend!r} is not one of duckdb, spark")
    params = Params.from_settings(settings.etl, first, last, settings.features)
    runner = engine_for(settings, backend)
    try:
        report = run_etl(Lake(paths.lake), snapshot_lake(paths.etl), params, runner, force=force)
    except EtlError as exc:
        raise UserError(str(exc)) from None
    finally:
        runner.close()
    table = Table(title=f"ETL on {report.engine} into {paths.etl}")
    table.add_column("output")
    table.add_column("rows", justify="right")
    for name, rows in report.rows.items():
        table.add_row(name, f"{rows:,}")
    if report.rows:
        console.print(table)
    computed = f"{len(report.computed)} day(s) computed" if report.computed else "nothing to compute"
    console.print(f"{computed}, {len(report.up_to_date)} up to date, in {report.seconds:.1f} s")


def _findings_table(result: DayCheck) -> Table:
    """One row per finding; the numbers are in each message with their units (all fields are in the stored file)."""
    table = Table(title=f"data checks of {result.date}")
    for header in ("severity", "table", "check", "column", "segment"):
        table.add_column(header, no_wrap=True)
    table.add_column("message", ratio=1)
    for f in result.findings:
        severity = styled((f.severity, SEVERITY_STYLE[f.severity]))
        table.add_row(severity, f.table, f.check, f.column or "-", f.segment or "-", f.message)
    return table
