"""Side-by-side: how differently two models order the same requests, summarized over many requests.

Rank-biased overlap (Webber, Moffat and Zobel, 2010) is the agreement of two
rankings weighted toward the top: at each depth d the share of items the two
top-d lists have in common, averaged with weights (1 − p)·p^(d−1).  We use the
extrapolated form at depth k (the slate size, or the request's candidate count
when smaller): ``(1 − p) Σ_{d≤k} p^(d−1) A_d + p^k A_k``, which is 1 for
identical rankings and 0 for disjoint ones.  Both models rank the same
candidates, so an item is in both top-d lists exactly when the larger of its
two ranks is below d: one ``bincount`` over (request, max rank) gives every
overlap at every depth for every request at once, with no Python loop.

`side_by_side` is the whole comparison of two registered versions on B's
held-out test split: the agreement over every request, and a few requests
shown item by item (`evaluate.request_view`); `to_html` makes one
self-contained page of it.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from homefeed.evaluate.bootstrap import Bootstrap, Estimate, EvaluationError, Scored, interval
from homefeed.evaluate.pages import escape, page
from homefeed.evaluate.request_view import Contribution, ItemView, RequestView, pick_requests, request_views
from homefeed.evaluate.review import score_pair
from homefeed.files import atomic_write_text
from homefeed.train.registry import Registry
from homefeed.train.snapshots import DatasetStore

#: RBO's persistence: with p = 0.9 the top 10 slots carry about 86% of the weight.
RBO_P = 0.9
SLATE_SIZE = 10


@dataclass(frozen=True)
class Agreement:
    """Over many requests: how much two models' slates overlap, and how often the top slot changes."""

    requests: int
    depth: int
    p: float
    rbo: Estimate
    top_slot_changed: Estimate  # share of requests whose first item differs
    mean_rank_shift: Estimate  # mean |rank A − rank B| of the items either model puts in its top ``depth``


def _same_rows(a: Scored, b: Scored) -> None:
    if len(a) != len(b):
        raise EvaluationError(f"side-by-side needs both models' scores on the same rows ({len(a)} vs {len(b)})")
    if not np.array_equal(a.col("request_id"), b.col("request_id")):
        raise EvaluationError("side-by-side needs both models' scores on the same rows (request ids differ)")


def per_request(a: Scored, b: Scored, depth: int = SLATE_SIZE, p: float = RBO_P) -> dict[str, np.ndarray]:
    """Per request (in `Scored.requests` code order): RBO, whether the top slot changed, summed rank shift, items."""
    if depth < 1 or not 0 < p < 1:
        raise EvaluationError(f"rank-biased overlap needs depth >= 1 and 0 < p < 1 (got depth={depth}, p={p})")
    _same_rows(a, b)
    code, rank_a, n_req = a.requests
    _, rank_b, _ = b.requests
    size = np.bincount(code, minlength=n_req)
    k = np.minimum(size, depth)
    deepest = np.maximum(rank_a, rank_b)
    inside = deepest < depth
    overlap = np.bincount(code[inside] * depth + deepest[inside], minlength=n_req * depth).reshape(n_req, depth)
    agreement = overlap.cumsum(axis=1) / np.arange(1, depth + 1)  # A_d: share of the top d held in common
    d = np.arange(1, depth + 1)
    live = d[None, :] <= k[:, None]
    rbo = (1 - p) * np.where(live, agreement * p ** (d - 1), 0.0).sum(axis=1)
    rbo += p**k * agreement[np.arange(n_req), np.maximum(k, 1) - 1]
    top_a = np.full(n_req, -1)
    top_b = np.full(n_req, -1)
    top_a[code[rank_a == 0]] = np.flatnonzero(rank_a == 0)
    top_b[code[rank_b == 0]] = np.flatnonzero(rank_b == 0)
    shown = (rank_a < depth) | (rank_b < depth)
    shift = np.bincount(code[shown], np.abs(rank_a - rank_b)[shown].astype(np.float64), minlength=n_req)
    return {
        "rbo": rbo,
        "top_slot_changed": (top_a != top_b).astype(np.float64),
        "rank_shift": shift,
        "shown": np.bincount(code[shown], minlength=n_req).astype(np.float64),
    }


def agreement(
    a: Scored, b: Scored, depth: int = SLATE_SIZE, p: float = RBO_P, boot: Bootstrap | None = None
) -> Agreement:
    """RBO, top-slot change rate and mean rank shift over every request, each with a request-bootstrap interval."""
    return summarize(a, per_request(a, b, depth, p), depth, p, boot)


def summarize(
    a: Scored, values: dict[str, np.ndarray], depth: int = SLATE_SIZE, p: float = RBO_P, boot: Bootstrap | None = None
) -> Agreement:
    """`agreement` from `per_request`'s ``values`` already computed on ``a``'s rows (and another model's)."""
    boot = boot or Bootstrap(replicates=200, seed=0)
    units = a.units(boot, by_request=True)
    ones = np.ones(len(values["rbo"]))

    def mean(num: np.ndarray, den: np.ndarray) -> Estimate:
        value, reps = units.request_ratio(num, den)
        return interval(value, reps, boot.level)

    return Agreement(
        requests=len(ones),
        depth=depth,
        p=p,
        rbo=mean(values["rbo"], ones),
        top_slot_changed=mean(values["top_slot_changed"], ones),
        mean_rank_shift=mean(values["rank_shift"], values["shown"]),
    )


@dataclass(frozen=True)
class SideBySide:
    """Two versions on one test split: their agreement over every request, and the requests shown in full."""

    a: str
    b: str
    dataset_id: str
    rows: int
    agreement: Agreement
    requests: list[RequestView]
    seconds: float
    created_at: str


def side_by_side(
    registry: Registry,
    datasets: DatasetStore,
    a: str = "production",
    b: str = "candidate",
    request: object | None = None,
    user: object | None = None,
    requests: int = 1,
    depth: int = SLATE_SIZE,
    top: int = 3,
    boot: Bootstrap | None = None,
) -> SideBySide:
    """Compare versions (or aliases) ``a`` and ``b`` on ``b``'s test split, ranking by each one's combined score.

    Shows ``request``, or ``user``'s ``requests`` latest, or else the ``requests`` requests whose slates differ
    most (lowest RBO); each shown item carries each model's ``top`` input contributions.
    """
    start = time.perf_counter()
    if depth < 1 or top < 0:
        raise EvaluationError(f"the depth must be at least 1 and the contributions at least 0 (got {depth}, {top})")
    pair = score_pair(registry, datasets, candidate=b, baseline=a)
    test, va, vb = pair.test, pair.baseline, pair.candidate
    score_a, score_b = pair.baseline_scores["ranking"], pair.candidate_scores["ranking"]
    values = per_request(score_a, score_b, depth)
    rbo = values["rbo"]
    chosen = pick_requests(test, rbo, request, user, requests)
    views = request_views(
        test, (pair.baseline_model, score_a), (pair.candidate_model, score_b), chosen, rbo, depth, top
    )
    return SideBySide(
        a=va.version,
        b=vb.version,
        dataset_id=str(vb.dataset_id),
        rows=test.num_rows,
        agreement=summarize(score_a, values, depth, boot=boot),
        requests=views,
        seconds=round(time.perf_counter() - start, 3),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def contribution_text(c: Contribution) -> str:
    value = f"{c.value:.4g}" if isinstance(c.value, float) else str(c.value)
    return f"{c.name}={value} ({c.contribution:+.3f})"


def label_text(item: ItemView) -> str:
    return " ".join(name for name, v in item.labels.items() if v) or "-"


def _slate(r: RequestView, mine: str, other: str, side: str) -> str:
    items = r.slate_a if side == "a" else r.slate_b
    rows = "".join(
        f"<tr><td>{getattr(i, f'rank_{side}')}</td><td>{escape(i.item_id)}</td>"
        f"<td>{getattr(i, f'score_{side}'):.4f}</td><td>{i.rank_b if side == 'a' else i.rank_a}</td>"
        f"<td>{i.rank_change:+d}</td><td>{escape(label_text(i))}</td>"
        f"<td class=c>{'<br>'.join(escape(contribution_text(c)) for c in (i.top_a if side == 'a' else i.top_b))}"
        "</td></tr>"
        for i in items
    )
    return (
        f"<div><h3>{escape(mine)}</h3><table><tr><th>rank</th><th>item</th><th>score</th>"
        f"<th>rank in {escape(other)}</th>"
        f"<th>change</th><th>labels</th><th>top contributions (log-odds)</th></tr>{rows}</table></div>"
    )


def to_html(s: SideBySide) -> str:
    """One self-contained page: the agreement with its intervals, then each shown request's two slates."""
    g = s.agreement

    def row(name: str, e: Estimate) -> str:
        return f"<tr><td>{name}</td><td>{e.value:.4f}</td><td>[{e.low:.4f}, {e.high:.4f}]</td></tr>"

    requests = "".join(
        f"<h2>Request {escape(r.request_id)} (user {escape(r.user_id)}, {r.candidates} candidates): RBO {r.rbo:.3f}, "
        f"top slot {'changed' if r.top_slot_changed else 'kept'}</h2>"
        f"<div class=pair>{_slate(r, s.a, s.b, 'a')}{_slate(r, s.b, s.a, 'b')}</div>"
        for r in s.requests
    )
    body = f"""<p>Dataset {escape(s.dataset_id)}, {s.rows:,} test rows, {g.requests:,} requests; each model ranks by its
combined score; 95% request-bootstrap intervals; {escape(s.created_at)}.</p>
<h2>Agreement over every request (depth {g.depth})</h2>
<table><tr><th>measure</th><th>value</th><th>95% CI</th></tr>
{row(f"rank-biased overlap (p = {g.p})", g.rbo)}{row("top slot changed (share of requests)", g.top_slot_changed)}
{row(f"mean |rank A − rank B| of items in either top {g.depth}", g.mean_rank_shift)}</table>
<p>Rank change = rank under A − rank under B (positive: B ranks the item higher). Contributions are to each
model's positive head in log-odds: LightGBM's exact TreeSHAP values for a GBDT, integrated gradients from the
average input for an NN.</p>
{requests}"""
    style = "td:first-child{text-align:left} td.c{text-align:left;font-size:90%} .pair{display:flex;gap:2em}"
    return page(f"Side-by-side: {s.a} (A) vs {s.b} (B)", body, style)


def write_html(report: SideBySide, directory: str | Path) -> Path:
    path = Path(directory) / f"side-by-side-{report.a}-vs-{report.b}.html"
    atomic_write_text(path, to_html(report))
    return path
