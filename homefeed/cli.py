"""`homefeed …` commands.  Thin: parse, call a stage, print.

Errors a user can cause (a bad config, an unknown policy, a negative count)
end in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.exceptions import TyperException

from homefeed import config as config_mod
from homefeed.config import ConfigError, DatasetSampling, Settings
from homefeed.data.daily import CheckError, DayCheck, check_date
from homefeed.data.etl import EtlError, Params, make_engine, run_etl
from homefeed.data.ingest import IngestError, IngestReport
from homefeed.data.ingest import ingest as ingest_file
from homefeed.data.lake import Lake
from homefeed.data.open_bandit import ingest_open_bandit
from homefeed.features.definitions import FeatureError, feature_set
from homefeed.features.materialize import materialize
from homefeed.features.skew import SkewThresholds, skew
from homefeed.features.store import StoreError, make_store
from homefeed.files import ensure_replaceable
from homefeed.schema import SchemaError
from homefeed.sim import BASELINES, PolicyError, SimulationResult, make_baseline
from homefeed.sim.simulation import LOG_TABLES, compare_policies
from homefeed.train import SPLITS, DatasetError, DatasetStore, build_dataset, load_spec
from homefeed.train import diff as diff_datasets

app = typer.Typer(help="homefeed: build, ship and run a personalized home feed.", no_args_is_help=True)
sim_app = typer.Typer(help="The simulated world.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")

OPEN_BANDIT = "open-bandit"
console = Console(width=max(Console().width, 100))  # tables stay readable in CI logs and pipes
err_console = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Project file (default: ./homefeed.toml).")]


class UserError(Exception):
    """A mistake in what the user asked for; reported in one line."""


def _settings(config: Path | None, **sim_overrides: object) -> Settings:
    settings = config_mod.load(config)
    overrides = {k: v for k, v in sim_overrides.items() if v is not None}
    if overrides:
        data = settings.model_dump()
        data["sim"].update(overrides)
        settings = config_mod.parse(data, source=str(config or "settings"), base_dir=settings.base_dir)
    return settings


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"--{name} must be a positive whole number, got {value}")


def _run_with_progress(
    settings: Settings, policies: list, days: int, out_dirs: dict[str, Path]
) -> list[SimulationResult]:
    """Simulate each policy with a progress bar per policy."""
    try:
        for target in out_dirs.values():
            ensure_replaceable(target, set(LOG_TABLES))
    except FileExistsError as exc:
        raise UserError(str(exc)) from None
    with Progress(
        TextColumn("[bold]{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days"),
        TimeElapsedColumn(),
        console=err_console,
    ) as progress:
        tasks = {p.name: progress.add_task(p.name, total=days) for p in policies}
        return compare_policies(
            settings.sim, policies, days, out_dirs, on_day=lambda name, _: progress.advance(tasks[name])
        )


def _outcome_table(results: list[SimulationResult], title: str) -> Table:
    table = Table(title=title, caption="per user-day: per active user per day; return: visits again the next day")
    columns = [
        ("policy", None),
        ("user-days", "user_days"),
        ("impr.", "impressions_per_user_day"),
        ("clicks", "clicks_per_user_day"),
        ("saves", "saves_per_user_day"),
        ("hides", "hides_per_user_day"),
        ("return", "return_rate"),
        ("fresh", "fresh_share"),
        ("unsafe", "unsafe_share"),
    ]
    for header, _ in columns:
        table.add_column(header, justify="left" if header == "policy" else "right")
    for result in results:
        summary = result.summary()
        cells = [result.policy]
        for _, key in columns[1:]:
            value = summary[key]
            if key == "user_days":
                cells.append(f"{int(value):,}")
            elif key.endswith("_rate") or key.endswith("_share"):
                cells.append(f"{value:.1%}")
            else:
                cells.append(f"{value:.3f}")
        table.add_row(*cells)
    return table


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write homefeed.toml.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented default project file."""
    path = config_mod.init(directory, overwrite=force)
    console.print(f"wrote {path}")


@sim_app.command("run")
def sim_run(
    days: Annotated[int, typer.Option(help="Days to simulate.")] = 14,
    users: Annotated[int | None, typer.Option(help="Users in the world (default: from config).")] = None,
    policy: Annotated[str, typer.Option(help=f"Feed policy: {', '.join(BASELINES)}.")] = "random",
    out: Annotated[Path | None, typer.Option(help="Directory for the logs (default: paths.sim_logs/POLICY).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: from config).")] = None,
    config: ConfigOption = None,
) -> None:
    """Simulate DAYS days of feeds served by POLICY and write the logs as Parquet partitioned by date."""
    _positive("days", days)
    _positive("users", users)
    settings = _settings(config, users=users, seed=seed)
    feed_policy = make_baseline(policy, seed=settings.sim.seed, max_age_days=settings.sim.item_lifetime_days)
    out_dir = out or settings.resolved_paths.sim_logs / policy
    results = _run_with_progress(settings, [feed_policy], days, {policy: out_dir})
    console.print(_outcome_table(results, f"{days} days, {settings.sim.users:,} users"))
    console.print(f"logs written to {out_dir}")


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
    path: Annotated[Path, typer.Argument(help="A file, or a directory to ingest every matching file under.")],
    table: Annotated[
        str | None,
        typer.Option(
            "--table", "-t", help="Canonical table: users, items, impressions, engagements (not for open-bandit)."
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="jsonl, csv, parquet, or open-bandit (an Open Bandit Dataset folder or log)."
        ),
    ] = "parquet",
    config: ConfigOption = None,
) -> None:
    """Check files against TABLE's contract: clean rows to the lake, failing rows to quarantine with a reason."""
    if fmt == OPEN_BANDIT and table is not None:
        raise UserError(
            f"--table does not apply to --format {OPEN_BANDIT}: it writes users, items, impressions and engagements"
        )
    if fmt != OPEN_BANDIT and table is None:
        raise UserError(f"--table is required for --format {fmt}")
    settings = _settings(config)
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


@app.command()
def demo(
    days: Annotated[int, typer.Option(help="Days to simulate per policy.")] = 14,
    users: Annotated[int | None, typer.Option(help="Users in the world (default: from config).")] = None,
    config: ConfigOption = None,
) -> None:
    """Run the loop on the simulated world: every baseline policy, side by side."""
    _positive("days", days)
    _positive("users", users)
    settings = _settings(config, users=users)
    s = settings.sim
    policies = [make_baseline(name, seed=s.seed, max_age_days=s.item_lifetime_days) for name in BASELINES]
    root = settings.resolved_paths.sim_logs
    console.print(f"[bold]homefeed demo[/bold]: {days} days of a simulated feed, {s.users:,} users, seed {s.seed}")
    results = _run_with_progress(settings, policies, days, {p.name: root / p.name for p in policies})
    console.print(_outcome_table(results, "Baseline policies on the same world"))
    console.print(f"logs written under {root}")


# --- data ------------------------------------------------------------------------------------------------------------
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
    day = _day("--date", date)
    settings = _settings(config)
    paths = settings.resolved_paths
    wanted = [t.strip() for item in tables or [] for t in item.split(",") if t.strip()]
    try:
        result = check_date(Lake(paths.lake), day, paths.checks, settings.checks, wanted or None)
    except CheckError as exc:
        raise UserError(str(exc)) from None
    # Messages are long: outside a terminal (CI logs, pipes) the table gets room for them.
    wide = Console(width=console.width if console.is_terminal else max(console.width, 160))
    wide.print(_findings_table(result))
    counts = ", ".join(f"{n} {s}" + ("s" if n != 1 and s != "info" else "") for s, n in result.counts().items())
    verdict = "[bold red]FAILED[/]" if result.worst == "error" else "[green]passed[/]"
    console.print(
        f"{verdict} {day}: {counts} in {', '.join(result.tables)}; findings stored in {result.path}",
        soft_wrap=True,
        highlight=False,
    )
    if result.worst == "error":
        raise typer.Exit(1)


def _day(option: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: {value!r} is not a date (YYYY-MM-DD)") from None


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
    first = _day("--start", start)
    last = _day("--end", end) if end else first
    settings = _settings(config)
    paths = settings.resolved_paths
    backend = engine or settings.backends.etl
    if backend not in ("duckdb", "spark"):
        raise UserError(f"--engine: {backend!r} is not one of duckdb, spark")
    params = Params.from_settings(settings.etl, first, last)
    runner = make_engine(backend, settings.backends.spark_master, settings.etl.memory_limit, paths.etl / ".spill")
    try:
        report = run_etl(Lake(paths.lake), Lake(paths.etl), params, runner, force=force)
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


# --- dataset ---------------------------------------------------------------------------------------------------------
dataset_app = typer.Typer(
    help="Training datasets: immutable, versioned snapshots of labelled impressions with their features.",
    no_args_is_help=True,
)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("build")
def dataset_build(
    spec: Annotated[
        Path | None,
        typer.Option("--spec", "-s", help="Dataset file (TOML): start, end, any key of the project's dataset section."),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", metavar="YYYY-MM-DD", help="First impressions day (overrides the file).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", metavar="YYYY-MM-DD", help="Last impressions day (overrides the file).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a dataset with this id exists.")] = False,
    config: ConfigOption = None,
) -> None:
    """Turn the lake's impressions and engagements and the ETL's features into a versioned training dataset.

    The id is a hash of the spec, the feature set and every input file's checksum: the same inputs give the same
    id and bytes, and building an id that exists does nothing.
    """
    first = _day("--start", start) if start else None
    last = _day("--end", end) if end else None
    settings = _settings(config)
    built = build_dataset(load_spec(settings, spec, first, last), settings, force=force)
    _wide().print(_splits_table(built.manifest))
    _print_problems(built.manifest)
    if built.reused:
        console.print(f"dataset {built.id} already built at {built.path} (--force rebuilds it)", highlight=False)
    else:
        seconds = built.manifest["seconds"]
        console.print(f"dataset {built.id} written to {built.path} in {seconds:.1f} s", highlight=False)


@dataset_app.command("list")
def dataset_list(config: ConfigOption = None) -> None:
    """The datasets built so far, oldest first."""
    store = DatasetStore(_settings(config).resolved_paths.datasets)
    manifests = store.manifests()
    if not manifests:
        console.print(f"no datasets under {store.root}: `homefeed dataset build` makes one")
        return
    table = Table(title=f"datasets in {store.root}")
    for header in ("id", "built (UTC)", "days", "feature set", "rows", "labels (all rows)", "violations"):
        table.add_column(header, justify="right" if header in ("rows", "violations") else "left", no_wrap=True)
    for m in manifests:
        every = m["stats"]["all"]
        labels = ", ".join(f"{name} {v['rate']:.2%}" for name, v in every["labels"].items())
        days = f"{m['spec']['start']}..{m['spec']['end']}"
        built = m["created_at"][:16].replace("T", " ")
        row = (m["id"], built, days, m["feature_set"]["version"], f"{every['rows']:,}", labels)
        table.add_row(*row, str(len(m["violations"])))
    _wide().print(table)


@dataset_app.command("show")
def dataset_show(
    dataset: Annotated[str, typer.Argument(metavar="ID", help="A dataset id, or a unique prefix of one.")],
    config: ConfigOption = None,
) -> None:
    """A dataset's manifest: spec, splits, labels, weights, feature statistics, violations."""
    m = DatasetStore(_settings(config).resolved_paths.datasets).load(dataset)
    spec = m["spec"]
    console.print(f"[bold]dataset {m['id']}[/bold], built {m['created_at']} (homefeed {m['homefeed']})")
    console.print(
        f"impressions {spec['start']} to {spec['end']}; labels {', '.join(spec['labels'])}; feature set "
        f"{m['feature_set']['version']} ({len(m['feature_set']['columns'])} columns); {len(m['inputs'])} input files",
        highlight=False,
        soft_wrap=True,
    )
    plain = DatasetSampling().model_dump()
    sampling = ", ".join(f"{k} = {v}" for k, v in spec["sampling"].items() if v != plain[k]) or "none (weights 1)"
    console.print(f"sampling: {sampling}; seed {spec['seed']}", highlight=False)
    _wide().print(_splits_table(m))
    features = Table(title="features over all rows, unweighted (missing: the source had no fresh value)")
    for header in ("feature", "missing", "nulls", "mean", "std", "min", "max"):
        features.add_column(header, justify="left" if header == "feature" else "right")
    for name in [c for c in m["feature_set"]["columns"] if c in m["stats"]["all"]["features"]]:
        st = m["stats"]["all"]["features"][name]
        missing = "-" if st["missing_rate"] is None else f"{st['missing_rate']:.1%}"
        cells = [_num(st[k]) for k in ("mean", "std", "min", "max")]
        features.add_row(name, missing, f"{st['null_rate']:.1%}", *cells)
    _wide().print(features)
    _print_problems(m)


@dataset_app.command("diff")
def dataset_diff(
    a: Annotated[str, typer.Argument(metavar="ID1", help="The dataset to compare from.")],
    b: Annotated[str, typer.Argument(metavar="ID2", help="The dataset to compare to.")],
    config: ConfigOption = None,
) -> None:
    """What changed between two datasets: spec, inputs, rows and labels, features, and per-feature shifts."""
    store = DatasetStore(_settings(config).resolved_paths.datasets)
    d = diff_datasets(store.load(a), store.load(b))
    console.print(f"[bold]{d.a}[/bold] → [bold]{d.b}[/bold]")
    if d.spec:
        spec = Table(title="spec")
        for header in ("key", d.a, d.b):
            spec.add_column(header)
        for key, x, y in d.spec:
            spec.add_row(key, str(x), str(y))
        _wide().print(spec)
    else:
        console.print("spec: identical")
    fs_a, fs_b = d.feature_set
    console.print(
        f"inputs: {d.inputs_added} file(s) new or changed in {d.b}, {d.inputs_removed} gone or changed; "
        f"feature set {fs_a if fs_a == fs_b else f'{fs_a} → {fs_b}'}",
        highlight=False,
        soft_wrap=True,
    )
    for what, names in (("added", d.features_added), ("removed", d.features_removed)):
        if names:
            console.print(f"features {what}: {', '.join(names)}", highlight=False)
    splits = Table(title="rows and label rates")
    for header in ("split", "rows", "weight sum", "labels"):
        splits.add_column(header, justify="left" if header in ("split", "labels") else "right")
    for s in d.splits:
        labels = ", ".join(f"{n} {_pct(x)} → {_pct(y)}" for n, (x, y) in s["labels"].items())
        rows = f"{_int(s['rows'][0])} → {_int(s['rows'][1])}"
        splits.add_row(s["split"], rows, f"{_weight(s['weight_sum'][0])} → {_weight(s['weight_sum'][1])}", labels)
    _wide().print(splits)
    moved = [s for s in d.shifts if abs(s["shift_std"] or 0) >= 0.05 or _moved(s["missing_rate"])]
    if not moved:
        console.print(f"features: no mean or missing-rate shift among {len(d.shifts)} shared features")
        return
    title = f"features whose mean moved ≥ 0.05 std or missing rate ≥ 0.5 points ({len(moved)} of {len(d.shifts)})"
    shifts = Table(title=title)
    for header in ("feature", "mean", "shift (std)", "missing"):
        shifts.add_column(header, justify="left" if header == "feature" else "right")
    for s in moved:
        (ma, mb), (xa, xb) = s["mean"], s["missing_rate"]
        missing = "-" if xa is None else f"{xa:.1%} → {xb:.1%}"
        shifts.add_row(s["feature"], f"{_num(ma)} → {_num(mb)}", f"{s['shift_std']:+.2f}", missing)
    _wide().print(shifts)


def _splits_table(m: dict) -> Table:
    """Per split: its days, impressions → rows kept, the weight sum, and each label's raw and weighted rate."""
    table = Table(title=f"dataset {m['id']}", caption="weighted: the rate the weights restore (down-sampling undone)")
    for header in ("split", "days", "impressions", "kept", "weight sum"):
        table.add_column(header, justify="left" if header in ("split", "days") else "right", no_wrap=True)
    labels = m["spec"]["labels"]
    for name in labels:
        table.add_column(f"{name} (weighted)", justify="right")
    for split in [s for s in SPLITS if s in m["splits"]]:
        info, st = m["splits"][split], m["stats"][split]
        rates = [st["labels"].get(n, {}) for n in labels]
        cells = [f"{_pct(r.get('rate'))} ({_pct(r.get('weighted_rate'))})" for r in rates]
        days = f"{info['first_day']} to {info['last_day']}"
        funnel = info["funnel"]
        table.add_row(split, days, _int(funnel.get("impressions")), _int(st["rows"]), _weight(st["weight_sum"]), *cells)
    return table


def _wide() -> Console:
    """Dataset tables are wide: outside a terminal (CI logs, pipes) they get room instead of wrapping."""
    return Console(width=console.width if console.is_terminal else max(console.width, 160))


def _print_problems(m: dict, limit: int = 20) -> None:
    for warning in m["warnings"]:
        err_console.print(f"[yellow]warning[/]: {warning}", highlight=False, soft_wrap=True)
    for v in m["violations"][:limit]:
        err_console.print(f"[red]violation[/] ({v['split']}): {v['message']}", highlight=False, soft_wrap=True)
    if len(m["violations"]) > limit:
        err_console.print(f"… and {len(m['violations']) - limit} more violations in {m['id']}/manifest.json")


def _moved(pair: tuple[float | None, float | None]) -> bool:
    return None not in pair and abs(pair[1] - pair[0]) >= 0.005  # type: ignore[operator]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _int(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _weight(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.4g}"


def _findings_table(result: DayCheck) -> Table:
    """One row per finding; the numbers are in each message with their units (all fields are in the stored file)."""
    table = Table(title=f"data checks of {result.date}")
    for header in ("severity", "table", "check", "column", "segment"):
        table.add_column(header, no_wrap=True)
    table.add_column("message", ratio=1)
    for f in result.findings:
        severity = f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]"
        table.add_row(severity, f.table, f.check, f.column or "-", f.segment or "-", f.message)
    return table


# --- features --------------------------------------------------------------------------------------------------------
features_app = typer.Typer(
    help="Feature definitions, the online store and the train/serve skew check.", no_args_is_help=True
)
app.add_typer(features_app, name="features")


@features_app.command("list")
def features_list(
    set_name: Annotated[
        str | None, typer.Option("--set", help="A feature set (default: [features] set in the config).")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every feature the ETL outputs provide.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show each feature once: entity, source, type, default, availability lag, TTL, version and meaning."""
    settings = _settings(config)
    fs = feature_set("all" if everything else (set_name or settings.features.set), settings.etl, settings.features)
    table = Table(title=f"feature set {fs.version}: {len(fs.features)} features + {len(fs.flags)} missing flags")
    for header in ("feature", "entity", "source", "type", "default", "lag", "ttl", "v"):
        table.add_column(header, no_wrap=True)
    table.add_column("description", ratio=1)
    for f in fs.features:
        table.add_row(
            f.name, f.entity, f.source, f.dtype, f"{f.default:g}", _duration(f.lag), _duration(f.ttl), str(f.version),
            f.description,
        )  # fmt: skip
    for flag in fs.flags:
        table.add_row(
            flag, flag.removesuffix("_missing"), "-", "int8", "-", "-", "-", "1", "1 when the source had no value"
        )
    wide = Console(width=console.width if console.is_terminal else max(console.width, 180))
    wide.print(table)


def _duration(td: dt.timedelta) -> str:
    seconds = int(td.total_seconds())
    return "-" if seconds == 0 else f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m"


@features_app.command("materialize")
def features_materialize(
    as_of: Annotated[
        str | None, typer.Option("--as-of", metavar="YYYY-MM-DD", help="Use the latest snapshot on or before this day.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write the latest ETL snapshot of every entity the feature set reads into the online store."""
    day = _day("--as-of", as_of) if as_of else None
    settings = _settings(config)
    fs = feature_set(settings.features.set, settings.etl, settings.features)
    with make_store(settings) as store:
        done = materialize(fs, Lake(settings.resolved_paths.etl), store, day)
        location = store.location
    table = Table(title=f"materialized {fs.version} into {location}")
    for header in ("entity", "snapshot", "keys", "features"):
        table.add_column(header, justify="right" if header in ("keys", "features") else "left")
    for m in done:
        table.add_row(m.entity, str(m.snapshot), f"{m.keys:,}", str(len(m.columns)))
    console.print(table)


@features_app.command("skew")
def features_skew(
    start: Annotated[str, typer.Option("--start", metavar="YYYY-MM-DD", help="First day of logged impressions.")],
    end: Annotated[str | None, typer.Option("--end", metavar="YYYY-MM-DD", help="Last day (default: --start).")] = None,
    config: ConfigOption = None,
) -> None:
    """Recompute the logged served feature vectors offline and flag features that differ; exit 1 if any is flagged."""
    first = _day("--start", start)
    last = _day("--end", end) if end else first
    settings = _settings(config)
    paths = settings.resolved_paths
    lake = Lake(paths.lake)
    fs = feature_set(settings.features.set, settings.etl, settings.features)
    report = skew(
        lake.read("impressions", first, last),
        fs,
        Lake(paths.etl),
        lake,
        SkewThresholds.from_settings(settings.features),
    )
    table = Table(title=f"train/serve skew, {first} .. {last}, feature set {fs.version}")
    for header in ("feature", "rows", "differing", "PSI", "JS", "mean served", "mean offline", "flag"):
        table.add_column(header, justify="left" if header in ("feature", "flag") else "right")
    for r in sorted(report, key=lambda r: (not r.flagged, -r.mismatch_share)):
        flag = "[bold red]SKEW[/]" if r.flagged else ""
        table.add_row(
            r.feature, f"{r.rows:,}", f"{r.mismatch_share:.2%}", f"{r.psi:.3f}", f"{r.js:.3f}",
            f"{r.mean_served:.4g}", f"{r.mean_offline:.4g}", flag,
        )  # fmt: skip
    console.print(table)
    flagged = [r.feature for r in report if r.flagged]
    if flagged:
        console.print(f"[bold red]SKEW[/] in {len(flagged)} feature(s): {', '.join(flagged)}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]no skew[/] in {len(report)} features")


def _fail(message: str) -> None:
    err_console.print(f"error: {' '.join(message.split())}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and turns user errors into one line and exit code 2."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="homefeed", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except TyperException as exc:  # usage errors: unknown option, a value of the wrong type
        message = exc.format_message()
        if message:  # an empty message is the help text already shown for a bare command
            _fail(message)
        return 2
    except (
        UserError,
        ConfigError,
        PolicyError,
        SchemaError,
        IngestError,
        StoreError,
        FeatureError,
        DatasetError,
    ) as exc:
        _fail(str(exc))
        return 2
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
