"""`homefeed init`, `homefeed sim run`, `homefeed sim card` and `homefeed demo`: the project file and the world."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
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
    wide_console,
)
from homefeed.cli.launch import review_and_report
from homefeed.cli.serve import served_demo
from homefeed.config import Settings
from homefeed.files import ensure_replaceable
from homefeed.pipeline.demo import train_on_logs
from homefeed.sim import BASELINES, OraclePolicy, SimulationResult, explore_policy, make_baseline
from homefeed.sim.baselines import EXPLORING
from homefeed.sim.card import POLICIES as CARD_POLICIES
from homefeed.sim.card import Fact, world_card
from homefeed.sim.simulation import LOG_TABLES, PolicyOrMaker, compare_policies
from homefeed.train.registry import Registry

sim_app = typer.Typer(help="The simulated world.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")


#: Policies `sim run` and the demo know by name: the baselines, popular with exploration, and the oracle.
POLICY_NAMES = (*BASELINES, EXPLORING, "oracle")


def policy_maker(name: str, settings: Settings) -> PolicyOrMaker:
    """A policy by name (the oracle is made from the simulation it will read); unknown names list the choices."""
    s = settings.sim
    if name == "oracle":
        return lambda sim: OraclePolicy(sim, s.card.oracle_candidates, s.seed, s.item_lifetime_days)
    if name not in POLICY_NAMES:
        raise UserError(f"unknown policy {name!r}; choose one of: {', '.join(POLICY_NAMES)}")
    return make_baseline(name, seed=s.seed, max_age_days=s.item_lifetime_days)


def explore_maker(name: str, settings: Settings) -> Callable[[], object] | None:
    """What serves the explore surface: ``random`` (uniform, exact propensities) or ``same`` (the home policy)."""
    if name == "same":
        return None
    if name != "random":
        raise UserError(f"unknown explore policy {name!r}; choose random or same")
    s = settings.sim
    return lambda: explore_policy(s.seed, s.item_lifetime_days)


def _run_with_progress(
    settings: Settings,
    policies: list[tuple[str, PolicyOrMaker]],
    days: int,
    out_dirs: dict[str, Path],
    explore: Callable[[], object] | None,
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
        tasks = {name: progress.add_task(name, total=days) for name, _ in policies}
        return compare_policies(
            settings.sim, [p for _, p in policies], days, out_dirs,
            on_day=lambda name, _: progress.advance(tasks[name]), explore=explore,
        )  # fmt: skip


def _outcome_table(results: list[SimulationResult], title: str) -> Table:
    table = Table(
        title=title,
        caption="per user-day: per active user per day (both surfaces); return: visits again the next day; "
        "churned: users who left for good",
    )
    columns = [
        ("policy", None),
        ("user-days", "user_days"),
        ("impr.", "impressions_per_user_day"),
        ("closeups", "closeups_per_user_day"),
        ("clicks", "clicks_per_user_day"),
        ("saves", "saves_per_user_day"),
        ("hides", "hides_per_user_day"),
        ("return", "return_rate"),
        ("fresh", "fresh_share"),
        ("unsafe", "unsafe_share"),
        ("churned", "churned"),
    ]
    for header, _ in columns:
        table.add_column(header, justify="left" if header == "policy" else "right")
    for result in results:
        summary = result.summary()
        cells = [result.policy]
        for _, key in columns[1:]:
            value = summary[key]
            if key in ("user_days", "churned"):
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
    policy: Annotated[str, typer.Option(help=f"Feed policy: {', '.join(POLICY_NAMES)}.")] = "random",
    explore_policy: Annotated[
        str, typer.Option(help="What serves the explore surface: random (exact propensities) or same (POLICY).")
    ] = "random",
    out: Annotated[Path | None, typer.Option(help="Directory for the logs (default: paths.sim_logs/POLICY).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: from config).")] = None,
    config: ConfigOption = None,
) -> None:
    """Simulate DAYS days of feeds served by POLICY and write the logs as Parquet partitioned by date."""
    require_positive("days", days)
    require_positive("users", users)
    settings = load_settings(config, users=users, seed=seed)
    maker = policy_maker(policy, settings)
    out_dir = out or settings.resolved_paths.sim_logs / policy
    results = _run_with_progress(
        settings, [(policy, maker)], days, {policy: out_dir}, explore_maker(explore_policy, settings)
    )
    wide_console().print(_outcome_table(results, f"{days} days, {settings.sim.users:,} users"))
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
    """Run the loop on the simulated world: every baseline and the oracle side by side, then both rankers.

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
    names = (*BASELINES, "oracle")
    policies = [(name, policy_maker(name, settings)) for name in names]
    root = settings.resolved_paths.sim_logs
    console.print(
        styled(("homefeed demo", "bold"), f": {days} days of a simulated feed, {s.users:,} users, seed {s.seed}")
    )
    explore = explore_maker("random", settings)
    results = _run_with_progress(settings, policies, days, {name: root / name for name in names}, explore)
    wide_console().print(_outcome_table(results, "Baseline policies on the same world"))
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


@sim_app.command("card")
def sim_card(
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
    seeds: Annotated[int | None, typer.Option(help="Seeds to run (default: sim.card.seeds).")] = None,
    users: Annotated[int | None, typer.Option(help="Users per world (default: sim.card.users).")] = None,
    days: Annotated[int | None, typer.Option(help="Days per run (default: sim.card.days).")] = None,
    config: ConfigOption = None,
) -> None:
    """The world card: each stylized fact the world must reproduce, its value over several seeds, its band.

    Exit code 1 when a fact does not hold (a verdict, like a launch review's no ship).
    """
    require_positive("seeds", seeds)
    require_positive("users", users)
    require_positive("days", days)
    settings = load_settings(config)
    c = settings.sim.card
    n_seeds, n_days = seeds or c.seeds, days or c.days
    if n_days < 14:
        raise UserError(f"--days must be at least 14 (CUPED's 7-day pre-period and period), got {n_days}")
    runs = n_seeds * len(CARD_POLICIES)
    with Progress(
        TextColumn("[bold]world card"), BarColumn(), MofNCompleteColumn(), TextColumn("policy-days"),
        TimeElapsedColumn(), console=err_console, disable=as_json,
    ) as progress:  # fmt: skip
        task = progress.add_task("card", total=runs * n_days)
        card = world_card(settings.sim, n_seeds, users, n_days, on_day=lambda *_: progress.advance(task))
    if as_json:
        print(json.dumps({"facts": [f.as_dict() for f in card], "holds": all(f.holds for f in card)}, indent=2))
    else:
        wide_console().print(
            card_table(card, f"World card: {n_seeds} seeds, {users or c.users:,} users, {n_days} days")
        )
    if not all(f.holds for f in card):
        raise typer.Exit(1)


def card_table(card: list[Fact], title: str) -> Table:
    table = Table(
        title=title,
        caption="value: mean over seeds (pooled: one statistic over every seed's runs); "
        "holds: every seed's value is in the band",
    )
    for header in ("fact", "value", "seeds", "band", "holds"):
        table.add_column(header, justify="left" if header in ("fact", "holds") else "right")
    for fact in card:
        table.add_row(
            fact.statement, _number(fact.value, fact.unit), "pooled" if fact.pooled else
            f"{_number(min(fact.values), fact.unit)} .. {_number(max(fact.values), fact.unit)}",
            f"[{_number(fact.band[0], fact.unit)}, "
            f"{_number(fact.band[1], fact.unit)}]", "yes" if fact.holds else "[red]NO[/red]",
        )  # fmt: skip
    return table


def _number(value: float, unit: str) -> str:
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:+.1%}" if unit == "%" else f"{value:.3g}"
