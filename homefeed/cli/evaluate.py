"""`homefeed evaluate …`: side-by-side comparisons, ablations and human review of registered models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from homefeed.cli.common import ConfigOption, app, console, load_settings, require_positive, wide_console
from homefeed.evaluate.ablation import DEFAULT_METRICS, ablate, write_report
from homefeed.evaluate.bootstrap import Bootstrap
from homefeed.train import DatasetStore
from homefeed.train.registry import Registry

evaluate_app = typer.Typer(help="Understand models: side-by-side, ablations, human review.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("ablate")
def ablate_command(
    model: Annotated[str, typer.Argument(help="The reference: a model version or alias.")] = "production",
    drop: Annotated[
        list[str] | None,
        typer.Option(
            "--drop",
            help="A feature group: an entity (item, creator, user, user_topic, user_creator, context) or a glob "
            "over feature names ('*_7d'). Repeat to drop several groups together.",
        ),
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help=f"A metric (default: {', '.join(DEFAULT_METRICS)}).")
    ] = None,
    replicates: Annotated[int, typer.Option("--replicates", help="Bootstrap replicates for the intervals.")] = 100,
    register: Annotated[
        bool, typer.Option("--register", help="Register the ablated model (its lineage names the reference).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Retrain a model without a feature group and report each metric's change (without − with) with its CI."""
    require_positive("replicates", replicates)
    settings = load_settings(config)
    paths = settings.resolved_paths
    report = ablate(
        Registry.of(settings),
        DatasetStore(paths.datasets),
        model,
        list(drop or []),
        metric or DEFAULT_METRICS,
        Bootstrap(replicates=replicates, seed=0),
        register=register,
    )
    json_path, html_path = write_report(report, paths.reports)
    groups = " + ".join(report.groups)
    table = Table(
        title=f"ablation: {report.reference} without {groups} "
        f"({len(report.dropped)} of {len(report.dropped) + report.kept} columns, {report.rows:,} test rows)"
    )
    for header in ("metric", "full", f"without {groups}", "delta [95% CI]"):
        table.add_column(header, justify="left" if header == "metric" else "right")
    for name, c in report.overall.items():
        d = c["delta"]
        table.add_row(
            name, f"{c['full']['value']:.4f}", f"{c['ablated']['value']:.4f}",
            f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]",
        )  # fmt: skip
    wide_console().print(table)
    beyond = report.beyond_noise()
    if beyond:
        worse = [
            m
            for m in beyond
            if (report.overall[m]["delta"]["value"] < 0) == report.higher_is_better[m]  # the ablated model is worse
        ]
        better = [m for m in beyond if m not in worse]
        parts = []
        if worse:
            parts.append(f"worse without the group: {', '.join(worse)}")
        if better:
            parts.append(f"better without it: {', '.join(better)}")
        console.print(f"beyond noise (the 95% CI excludes 0): {'; '.join(parts)}", soft_wrap=True, highlight=False)
    else:
        console.print("no delta is beyond noise: every 95% CI contains 0", highlight=False)
    seconds = report.training_seconds
    full = f"{seconds['full']:.1f} s" if seconds["full"] is not None else "unknown"
    console.print(
        f"dropped: {', '.join(report.dropped)}\ntraining: {seconds['ablated']:.1f} s without the group "
        f"(the reference took {full})" + (f"; registered as {report.registered}" if report.registered else ""),
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"report: {html_path} and {json_path.name}", soft_wrap=True)
