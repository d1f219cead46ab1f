"""What every command shares: the app, the consoles, the config option, and how user mistakes are reported."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from homefeed import config as config_mod
from homefeed.config import Settings

app = typer.Typer(help="homefeed: build, ship and run a personalized home feed.", no_args_is_help=True)

OPEN_BANDIT = "open-bandit"
console = Console(width=max(Console().width, 100))  # tables stay readable in CI logs and pipes
err_console = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Project file (default: ./homefeed.toml).")]


class UserError(Exception):
    """A mistake in what the user asked for; reported in one line."""


def load_settings(config: Path | None, **sim_overrides: object) -> Settings:
    settings = config_mod.load(config)
    overrides = {k: v for k, v in sim_overrides.items() if v is not None}
    if overrides:
        data = settings.model_dump()
        data["sim"].update(overrides)
        settings = config_mod.parse(data, source=str(config or "settings"), base_dir=settings.base_dir)
    return settings


def require_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"--{name} must be a positive whole number, got {value}")


def parse_day(option: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: {value!r} is not a date (YYYY-MM-DD)") from None


def wide_console(width: int = 160) -> Console:
    """For wide tables: outside a terminal (CI logs, pipes) they get room instead of wrapping."""
    return Console(width=console.width if console.is_terminal else max(console.width, width))


def fail(message: str) -> None:
    err_console.print(f"error: {' '.join(message.split())}", markup=False, highlight=False, soft_wrap=True)
