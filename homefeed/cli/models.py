"""`homefeed train` and `homefeed models list|show|alias|rollback|compile`: trained rankers and the registry."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from homefeed.cli.common import ConfigOption, UserError, app, console, load_settings, wide_console
from homefeed.train import DatasetStore
from homefeed.train.model import Objective, TrainingData
from homefeed.train.registry import MODEL_KINDS, Registry, check_alias_name, model_class

models_app = typer.Typer(help="The model registry: versions with lineage, aliases, rollback.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _params(pairs: list[str] | None) -> dict:
    """``--param key=value`` pairs; values are read as JSON where they parse (numbers, lists), else as text."""
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--param: {pair!r} is not key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def train(
    model: Annotated[str, typer.Option("--model", "-m", help=f"Model kind: {' | '.join(MODEL_KINDS)}.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="A dataset id (or unique prefix).")],
    negative_weight: Annotated[
        float, typer.Option("--negative-weight", help="λ in score = p(engaged) − λ·p(negative).")
    ] = 1.0,
    position: Annotated[
        str, typer.Option("--position", help="ignore | feature (held at slot 1 when scoring).")
    ] = "feature",
    weights: Annotated[str, typer.Option("--weights", help="dataset | none | ips.")] = "dataset",
    drop_empty_heads: Annotated[
        bool,
        typer.Option(
            "--drop-empty-heads", help="Drop a head whose label never occurs in the train split (λ then ignored)."
        ),
    ] = False,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="A model parameter, key=value.")] = None,
    alias: Annotated[str | None, typer.Option("--alias", help="Point this alias at the new version.")] = None,
    config: ConfigOption = None,
) -> None:
    """Train a ranker on a dataset and register it with its lineage, metrics, size and predict latency."""
    settings = load_settings(config)
    if position not in ("ignore", "feature"):
        raise UserError(f"--position: {position!r} is not one of ignore, feature")
    if weights not in ("dataset", "none", "ips"):
        raise UserError(f"--weights: {weights!r} is not one of dataset, none, ips")
    cls = model_class(model)
    if alias:
        check_alias_name(alias)
    try:  # every parameter is checked here, before the dataset is read or a minute is spent training
        ranker = cls(
            objective=Objective(negative_weight=negative_weight),
            position=position,
            weights=weights,
            **{"drop_empty_heads": drop_empty_heads, **_params(param)},
        )
    except TypeError as exc:
        raise UserError(f"--param: {exc}") from None
    registry = Registry.of(settings)  # a damaged registry is found now, not after training
    data = TrainingData.load(DatasetStore(settings.resolved_paths.datasets), dataset)
    ranker.fit(data)
    v = registry.register(ranker, data)
    if alias:
        registry.alias(alias, v.version, f"trained on dataset {data.dataset_id}")
    console.print(_version_table(registry, v.version))


def _version_table(registry: Registry, ref: str) -> Table:
    v = registry.get(ref)
    table = Table(title=f"model {v.version}" + (f" ({', '.join(v.aliases)})" if v.aliases else ""), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("kind", v.kind),
        ("dataset", str(v.dataset_id)),
        ("feature set", str(v.feature_set)),
        ("code version", v.code_version),
        ("parameters", json.dumps(v.params, sort_keys=True)),
        ("heads", _heads(v.params, v.metrics)),
        ("training", json.dumps(v.metrics, sort_keys=True, default=str)),
        ("size", f"{v.size_bytes / 1024:,.1f} KiB in {len(v.files)} files"),
        ("predict 500 rows", f"p50 {v.predict_p50_ms or 0:.2f} ms, p99 {v.predict_p99_ms or 0:.2f} ms"),
        ("registered", f"{v.registered_at} by {v.registered_by}"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    return table


def _heads(params: dict, training: dict) -> str:
    """The heads a version learned and how they combine; a dropped head with why (a model card's first question)."""
    objective = params.get("objective", {})
    dropped = training.get("dropped_heads", {})
    positive, negative = objective.get("positive", "engaged"), objective.get("negative", "negative")
    if negative in dropped:
        return f"{positive} alone; {negative} dropped: {dropped[negative]}"
    return f"{positive}, {negative}: score = p({positive}) − {objective.get('negative_weight', 1.0):g}·p({negative})"


@models_app.command("list")
def models_list(config: ConfigOption = None) -> None:
    """Every registered version, oldest first, with its aliases."""
    registry = Registry.of(load_settings(config))
    table = Table(title=f"models in {registry.db}")
    for header in ("version", "kind", "dataset", "aliases", "size KiB", "p99 ms (500 rows)", "registered"):
        table.add_column(header)
    for v in registry.versions():
        p99 = f"{v.predict_p99_ms:.2f}" if v.predict_p99_ms is not None else "-"
        table.add_row(
            v.version, v.kind, str(v.dataset_id), ", ".join(v.aliases), f"{v.size_bytes / 1024:,.1f}", p99,
            v.registered_at,
        )  # fmt: skip
    wide_console().print(table)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="A version or an alias.")], config: ConfigOption = None
) -> None:
    """One version's lineage, parameters, training metrics, size and latency."""
    wide_console().print(_version_table(Registry.of(load_settings(config)), ref))


@models_app.command("alias")
def models_alias(
    name: Annotated[str, typer.Argument(help="The alias: production, candidate, any name.")],
    ref: Annotated[str, typer.Argument(help="A version, or another alias to copy.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why: kept in the alias's history.")],
    config: ConfigOption = None,
) -> None:
    """Point an alias at a version, atomically, recording who, when and why."""
    move = Registry.of(load_settings(config)).alias(name, ref, reason)
    console.print(f"{move.alias}: {move.previous or '(new)'} → {move.version}  ({move.moved_by}: {move.reason})")


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="The alias to move back.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why: kept in the alias's history.")],
    config: ConfigOption = None,
) -> None:
    """Move an alias back to the version it pointed at before its last move."""
    move = Registry.of(load_settings(config)).rollback(name, reason)
    console.print(f"{move.alias}: rolled back {move.previous} → {move.version}  ({move.moved_by}: {move.reason})")


@models_app.command("compile")
def models_compile(
    ref: Annotated[str, typer.Argument(help="A version or an alias.")] = "production", config: ConfigOption = None
) -> None:
    """Compile a GBDT's trees to native code for serving, ahead of time (the service then loads them at once)."""
    from homefeed.train.gbdt import GBDTRanker

    settings = load_settings(config)
    registry = Registry.of(settings)
    version = registry.get(ref)
    ranker = registry.load(version.version)
    if not isinstance(ranker, GBDTRanker):
        raise UserError(f"{version.version} is a {ranker.kind} model: only GBDT trees are compiled")
    status = ranker.compile(settings.resolved_paths.compiled)
    for head, outcome in status.items():
        console.print(f"{version.version} {head}: {outcome}")
    if any(v != "compiled" for v in status.values()):
        raise typer.Exit(1)
