"""`homefeed …` commands.  Thin: parse, call a stage, print.

Errors a user can cause (a bad config, an unknown policy, a negative count)
end in one line on stderr and exit code 2, never a traceback; damaged state
(a corrupt manifest, a missing registry) in one line and exit code 3; a bug
prints its traceback and exits 70, so a pipeline can tell a crash from a
verdict (exit 1).  Every stage's errors derive from `HomefeedError`, which
carries its exit code.  One module per group of commands; importing them
registers their commands on ``app``.
"""

from __future__ import annotations

import sys
import traceback

import typer
from typer.exceptions import TyperException

from homefeed.cli import data, dataset, evaluate, features, launch, models, serve, sim  # noqa: F401  (registers the commands, in help order)
from homefeed.cli.common import app, err_console, fail
from homefeed.errors import EXIT_INTERNAL, HomefeedError


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI; a `HomefeedError` becomes one line and its exit code, a bug exit code 70."""
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
    except HomefeedError as exc:  # a bad request (2) or damaged state (3): one line, never a traceback
        fail(str(exc))
        return exc.exit_code
    except Exception:  # a bug: the traceback, and an exit code that no verdict or user error uses
        traceback.print_exc()
        fail(f"internal error (a bug in homefeed; exit code {EXIT_INTERNAL}); the traceback is above")
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
