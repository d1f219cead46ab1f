"""`homefeed evaluate …`: side-by-side comparisons, ablations and human review of registered models."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from homefeed.cli.common import (
    ConfigOption,
    app,
    console,
    load_settings,
    print_comparison,
    require_positive,
    styled,
    wide_console,
)
from homefeed.evaluate.ablation import DEFAULT_METRICS, AblationReport, ablate, ablate_each, write_report
from homefeed.evaluate.bootstrap import Bootstrap
from homefeed.evaluate.human_review import KEY_FILE, TASKS_CSV, TASKS_JSON, export_tasks, import_ratings, win_rate
from homefeed.evaluate.metrics import MAX_K
from homefeed.evaluate.pages import interval
from homefeed.evaluate.review import score_pair
from homefeed.evaluate.side_by_side import (
    SLATE_SIZE,
    SideBySide,
    contribution_text,
    label_text,
    side_by_side,
    write_html,
)
from homefeed.files import atomic_write_text
from homefeed.train import DatasetStore
from homefeed.train.registry import Registry

evaluate_app = typer.Typer(help="Understand models: side-by-side, ablations, human review.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


human_app = typer.Typer(
    help="Human review: two models' slates as blind rating tasks, and the win rate.", no_args_is_help=True
)
evaluate_app.add_typer(human_app, name="human-review")


@human_app.command("export")
def human_review_export(
    b: Annotated[str, typer.Argument(help="The model being judged: a version or alias.")] = "candidate",
    a: Annotated[str, typer.Option("--against", help="What it is judged against.")] = "production",
    tasks: Annotated[int, typer.Option("--tasks", help="How many requests to turn into tasks.")] = 100,
    depth: Annotated[int, typer.Option("--depth", help="Items per slate.")] = SLATE_SIZE,
    seed: Annotated[int, typer.Option("--seed", help="Which requests, and which side each model is on.")] = 0,
    include_identical: Annotated[
        bool, typer.Option("--include-identical", help="Also requests where both slates are the same.")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for tasks.json, tasks.csv and key.json.")] = None,
    config: ConfigOption = None,
) -> None:
    """Write blind rating tasks: for sampled test requests, both models' slates as left/right in random order."""
    require_positive("tasks", tasks)
    require_positive("depth", depth, at_most=MAX_K)
    settings = load_settings(config)
    paths = settings.resolved_paths
    pair = score_pair(Registry.of(settings), DatasetStore(paths.datasets), b, a)
    names = (pair.baseline.version, pair.candidate.version)
    directory = out or paths.reports / f"rating-{names[1]}-vs-{names[0]}"
    written = export_tasks(
        pair.baseline_scores["ranking"], pair.candidate_scores["ranking"], names, directory, tasks, depth, seed,
        include_identical,
    )  # fmt: skip
    console.print(f"{len(written)} rating tasks ({names[1]} vs {names[0]}, blind) in {directory}", soft_wrap=True)
    console.print(f"give raters {TASKS_CSV} or {TASKS_JSON}; keep {KEY_FILE} from them", soft_wrap=True)


@human_app.command("import")
def human_review_import(
    directory: Annotated[Path, typer.Argument(help="The folder `human-review export` wrote.")],
    ratings: Annotated[Path, typer.Argument(help="Ratings: CSV or JSON rows of task_id, rater, preference.")],
    replicates: Annotated[int, typer.Option("--replicates", help="Bootstrap replicates for the interval.")] = 1000,
    config: ConfigOption = None,
) -> None:
    """Unblind ratings with the export's key and report the judged model's win rate with a 95% interval."""
    require_positive("replicates", replicates)
    load_settings(config)  # a broken project file is reported here as everywhere else
    result = import_ratings(directory, ratings)
    if result.rejected:
        rejected = directory / f"rejected-{ratings.stem}.json"
        atomic_write_text(rejected, json.dumps(result.rejected, indent=1, default=str))
        first = result.rejected[0]["reason"]
        console.print(
            styled(
                (f"{len(result.rejected)} rating row(s) set aside", "yellow"),
                f" (first: {first}); all with reasons in {rejected}",
            ),
            soft_wrap=True,
        )
    report = win_rate(result, result.a, result.b, Bootstrap(replicates=replicates, seed=0))
    atomic_write_text(directory / f"win-rate-{ratings.stem}.json", json.dumps(asdict(report), indent=1))
    w = report.win_rate_b
    console.print(
        f"{report.b} vs {report.a}: {report.ratings} ratings of {report.tasks} tasks: "
        f"{report.wins_b} wins, {report.wins_a} losses, {report.ties} ties"
    )
    console.print(f"win rate of {report.b} (a tie is half): {w.value:.3f} [95% CI {w.low:.3f}, {w.high:.3f}]")
    if report.rater_agreement is not None:
        console.print(f"raters of the same task agree {report.rater_agreement:.0%} of the time")


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
    each: Annotated[
        bool,
        typer.Option("--each", help="One retraining per group (default: every entity group), in one table."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Retrain a model without a feature group and report each metric's change (without − with) with its CI."""
    require_positive("replicates", replicates)
    settings = load_settings(config)
    paths = settings.resolved_paths
    registry, datasets = Registry.of(settings), DatasetStore(paths.datasets)
    boot = Bootstrap(replicates=replicates, seed=0)
    if each:
        reports = ablate_each(registry, datasets, model, list(drop or []), metric or DEFAULT_METRICS, boot)
        for report in reports:
            write_report(report, paths.reports)
        _print_each(reports)
        console.print(f"reports: {paths.reports}/ablation-{reports[0].reference}-without-<group>.html", soft_wrap=True)
        return
    report = ablate(registry, datasets, model, list(drop or []), metric or DEFAULT_METRICS, boot, register=register)
    json_path, html_path = write_report(report, paths.reports)
    groups = " + ".join(report.groups)
    print_comparison(
        f"ablation: {report.reference} without {groups} "
        f"({len(report.dropped)} of {len(report.dropped) + report.kept} columns, {report.rows:,} test rows)",
        report.overall,
        ("full", "ablated", "delta"),
        ("full", f"without {groups}"),
    )
    worse, better = report.worse_and_better()
    if worse or better:
        parts = [f"worse without the group: {', '.join(worse)}"] if worse else []
        parts += [f"better without it: {', '.join(better)}"] if better else []
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


def _print_each(reports: list[AblationReport]) -> None:
    """One row per group: its size, then each metric's delta with its interval, * where beyond noise."""
    first = reports[0]
    table = Table(title=f"ablations of {first.reference}, one group at a time ({first.rows:,} test rows)")
    table.add_column("without", justify="left")
    table.add_column("columns", justify="right")
    for name in first.overall:
        table.add_column(f"Δ {name} [95% CI]", justify="right")
    for r in reports:
        worse, better = r.worse_and_better()
        cells = [
            f"{interval(c['delta'])}{' worse' if m in worse else ' better' if m in better else ''}"
            for m, c in r.overall.items()
        ]
        table.add_row(" + ".join(r.groups), str(len(r.dropped)), *cells)
    wide_console(200).print(table)
    console.print("worse / better: beyond noise (the 95% CI excludes 0); Δ = without − with", highlight=False)


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
    require_positive("requests", requests)
    require_positive("replicates", replicates, zero=True)  # 0: the agreement without intervals
    require_positive("depth", depth, at_most=MAX_K)
    settings = load_settings(config)
    paths = settings.resolved_paths
    report = side_by_side(
        Registry.of(settings), DatasetStore(paths.datasets), a, b, request, user, requests, depth, top,
        Bootstrap(replicates=replicates, seed=0),
    )  # fmt: skip
    _print(report)
    path = write_html(report, paths.reports)
    console.print(f"report: {path} ({report.seconds:.1f} s)", soft_wrap=True)
