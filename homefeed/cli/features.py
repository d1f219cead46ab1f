"""`homefeed features list|materialize|skew`: definitions, the online store, train/serve skew."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from homefeed.cli.common import ConfigOption, app, console, load_settings, parse_day, styled, wide_console
from homefeed.data.etl import snapshot_lake
from homefeed.data.lake import Lake
from homefeed.features.definitions import CATEGORY, feature_set
from homefeed.features.materialize import materialize
from homefeed.features.online import make_store
from homefeed.features.skew import SkewThresholds, skew

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
    settings = load_settings(config)
    fs = feature_set("all" if everything else (set_name or settings.features.set), settings.etl, settings.features)
    table = Table(title=f"feature set {fs.version}: {len(fs.features)} features + {len(fs.flags)} missing flags")
    for header in ("feature", "entity", "source", "type", "default", "lag", "ttl", "v"):
        table.add_column(header, no_wrap=True)
    table.add_column("description", ratio=1)
    for f in fs.features:
        table.add_row(
            f.name, f.entity, f.source, f.dtype, "null" if f.dtype == CATEGORY else f"{f.default:g}",
            _duration(f.lag), _duration(f.ttl), str(f.version),
            f.description,
        )  # fmt: skip
    for flag in fs.flags:
        table.add_row(
            flag, flag.removesuffix("_missing"), "-", "int8", "-", "-", "-", "1", "1 when the source had no value"
        )
    wide_console(180).print(table)


def _duration(td: dt.timedelta) -> str:
    seconds = int(td.total_seconds())
    return "-" if seconds == 0 else f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m"


@features_app.command("materialize")
def features_materialize(
    as_of: Annotated[
        str | None, typer.Option("--as-of", metavar="YYYY-MM-DD", help="Use the latest snapshot on or before this day.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Load a snapshot even if it is empty or much smaller than what the store holds."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Write the latest ETL snapshot of every entity the feature set reads into the online store."""
    day = parse_day("--as-of", as_of) if as_of else None
    settings = load_settings(config)
    fs = feature_set(settings.features.set, settings.etl, settings.features)
    etl = snapshot_lake(settings.resolved_paths.etl)
    with make_store(settings) as store:
        done = materialize(fs, etl, store, day, force=force, min_share=settings.features.materialize_min_share)
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
    first = parse_day("--start", start)
    last = parse_day("--end", end) if end else first
    settings = load_settings(config)
    paths = settings.resolved_paths
    lake = Lake(paths.lake)
    fs = feature_set(settings.features.set, settings.etl, settings.features)
    report = skew(
        lake.read("impressions", first, last),
        fs,
        snapshot_lake(paths.etl),
        lake,
        SkewThresholds.from_settings(settings.features),
    )
    table = Table(title=f"train/serve skew, {first} .. {last}, feature set {fs.version}")
    for header in ("feature", "rows", "differing", "PSI", "JS", "mean served", "mean offline", "flag"):
        table.add_column(header, justify="left" if header in ("feature", "flag") else "right")
    for r in sorted(report, key=lambda r: (not r.flagged, -r.mismatch_share)):
        flag = styled(("SKEW", "bold red")) if r.flagged else ""
        table.add_row(
            r.feature, f"{r.rows:,}", f"{r.mismatch_share:.2%}", f"{r.psi:.3f}", f"{r.js:.3f}",
            f"{r.mean_served:.4g}", f"{r.mean_offline:.4g}", flag,
        )  # fmt: skip
    console.print(table)
    flagged = [r.feature for r in report if r.flagged]
    if flagged:
        console.print(
            styled(("SKEW", "bold red"), f" in {len(flagged)} feature(s): {', '.join(flagged)}"), soft_wrap=True
        )
        raise typer.Exit(1)
    console.print(styled(("no skew", "green"), f" in {len(report)} features"))
