"""`homefeed dataset build|list|show|diff`: versioned training sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from homefeed.cli.common import (
    ConfigOption,
    app,
    console,
    err_console,
    load_settings,
    parse_day,
    styled,
    wide_console,
)
from homefeed.config import DatasetSampling
from homefeed.train import SPLITS, DatasetStore, build_dataset, load_spec
from homefeed.train import diff as diff_datasets

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
    first = parse_day("--start", start) if start else None
    last = parse_day("--end", end) if end else None
    settings = load_settings(config)
    built = build_dataset(load_spec(settings, spec, first, last), settings, force=force)
    wide_console().print(_splits_table(built.manifest))
    _print_problems(built.manifest)
    if built.reused:
        console.print(f"dataset {built.id} already built at {built.path} (--force rebuilds it)", highlight=False)
    else:
        seconds = built.manifest["seconds"]
        console.print(f"dataset {built.id} written to {built.path} in {seconds:.1f} s", highlight=False)


@dataset_app.command("list")
def dataset_list(config: ConfigOption = None) -> None:
    """The datasets built so far, oldest first."""
    store = DatasetStore(load_settings(config).resolved_paths.datasets)
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
    wide_console().print(table)


@dataset_app.command("show")
def dataset_show(
    dataset: Annotated[str, typer.Argument(metavar="ID", help="A dataset id, or a unique prefix of one.")],
    config: ConfigOption = None,
) -> None:
    """A dataset's manifest: spec, splits, labels, weights, feature statistics, violations."""
    m = DatasetStore(load_settings(config).resolved_paths.datasets).load(dataset)
    spec = m["spec"]
    console.print(styled((f"dataset {m['id']}", "bold"), f", built {m['created_at']} (homefeed {m.get('homefeed')})"))
    console.print(
        f"impressions {spec['start']} to {spec['end']}; labels {', '.join(spec['labels'])}; feature set "
        f"{m['feature_set']['version']} ({len(m['feature_set']['columns'])} columns); {len(m['inputs'])} input files",
        highlight=False,
        soft_wrap=True,
    )
    plain = DatasetSampling().model_dump()
    sampling = ", ".join(f"{k} = {v}" for k, v in spec["sampling"].items() if v != plain[k]) or "none (weights 1)"
    console.print(f"sampling: {sampling}; seed {spec['seed']}", highlight=False)
    wide_console().print(_splits_table(m))
    features = Table(title="features over all rows, unweighted (missing: the source had no fresh value)")
    for header in ("feature", "missing", "nulls", "mean", "std", "min", "max"):
        features.add_column(header, justify="left" if header == "feature" else "right")
    for name in [c for c in m["feature_set"]["columns"] if c in m["stats"]["all"]["features"]]:
        st = m["stats"]["all"]["features"][name]
        missing = "-" if st["missing_rate"] is None else f"{st['missing_rate']:.1%}"
        cells = [_num(st[k]) for k in ("mean", "std", "min", "max")]
        features.add_row(name, missing, f"{st['null_rate']:.1%}", *cells)
    wide_console().print(features)
    _print_problems(m)


@dataset_app.command("diff")
def dataset_diff(
    a: Annotated[str, typer.Argument(metavar="ID1", help="The dataset to compare from.")],
    b: Annotated[str, typer.Argument(metavar="ID2", help="The dataset to compare to.")],
    config: ConfigOption = None,
) -> None:
    """What changed between two datasets: spec, inputs, rows and labels, features, and per-feature shifts."""
    store = DatasetStore(load_settings(config).resolved_paths.datasets)
    d = diff_datasets(store.load(a), store.load(b))
    console.print(styled((d.a, "bold"), " → ", (d.b, "bold")))
    if d.spec:
        spec = Table(title="spec")
        for header in ("key", d.a, d.b):
            spec.add_column(header)
        for key, x, y in d.spec:
            spec.add_row(key, str(x), str(y))
        wide_console().print(spec)
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
    wide_console().print(splits)
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
    wide_console().print(shifts)


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


def _print_problems(m: dict, limit: int = 20) -> None:
    for warning in m["warnings"]:
        err_console.print(styled(("warning", "yellow"), f": {warning}"), highlight=False, soft_wrap=True)
    for v in m["violations"][:limit]:
        err_console.print(
            styled(("violation", "red"), f" ({v['split']}): {v['message']}"), highlight=False, soft_wrap=True
        )
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
