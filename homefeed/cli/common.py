"""What every command shares: the app, the consoles, the config option, and how user mistakes are reported."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from homefeed import config as config_mod
from homefeed.config import Settings
from homefeed.errors import HomefeedError

app = typer.Typer(help="homefeed: build, ship and run a personalized home feed.", no_args_is_help=True)

OPEN_BANDIT = "open-bandit"
# Markup off: data is printed as text, never parsed as markup (a country "US[/bold]" once crashed a report's
# printing); what is styled on purpose says so with `styled`.
console = Console(width=max(Console().width, 100), markup=False)  # tables stay readable in CI logs and pipes
err_console = Console(stderr=True, markup=False)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Project file (default: ./homefeed.toml).")]


class UserError(HomefeedError):
    """A mistake in what the user asked for; reported in one line."""


def load_settings(config: Path | None, **sim_overrides: object) -> Settings:
    settings = config_mod.load(config)
    overrides = {k: v for k, v in sim_overrides.items() if v is not None}
    if overrides:
        data = settings.model_dump()
        data["sim"].update(overrides)
        settings = config_mod.parse(data, source=str(config or "settings"), base_dir=settings.base_dir)
    return settings


def require_positive(name: str, value: int | None, at_most: int | None = None, zero: bool = False) -> None:
    """Refuse a count below 1 (below 0 with ``zero``) or above ``at_most``, naming the option."""
    if value is not None and value < (0 if zero else 1):
        raise UserError(f"--{name} must be {'0 or more' if zero else 'a positive whole number'}, got {value}")
    if value is not None and at_most is not None and value > at_most:
        raise UserError(f"--{name} must be at most {at_most:,}, got {value:,}")


def styled(*parts: str | Text | tuple[str, str]) -> Text:
    """Text with some parts styled, e.g. ``styled(("NO SHIP", "bold red"), ": 2 rules broken")``; never markup."""
    return Text.assemble(*parts)


def parse_day(option: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: {value!r} is not a date (YYYY-MM-DD)") from None


def wide_console(width: int = 160) -> Console:
    """For wide tables: outside a terminal (CI logs, pipes) they get room instead of wrapping."""
    return Console(width=console.width if console.is_terminal else max(console.width, width), markup=False)


def fail(message: str) -> None:
    err_console.print(f"error: {' '.join(message.split())}", markup=False, highlight=False, soft_wrap=True)


def print_comparison(title: str, overall: dict[str, dict], keys: tuple[str, str, str], names: tuple[str, str]) -> None:
    """A paired comparison as a table: metric, each side's value, the difference with its 95% interval.

    ``overall`` maps a metric to a dict holding an estimate (``value``, ``low``, ``high``) under each of ``keys``:
    the baseline's, the other's, their difference; ``names`` head the two value columns.
    """
    base, other, diff = keys
    table = Table(title=title)
    for header in ("metric", *names, "difference [95% CI]" if diff == "difference" else f"{diff} [95% CI]"):
        table.add_column(header, justify="left" if header == "metric" else "right")
    for name, c in overall.items():
        d = c[diff]
        table.add_row(
            name, f"{c[base]['value']:.4f}", f"{c[other]['value']:.4f}",
            f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]",
        )  # fmt: skip
    wide_console().print(table)
