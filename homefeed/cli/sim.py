"""`homefeed init`, `homefeed sim run` and `homefeed demo`: the project file and the simulated world."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from homefeed import config as config_mod
from homefeed.cli.common import (
    ConfigOption,
    UserError,
    app,
    console,
    err_console,
    load_settings,
    require_positive,
    styled,
)
from homefeed.cli.launch import review_and_report
from homefeed.cli.serve import served_demo
from homefeed.config import Settings
from homefeed.files import ensure_replaceable
from homefeed.pipeline.demo import train_on_logs
from homefeed.sim import BASELINES, SimulationResult, make_baseline
from homefeed.sim.simulation import LOG_TABLES, compare_policies
from homefeed.train.registry import Registry

sim_app = typer.Typer(help="The simulated world.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")


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
        TextColumn("{task.description:<14}", style="bold", markup=False),
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
    require_positive("days", days)
    require_positive("users", users)
    settings = load_settings(config, users=users, seed=seed)
    feed_policy = make_baseline(policy, seed=settings.sim.seed, max_age_days=settings.sim.item_lifetime_days)
    out_dir = out or settings.resolved_paths.sim_logs / policy
    results = _run_with_progress(settings, [feed_policy], days, {policy: out_dir})
    console.print(_outcome_table(results, f"{days} days, {settings.sim.users:,} users"))
    console.print(f"logs written to {out_dir}")


@app.command()
def demo(
    days: Annotated[int, typer.Option(help="Days to simulate per policy.")] = 14,
    users: Annotated[int | None, typer.Option(help="Users in the world (default: from config).")] = None,
    train: Annotated[bool, typer.Option("--train/--no-train", help="Then train and register both rankers.")] = True,
    serve_days: Annotated[
        int, typer.Option(help="Then serve the production model this many more days beside each baseline (0: skip).")
    ] = 4,
    config: ConfigOption = None,
) -> None:
    """Run the loop on the simulated world: every baseline side by side, then a dataset and both rankers.

    The random policy's logs (exploration traffic: every slot placed at random) go through ingestion, the ETL
    and the dataset builder; a GBDT and a neural ranker are trained on them and registered as ``production``
    and ``candidate``, and the candidate gets a launch review against production.
    """
    require_positive("days", days)
    require_positive("users", users)
    if serve_days < 0:
        raise UserError(f"--serve-days must be 0 or more, got {serve_days}")
    settings = load_settings(config, users=users)
    s = settings.sim
    policies = [make_baseline(name, seed=s.seed, max_age_days=s.item_lifetime_days) for name in BASELINES]
    root = settings.resolved_paths.sim_logs
    console.print(
        styled(("homefeed demo", "bold"), f": {days} days of a simulated feed, {s.users:,} users, seed {s.seed}")
    )
    results = _run_with_progress(settings, policies, days, {p.name: root / p.name for p in policies})
    console.print(_outcome_table(results, "Baseline policies on the same world"))
    console.print(f"logs written under {root}")
    if train:
        _train_demo(settings, root / "random")
        if serve_days > 0:
            served_demo(settings, days, serve_days)


def _train_demo(settings: Settings, logs: Path) -> None:
    trained = train_on_logs(settings, logs, on_step=lambda name: console.print(f"… {name}", style="dim"))
    registry = Registry.of(settings)
    splits = ", ".join(f"{n} {r:,}" for n, r in trained.rows.items())
    console.print(f"ingested {trained.events:,} events; dataset {trained.dataset_id}: {splits} rows")
    table = Table(
        title="Rankers trained on the random policy's logs (exploration traffic), registered",
        caption="valid AUC: on the validation split, of each head's probability at the slot the outcome was logged at",
    )
    for header in ("version", "alias", "valid AUC engaged", "valid AUC negative", "train s", "p99 ms / 500 rows"):
        table.add_column(header)
    for kind, registered in trained.versions.items():
        v = registry.get(registered.version)  # with the aliases set after registration
        table.add_row(
            v.version, ", ".join(v.aliases), _auc(v.metrics, "engaged"), _auc(v.metrics, "negative"),
            f"{trained.seconds.get(f'train {kind}', 0):.1f}", f"{v.predict_p99_ms or 0:.2f}",
        )  # fmt: skip
    console.print(table)
    timings = ", ".join(f"{k} {s:.1f} s" for k, s in trained.seconds.items())
    console.print(f"steps: {timings}; `homefeed models list` shows the registry")
    if {"gbdt", "nn"} <= set(trained.versions):
        review_and_report(settings, "candidate", "production", None, replicates=100)
        console.print(
            "next: `homefeed evaluate side-by-side` (where the two rankers differ, and why), "
            "`homefeed evaluate ablate --drop user_topic` (what a feature group is worth), "
            "`homefeed evaluate human-review export` (blind rating tasks)",
            soft_wrap=True,
        )


def _auc(training: dict, head: str) -> str:
    """The head's validation AUC as the model recorded it in its training metrics."""
    value = training.get("heads", {}).get(head, {}).get("validation_auc")
    return f"{value:.3f}" if isinstance(value, float) else "-"
