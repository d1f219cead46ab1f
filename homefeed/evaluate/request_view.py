"""One request under two models: both slates next to each other, with scores, rank changes and why.

For each chosen request the view holds model A's top ``depth`` items in A's
order and B's in B's, and for every item shown: both models' ranking scores
(``p(positive) − λ·p(negative)``), its rank under each (1 = the top slot), the
rank change ``rank_a − rank_b`` (positive: B puts it higher), the labels the
logs recorded for it, and each model's ``top`` inputs by the size of their
contribution to that model's positive head (`Ranker.contributions`, in
log-odds).  Contributions are computed once per model for the rows of every
chosen request together, vectorized; only assembling the few shown items
loops in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.evaluate.bootstrap import EvaluationError, Scored
from homefeed.train.model import Ranker

#: Logged outcomes shown next to each item, when the test split has them.
LABEL_COLUMNS = ("engaged", "clicked", "saved", "negative")


@dataclass(frozen=True)
class Contribution:
    """One input of one row: its name, its value in the row (as the model saw it), its share of the log-odds."""

    name: str
    value: object
    contribution: float


@dataclass(frozen=True)
class ItemView:
    """One candidate of a request as both models see it."""

    item_id: object
    score_a: float
    score_b: float
    rank_a: int  # 1 = the model's top slot, among all of the request's candidates
    rank_b: int
    labels: dict[str, int]
    top_a: tuple[Contribution, ...]
    top_b: tuple[Contribution, ...]

    @property
    def rank_change(self) -> int:
        """``rank_a − rank_b``: positive when B ranks the item higher (nearer the top) than A."""
        return self.rank_a - self.rank_b


@dataclass(frozen=True)
class RequestView:
    """A request's slates under A and B (each its own top ``depth``, best first) and how much they agree."""

    request_id: object
    user_id: object
    candidates: int
    slate_a: tuple[ItemView, ...]
    slate_b: tuple[ItemView, ...]
    rbo: float

    @property
    def top_slot_changed(self) -> bool:
        return self.slate_a[0].item_id != self.slate_b[0].item_id


def _parse(value: object, column: pa.ChunkedArray, what: str) -> object:
    """A command-line id as the column's type: an integer for an integer column, else the text."""
    if pa.types.is_integer(column.type):
        try:
            return int(str(value))
        except ValueError:
            raise EvaluationError(f"{what} {value!r} is not in the test split (its ids are integers)") from None
    return str(value)


def pick_requests(
    test: pa.Table,
    rbo: np.ndarray,
    request: object | None = None,
    user: object | None = None,
    count: int = 1,
) -> list[object]:
    """Which requests to show: the one asked for; a user's ``count`` latest; else the ``count`` least alike.

    ``rbo`` is each request's rank-biased overlap, in order of the sorted unique request ids (`Scored.requests`'
    codes for ids grouped or not).  "Latest" is by ``ts`` when the rows have it, else by request id.
    """
    if count < 1:
        raise EvaluationError(f"the number of requests to show must be at least 1, got {count}")
    if request is not None and user is not None:
        raise EvaluationError("show a request or a user's requests, not both")
    rid = test["request_id"]
    if request is not None:
        wanted = _parse(request, rid, "request")
        if not pc.any(pc.equal(rid, pa.scalar(wanted, rid.type))).as_py():
            raise EvaluationError(f"request {request!r} is not in the test split")
        return [wanted]
    if user is not None:
        uid = test["user_id"]
        wanted = _parse(user, uid, "user")
        mine = test.filter(pc.equal(uid, pa.scalar(wanted, uid.type)))
        if mine.num_rows == 0:
            raise EvaluationError(f"user {user!r} has no requests in the test split")
        when = "ts" if "ts" in mine.column_names else "request_id"
        latest = mine.group_by("request_id").aggregate([(when, "max")]).sort_by([(f"{when}_max", "descending")])
        return latest["request_id"].to_pylist()[:count]
    ids = np.unique(rid.to_numpy(zero_copy_only=False))
    if len(ids) != len(rbo):
        raise EvaluationError(f"{len(rbo)} agreement values for {len(ids)} requests")
    return ids[np.argsort(rbo, kind="stable")[:count]].tolist()


def _top(model: Ranker, rows: pa.Table, n: int) -> list[tuple[Contribution, ...]]:
    """Per row of ``rows``, the model's ``n`` inputs with the largest |contribution|, largest first.

    The slot, when it is an input, is left out: every item is scored at the serving slot, so its contribution is
    the same for all of a request's items and says nothing about why one outranks another.
    """
    contrib, names = model.contributions(rows)
    keep = [j for j, name in enumerate(names[:-1]) if name != "position"]  # the last column is the baseline
    names, contrib = [names[j] for j in keep], contrib[:, keep]
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :n]
    present = set(rows.column_names)
    values = {names[j]: rows[names[j]].to_pylist() for j in np.unique(order) if names[j] in present}
    return [
        tuple(
            Contribution(names[j], values.get(names[j], [None] * rows.num_rows)[i], float(contrib[i, j])) for j in row
        )
        for i, row in enumerate(order)
    ]


def request_views(
    test: pa.Table,
    a: tuple[Ranker, Scored],
    b: tuple[Ranker, Scored],
    request_ids: list[object],
    rbo: np.ndarray,
    depth: int,
    top: int = 3,
) -> list[RequestView]:
    """The views of ``request_ids``: ``a`` and ``b`` are each a model and its ranking scores on ``test``'s rows."""
    (model_a, scored_a), (model_b, scored_b) = a, b
    code, rank_a, _ = scored_a.requests
    _, rank_b, _ = scored_b.requests
    rid = test["request_id"].to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(np.isin(rid, np.asarray(request_ids, dtype=rid.dtype)))
    chosen = test.take(pa.array(rows))
    top_a, top_b = _top(model_a, chosen, top), _top(model_b, chosen, top)
    columns = set(test.column_names)
    labels = {name: test[name].to_numpy(zero_copy_only=False)[rows] for name in LABEL_COLUMNS if name in columns}
    items = test["item_id"].to_numpy(zero_copy_only=False)[rows]
    users = test["user_id"].to_numpy(zero_copy_only=False)[rows] if "user_id" in columns else None
    score_a, score_b = scored_a.columns["score"][rows], scored_b.columns["score"][rows]
    ra, rb = rank_a[rows] + 1, rank_b[rows] + 1

    def item(i: int) -> ItemView:
        return ItemView(
            py_value(items[i]),
            float(score_a[i]), float(score_b[i]), int(ra[i]), int(rb[i]),
            {name: int(v[i]) for name, v in labels.items()}, top_a[i], top_b[i],
        )  # fmt: skip

    views = []
    for request in request_ids:
        mine = np.flatnonzero(rid[rows] == request)
        views.append(
            RequestView(
                request_id=request,
                user_id=None if users is None else py_value(users[mine[0]]),
                candidates=len(mine),
                slate_a=tuple(item(i) for i in mine[np.argsort(ra[mine])][:depth]),
                slate_b=tuple(item(i) for i in mine[np.argsort(rb[mine])][:depth]),
                rbo=float(rbo[code[rows[mine[0]]]]),
            )
        )
    return views


def py_value(value: object) -> object:
    """A NumPy scalar as the plain Python value (for printing, comparing with a parsed id, JSON)."""
    return value.item() if isinstance(value, np.generic) else value
