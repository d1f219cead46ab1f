"""`homefeed …` commands.  Thin: parse, call a stage, print.

Errors a user can cause (a bad config, an unknown policy, a negative count)
end in one line on stderr and exit code 2, never a traceback.  One module per
group of commands; importing them registers their commands on ``app``.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from homefeed.cli import data, dataset, evaluate, features, launch, models, sim  # noqa: F401  (registers the commands, in help order)
from homefeed.cli.common import UserError, app, err_console, fail
from homefeed.config import ConfigError
from homefeed.data.ingest import IngestError
from homefeed.evaluate.bootstrap import EvaluationError
from homefeed.features.definitions import FeatureError
from homefeed.features.store import StoreError
from homefeed.schema import SchemaError
from homefeed.sim import PolicyError
from homefeed.train import DatasetError
from homefeed.train.model import ModelError
from homefeed.train.registry import RegistryError

#: What a user can cause: each becomes one ``error:`` line and exit code 2.
USER_ERRORS = (
    UserError,
    ConfigError,
    PolicyError,
    SchemaError,
    IngestError,
    StoreError,
    FeatureError,
    DatasetError,
    ModelError,
    RegistryError,
    EvaluationError,
)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and turns user errors into one line and exit code 2."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="homefeed", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except TyperException as exc:  # usage errors: unknown option, a value of the wrong type
        message = exc.format_message()
        if message:  # an empty message is the help text already shown for a bare command
            fail(message)
        return 2
    except USER_ERRORS as exc:
        fail(str(exc))
        return 2
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
