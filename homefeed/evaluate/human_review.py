"""Human review: two models' slates for the same requests as blind rating tasks, and the win rate from the ratings.

Metrics say what a model optimizes; people say whether the feed is any good.
Each task shows one request's two slates as ``left`` and ``right``, which
model is which drawn at random per task and kept in a separate key file, so a
rater cannot favour the incumbent.  Requests whose two slates are identical
are skipped by default: they cost rater time and can only be ties.

Ratings come back as CSV or JSON rows of ``task_id, rater, preference`` with
preference ``left``, ``right`` or ``tie``, in UTF-8 (a byte-order mark, as
spreadsheets write, is fine; another encoding is refused, naming the byte).
A rating is one rater's preference for one task: its identity is
``(task_id, rater)``, and a row with no rater (or a file with no rater column)
is the unnamed rater's, so a task counts it once.  Each row is checked, and a
bad one (unknown task, unknown preference, a second rating of a task by the
same rater, named or not) is set aside with its reason rather than silently
dropped, counted twice, or failing the whole import.

``tasks.csv`` is opened in spreadsheets, which run a cell starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return as a formula; such cells (a
request id or a country from the logs could be one) get a leading ``'``, as
OWASP advises against CSV injection.
The win rate of B over A counts a tie as half a win; its interval resamples
*tasks* (Poisson bootstrap), so several raters of one task are not counted as
independent evidence.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from homefeed.errors import DamagedStateError
from homefeed.evaluate.bootstrap import Bootstrap, Estimate, EvaluationError, Scored, Units, interval
from homefeed.evaluate.request_view import py_value
from homefeed.evaluate.side_by_side import SLATE_SIZE, per_request
from homefeed.files import atomic_write_text

TASKS_JSON, TASKS_CSV, KEY_FILE = "tasks.json", "tasks.csv", "key.json"
PREFERENCES = ("left", "right", "tie")
#: Item columns a rater sees, when the rows have them (labels never: a rater judges the slate, not the log).
ITEM_COLUMNS = ("item_id", "topic", "creator_id")
USER_COLUMNS = ("user_id", "country")
#: A spreadsheet evaluates a cell that starts with one of these (CSV injection); `_cell` defuses it.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class RatingTask:
    task_id: str
    request_id: str
    user: dict
    left: list[dict]
    right: list[dict]


@dataclass
class Ratings:
    """Imported ratings: the usable ones, and the rejected rows with their reasons."""

    rows: list[dict]  # task_id, rater, preference, winner ("a", "b" or "tie")
    rejected: list[dict] = field(default_factory=list)  # the row as read, plus "reason"
    a: str = "a"  # the two models, as the export's key names them
    b: str = "b"


@dataclass(frozen=True)
class WinRate:
    """B against A over the rated tasks: a tie counts half."""

    a: str
    b: str
    tasks: int
    ratings: int
    wins_b: int
    wins_a: int
    ties: int
    win_rate_b: Estimate
    rater_agreement: float | None  # share of rater pairs on the same task who agree; None with one rater per task


def export_tasks(
    a: Scored,
    b: Scored,
    models: tuple[str, str],
    directory: str | Path,
    tasks: int = 100,
    depth: int = SLATE_SIZE,
    seed: int = 0,
    include_identical: bool = False,
) -> list[RatingTask]:
    """Write up to ``tasks`` blind rating tasks (JSON and CSV) and the key that unblinds them."""
    if tasks < 1:
        raise EvaluationError(f"the number of rating tasks must be at least 1 (got {tasks})")
    overlap = per_request(a, b, depth)  # also checks both models scored the same rows
    code, _, n_req = a.requests
    candidates = np.arange(n_req) if include_identical else np.flatnonzero(overlap["rbo"] < 1.0 - 1e-12)
    if candidates.size == 0:
        raise EvaluationError(f"{models[0]} and {models[1]} show identical slates for every request: nothing to rate")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(candidates, size=min(tasks, candidates.size), replace=False))
    b_on_left = rng.random(chosen.size) < 0.5
    first_row = np.full(n_req, -1)
    first_row[code[::-1]] = np.arange(len(code))[::-1]
    cols = a.columns
    top_a, top_b = a.top(depth), b.top(depth)

    def slate(grid: np.ndarray, r: int) -> list[dict]:
        rows = grid[r][grid[r] >= 0]
        return [{c: py_value(cols[c][i]) for c in ITEM_COLUMNS if c in cols} for i in rows]

    out, key = [], {}
    for r, swap in zip(chosen, b_on_left, strict=True):
        request_id = str(cols["request_id"][first_row[r]])
        task_id = hashlib.sha256(f"{models[0]}|{models[1]}|{request_id}".encode()).hexdigest()[:12]
        left, right = (slate(top_b, r), slate(top_a, r)) if swap else (slate(top_a, r), slate(top_b, r))
        user = {c: py_value(cols[c][first_row[r]]) for c in USER_COLUMNS if c in cols}
        out.append(RatingTask(task_id, request_id, user, left, right))
        key[task_id] = {"left": models[1] if swap else models[0], "right": models[0] if swap else models[1]}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / TASKS_JSON, json.dumps([asdict(t) for t in out], indent=1))
    atomic_write_text(directory / TASKS_CSV, _tasks_csv(out))
    atomic_write_text(directory / KEY_FILE, json.dumps({"a": models[0], "b": models[1], "tasks": key}, indent=1))
    return out


def _tasks_csv(tasks: list[RatingTask]) -> str:
    """One line per task for a spreadsheet: the slates as ``item_id:topic`` lists, and empty rating columns."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task_id", "request_id", "user", "left", "right", "rater", "preference"])
    for t in tasks:
        show = lambda s: " | ".join(":".join(str(v) for v in item.values()) for item in s)  # noqa: E731
        user = " ".join(f"{k}={v}" for k, v in t.user.items())
        w.writerow([_cell(c) for c in (t.task_id, t.request_id, user, show(t.left), show(t.right), "", "")])
    return buf.getvalue()


def _cell(value: str) -> str:
    """A cell a spreadsheet shows as text: one that would start a formula gets a leading ``'``."""
    return "'" + value if value.startswith(FORMULA_START) else value


def _read_rows(path: Path) -> list[dict]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read ratings ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as spreadsheets write, is not part of the first column
    except UnicodeDecodeError as exc:
        raise EvaluationError(
            f"{path}: not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); save the ratings as UTF-8 "
            "(in a spreadsheet: CSV UTF-8)"
        ) from None
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise EvaluationError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise EvaluationError(f"{path}: expected a JSON list of objects with task_id, rater, preference")
        return rows
    try:
        reader = csv.DictReader(io.StringIO(text))
        missing = {"task_id", "preference"} - set(reader.fieldnames or [])
        if missing:
            raise EvaluationError(
                f"{path}: ratings need columns task_id and preference (missing {', '.join(sorted(missing))})"
            )
        return list(reader)
    except csv.Error as exc:
        raise EvaluationError(f"{path}: not a readable CSV file ({exc})") from None


def _read_key(directory: Path) -> dict:
    """The export's key: which model is left and right in each task.  Written by `export_tasks`, so damage is 3."""
    path = directory / KEY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise EvaluationError(f"{directory}: no readable {KEY_FILE}; export rating tasks there first") from None
    try:
        key = json.loads(text)
    except ValueError as exc:
        raise DamagedStateError(f"{path}: not valid JSON ({exc}); export the rating tasks again") from None
    sides = ("left", "right")
    valid = (
        isinstance(key, dict)
        and all(isinstance(key.get(m), str) for m in ("a", "b"))
        and isinstance(key.get("tasks"), dict)
        and all(
            isinstance(t, dict) and all(t.get(side) in (key["a"], key["b"]) for side in sides)
            for t in key["tasks"].values()
        )
    )
    if not valid:
        raise DamagedStateError(
            f"{path}: not a rating key (an object with models a and b and, per task, the model on the left and on "
            "the right); export the rating tasks again"
        )
    return key


def import_ratings(directory: str | Path, ratings: str | Path) -> Ratings:
    """Read ratings (CSV or JSON) for the tasks exported to ``directory`` and unblind them with its key.

    A rating's identity is ``(task_id, rater)``; rows without a rater are the unnamed rater's, so a task counts
    only its first unnamed rating and the rest are set aside, never counted as more evidence.
    """
    key = _read_key(Path(directory))
    out = Ratings([], a=key["a"], b=key["b"])
    seen: set[tuple[str, str]] = set()
    for row in _read_rows(Path(ratings)):
        task = str(row.get("task_id") or "").strip()
        rater = str(row.get("rater") or "").strip()
        preference = str(row.get("preference") or "").strip().lower()
        if not preference:  # an unrated line of the exported sheet: not an error, not a rating
            continue
        reason = None
        if task not in key["tasks"]:
            reason = f"unknown task_id {task!r}"
        elif preference not in PREFERENCES:
            reason = f"preference {preference!r} is not one of {', '.join(PREFERENCES)}"
        elif (task, rater) in seen and rater:
            reason = f"rater {rater!r} rated task {task} twice"
        elif (task, rater) in seen:
            reason = f"task {task} rated again with no rater named: name each rater (a rater column) to count several"
        if reason:
            out.rejected.append({**row, "reason": reason})
            continue
        seen.add((task, rater))
        side = key["tasks"][task].get(preference)
        winner = "tie" if preference == "tie" else ("b" if side == key["b"] else "a")
        out.rows.append({"task_id": task, "rater": rater, "preference": preference, "winner": winner})
    return out


def win_rate(ratings: Ratings, a: str, b: str, boot: Bootstrap | None = None) -> WinRate:
    """B's win rate over A with a task-bootstrap interval, and how often two raters of one task agree."""
    if not ratings.rows:
        raise EvaluationError(f"no usable ratings ({len(ratings.rejected)} rejected)")
    boot = boot or Bootstrap(replicates=1000, seed=0)
    tasks, codes = np.unique([r["task_id"] for r in ratings.rows], return_inverse=True)
    winner = np.array([r["winner"] for r in ratings.rows])
    value = np.where(winner == "b", 1.0, np.where(winner == "tie", 0.5, 0.0))
    weights = np.random.default_rng(boot.seed).poisson(1.0, (boot.replicates, len(tasks))).astype(np.float64)
    rate, reps = Units(codes, len(tasks), weights).ratio(value, np.ones(len(value)))
    # Rater agreement: of all pairs of ratings of one task, the share that name the same winner.
    votes = np.bincount(codes * 3 + np.searchsorted(["a", "b", "tie"], winner), minlength=len(tasks) * 3)
    per_task = votes.reshape(len(tasks), 3)
    agree = int((per_task * (per_task - 1) // 2).sum())
    n = per_task.sum(axis=1)
    pairs = int((n * (n - 1) // 2).sum())
    return WinRate(
        a=a,
        b=b,
        tasks=len(tasks),
        ratings=len(value),
        wins_b=int(np.sum(winner == "b")),
        wins_a=int(np.sum(winner == "a")),
        ties=int(np.sum(winner == "tie")),
        win_rate_b=interval(rate, reps, boot.level),
        rater_agreement=agree / pairs if pairs else None,
    )
