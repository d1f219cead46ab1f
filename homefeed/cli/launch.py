"""`homefeed launch review`: a candidate against production, judged by the launch gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from homefeed.cli.common import ConfigOption, app, console, load_settings, print_comparison, require_positive, styled
from homefeed.config import Settings
from homefeed.evaluate.bootstrap import Bootstrap
from homefeed.evaluate.review import LaunchReport, launch_review, load_gates, write_report
from homefeed.train import DatasetStore
from homefeed.train.registry import Registry

launch_app = typer.Typer(help="Launch reviews: does a candidate deserve live traffic?", no_args_is_help=True)
app.add_typer(launch_app, name="launch")


def review_and_report(
    settings: Settings, candidate: str, against: str, gates: Path | None, replicates: int
) -> tuple[LaunchReport, Path, Path]:
    """Run the review, write its JSON and HTML, print the verdict: shared by this command and the demo."""
    paths = settings.resolved_paths
    report = launch_review(
        Registry.of(settings),
        DatasetStore(paths.datasets),
        candidate,
        load_gates(gates),
        against,
        Bootstrap(replicates=replicates, seed=0),
    )
    json_path, html_path = write_report(report, paths.reports)
    print_comparison(
        f"launch review: {report.candidate} vs {report.production} ({report.rows:,} test rows)",
        report.overall,
        ("production", "candidate", "difference"),
        (report.production, report.candidate),
    )
    verdict = ("SHIP", "bold green") if report.verdict.ship else ("NO SHIP", "bold red")
    held, broken = len(report.verdict.passed), len(report.verdict.reasons)
    console.print(styled(verdict, f": {held} rule(s) held, {broken} broken"))
    for reason in report.verdict.reasons:
        console.print(styled("  ", ("✗", "red"), f" {reason}"), soft_wrap=True, highlight=False)
    console.print(f"report: {html_path} and {json_path.name}", soft_wrap=True)
    return report, json_path, html_path


@launch_app.command("review")
def launch_review_command(
    candidate: Annotated[str, typer.Argument(help="A model version or alias.")],
    against: Annotated[str, typer.Option("--against", help="What it must beat.")] = "production",
    gates: Annotated[
        Path | None, typer.Option("--gates", help="Gate file (TOML: [[goals]], [[guardrails]], [budgets]).")
    ] = None,
    replicates: Annotated[int, typer.Option("--replicates", help="Bootstrap replicates for the intervals.")] = 100,
    config: ConfigOption = None,
) -> None:
    """Compare a candidate with production on its held-out days; exit 0 to ship, 1 not to."""
    require_positive("replicates", replicates)  # not 0: every rule is judged on an interval
    report, _, _ = review_and_report(load_settings(config), candidate, against, gates, replicates)
    if not report.verdict.ship:
        raise typer.Exit(1)
