"""`homefeed evaluate …`: side-by-side comparisons, ablations and human review of registered models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from homefeed.cli.common import ConfigOption, app, console, load_settings, require_positive, wide_console
from homefeed.evaluate.bootstrap import Bootstrap
from homefeed.evaluate.side_by_side import (
    SLATE_SIZE,
    SideBySide,
    contribution_text,
    label_text,
    side_by_side,
    write_html,
)
from homefeed.train import DatasetStore
from homefeed.train.registry import Registry

evaluate_app = typer.Typer(help="Understand models: side-by-side, ablations, human review.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


def _print(report: SideBySide) -> None:
    g = report.agreement
    summary = Table(title=f"side-by-side: {report.a} (A) vs {report.b} (B), {g.requests:,} requests, depth {g.depth}")
    for header in ("measure", "value", "95% CI"):
        summary.add_column(header, justify="left" if header == "measure" else "right")
    for name, e in (
        (f"rank-biased overlap (p = {g.p})", g.rbo),
        ("top slot changed", g.top_slot_changed),
        ("mean |rank A − rank B|", g.mean_rank_shift),
    ):
        summary.add_row(name, f"{e.value:.4f}", f"[{e.low:.4f}, {e.high:.4f}]")
    console.print(summary)
    for r in report.requests:
        table = Table(
            title=f"request {r.request_id} (user {r.user_id}, {r.candidates} candidates): RBO {r.rbo:.3f}; "
            "change = rank A − rank B; contributions in log-odds"
        )
        for side in (report.a, report.b):
            for header in ("#", f"{side} item", "score", "change", "labels", "top contributions"):
                table.add_column(header, justify="left" if header in ("labels", "top contributions") else "right")
        for x, y in zip(r.slate_a, r.slate_b, strict=True):
            cells = []
            for item, rank, score, top in ((x, x.rank_a, x.score_a, x.top_a), (y, y.rank_b, y.score_b, y.top_b)):
                cells += [
                    str(rank), str(item.item_id), f"{score:.4f}", f"{item.rank_change:+d}", label_text(item),
                    "\n".join(contribution_text(c) for c in top),
                ]  # fmt: skip
            table.add_row(*cells)
        wide_console(200).print(table)


@evaluate_app.command("side-by-side")
def side_by_side_command(
    a: Annotated[str, typer.Argument(help="Model A: a version or alias.")] = "production",
    b: Annotated[str, typer.Argument(help="Model B: a version or alias; its dataset's test split is used.")] = (
        "candidate"
    ),
    request: Annotated[str | None, typer.Option("--request", help="Show this request.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Show this user's latest request(s).")] = None,
    requests: Annotated[
        int, typer.Option("--requests", help="How many requests to show (default: the one where A and B differ most).")
    ] = 1,
    depth: Annotated[int, typer.Option("--depth", help="Slate size: the items shown and RBO's depth.")] = SLATE_SIZE,
    top: Annotated[int, typer.Option("--top", help="Input contributions shown per item and model.")] = 3,
    replicates: Annotated[int, typer.Option("--replicates", help="Bootstrap replicates for the intervals.")] = 200,
    config: ConfigOption = None,
) -> None:
    """Two models' slates next to each other, with scores, rank changes and why; agreement over every request."""
    for name, value in (("requests", requests), ("depth", depth)):
        require_positive(name, value)
    settings = load_settings(config)
    paths = settings.resolved_paths
    report = side_by_side(
        Registry.of(settings), DatasetStore(paths.datasets), a, b, request, user, requests, depth, top,
        Bootstrap(replicates=replicates, seed=0),
    )  # fmt: skip
    _print(report)
    path = write_html(report, paths.reports)
    console.print(f"report: {path} ({report.seconds:.1f} s)", soft_wrap=True)
