"""`homefeed evaluate …`: side-by-side comparisons, ablations and human review of registered models."""

from __future__ import annotations

import typer

from homefeed.cli.common import app

evaluate_app = typer.Typer(help="Understand models: side-by-side, ablations, human review.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")
