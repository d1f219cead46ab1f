"""One base error for every stage, so the command line and the HTTP layer map errors to answers in one place.

Why a base class with an exit code rather than a table in the CLI: a stage knows what kind of failure it
raises (a bad request, or state on disk that is missing or damaged), and a pipeline calling ``homefeed`` must
tell those apart from a verdict (exit 1: no ship, a data check's error) and from a crash (a bug).

Exit codes of ``homefeed`` (documented in the README):

* 0: done (or: ship, no error-level finding)
* 1: a verdict: the launch review says no ship; a day's data check found an error
* 2: a bad request: an unknown name, a malformed value or file the user gave (`HomefeedError`)
* 3: damaged state: a file the project wrote is missing, corrupt or changed since (`DamagedStateError`)
* 70: an internal error, a bug (`EX_SOFTWARE`): the traceback is printed
"""

from __future__ import annotations

from typing import ClassVar

#: Exit code of an unexpected exception: a bug, never a verdict.
EXIT_INTERNAL = 70


class HomefeedError(Exception):
    """A failure a user can act on; the message says what is wrong and, where it helps, what to do."""

    exit_code: ClassVar[int] = 2
    #: The HTTP status the service answers with (a client's mistake by default).
    http_status: ClassVar[int] = 400


class DamagedStateError(HomefeedError):
    """A file the project itself wrote (a manifest, a registry, a split) is missing, corrupt or changed since."""

    exit_code: ClassVar[int] = 3
    http_status: ClassVar[int] = 503
