import dataclasses

import numpy as np
import pytest

from homefeed.cli import main
from homefeed.evaluate.bootstrap import Bootstrap, EvaluationError, Scored
from homefeed.evaluate.side_by_side import agreement, per_request, side_by_side, to_html
from homefeed.train.model import TrainingData
from homefeed.train.snapshots import DatasetStore
from tests.test_cli import assert_one_line_error


def _rbo(x: list, y: list, k: int, p: float) -> float:
    """Webber et al.'s extrapolated RBO at depth k, transcribed as written."""
    a = [len(set(x[:d]) & set(y[:d])) / d for d in range(1, k + 1)]
    return (1 - p) * sum(p ** (d - 1) * a[d - 1] for d in range(1, k + 1)) + p**k * a[k - 1]


def _scored(rid: np.ndarray, score: np.ndarray) -> Scored:
    return Scored({"request_id": rid, "label": np.zeros(len(rid)), "score": score})


def test_rbo_matches_the_formula_on_requests_of_different_sizes():
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 25, 80)
    rid = np.repeat(np.arange(80), sizes)
    sa = rng.random(len(rid))
    sb = sa + rng.random(len(rid)) * 0.4
    got = per_request(_scored(rid, sa), _scored(rid, sb), depth=10, p=0.8)["rbo"]
    want = []
    for r in range(80):
        rows = np.flatnonzero(rid == r)
        order_a = list(rows[np.argsort(-sa[rows], kind="stable")])
        order_b = list(rows[np.argsort(-sb[rows], kind="stable")])
        want.append(_rbo(order_a, order_b, min(10, len(rows)), 0.8))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_identical_rankings_agree_fully_and_reversed_ones_change_the_top_slot():
    rid = np.repeat(np.arange(30), 12)
    score = np.tile(np.arange(12, dtype=float), 30)
    same = agreement(_scored(rid, score), _scored(rid, score), boot=Bootstrap(50, seed=1))
    assert same.rbo.value == pytest.approx(1.0)
    assert same.top_slot_changed.value == 0.0 and same.mean_rank_shift.value == 0.0
    flipped = agreement(_scored(rid, score), _scored(rid, -score), depth=5, boot=Bootstrap(50, seed=1))
    assert flipped.top_slot_changed.value == 1.0
    assert flipped.rbo.value < 0.05  # the top 5 of 12 reversed share nothing
    assert flipped.rbo.low <= flipped.rbo.value <= flipped.rbo.high


def test_different_rows_are_refused():
    rid = np.repeat(np.arange(3), 4)
    with pytest.raises(EvaluationError, match="same rows"):
        per_request(_scored(rid, np.ones(12)), _scored(rid[::-1].copy(), np.ones(12)))
    with pytest.raises(EvaluationError, match="depth"):
        per_request(_scored(rid, np.ones(12)), _scored(rid, np.ones(12)), depth=0)


# --- two registered models: the request view, the page, the command ------------------------------------------------


@pytest.fixture(scope="module")
def sbs(registered):
    paths = registered.world.settings.resolved_paths
    return side_by_side(
        registered.registry, DatasetStore(paths.datasets), "production", "candidate", requests=3, depth=5,
        boot=Bootstrap(50, seed=0),
    )  # fmt: skip


def _ranking(registered, ref: str, test) -> np.ndarray:
    return registered.registry.load(ref).score(test)


def test_request_view_shows_both_slates_with_consistent_ranks(registered, sbs):
    test = registered.world.data.splits["test"]
    assert (sbs.a, sbs.b) == (registered.production, registered.candidate)
    assert sbs.rows == test.num_rows and len(sbs.requests) == 3
    score = {"a": _ranking(registered, "production", test), "b": _ranking(registered, "candidate", test)}
    rid = test["request_id"].to_numpy()
    items = test["item_id"].to_numpy()
    rbos = [r.rbo for r in sbs.requests]
    assert rbos == sorted(rbos) and rbos[0] < 1  # the requests where the two differ most, least alike first
    for view in sbs.requests:
        mine = np.flatnonzero(rid == view.request_id)
        assert view.candidates == len(mine)
        assert len(view.slate_a) == len(view.slate_b) == min(5, len(mine))
        for side, slate in (("a", view.slate_a), ("b", view.slate_b)):
            ranks = [getattr(i, f"rank_{side}") for i in slate]
            assert ranks == list(range(1, len(slate) + 1))
            # The top item under each model is the argmax of that model's scores over the request.
            assert slate[0].item_id == items[mine[np.argmax(score[side][mine])]]
            shown = [getattr(i, f"score_{side}") for i in slate]
            assert shown == sorted(shown, reverse=True)
        for item in view.slate_a + view.slate_b:
            row = mine[items[mine] == item.item_id][0]
            assert item.score_a == pytest.approx(score["a"][row]) and item.score_b == pytest.approx(score["b"][row])
            # each rank recomputed from that model's scores: 1 + the items it scores strictly higher + the items
            # scored exactly the same on earlier rows (ties keep row order: the small GBDT gives items it cannot
            # tell apart, new ones without history for one, the very same score)
            for side in ("a", "b"):
                s, earlier = score[side][mine], mine < row
                expected = 1 + int((s > s[mine == row]).sum() + ((s == s[mine == row]) & earlier).sum())
                assert getattr(item, f"rank_{side}") == expected
            assert item.rank_change == item.rank_a - item.rank_b
            assert item.labels["engaged"] == int(test["engaged"][int(row)].as_py())
            assert set(item.labels) >= {"engaged", "negative"}
            for top in (item.top_a, item.top_b):
                assert len(top) == 3
                sizes = [abs(c.contribution) for c in top]
                assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0
        assert view.top_slot_changed == (view.slate_a[0].item_id != view.slate_b[0].item_id)


def test_item_contributions_are_the_models_own_and_carry_the_row_values(registered, sbs):
    test = registered.world.data.splits["test"]
    gbdt = registered.registry.load("production")
    view = sbs.requests[0]
    item = view.slate_a[0]
    rid, items = test["request_id"].to_numpy(), test["item_id"].to_numpy()
    row = test.take([int(np.flatnonzero((rid == view.request_id) & (items == item.item_id))[0])])
    contrib, names = gbdt.contributions(row)
    for c in item.top_a:
        assert c.contribution == pytest.approx(contrib[0, names.index(c.name)])
        assert c.value == row[c.name][0].as_py()
    assert max(abs(x) for x in contrib[0, :-1]) == pytest.approx(abs(item.top_a[0].contribution))


def test_a_user_or_a_request_picks_what_is_shown_and_unknown_ones_are_named(registered):
    paths = registered.world.settings.resolved_paths
    store = DatasetStore(paths.datasets)
    test = registered.world.data.splits["test"]
    rid = test["request_id"].to_numpy()
    one = rid[len(rid) // 2]
    report = side_by_side(registered.registry, store, request=str(one), boot=Bootstrap(0))
    assert [r.request_id for r in report.requests] == [one]
    user = test["user_id"].to_numpy()[len(rid) // 2]
    theirs = set(rid[test["user_id"].to_numpy() == user].tolist())
    report = side_by_side(registered.registry, store, user=str(user), requests=2, boot=Bootstrap(0))
    assert {r.user_id for r in report.requests} == {user}
    assert {r.request_id for r in report.requests} <= theirs and len(report.requests) == min(2, len(theirs))
    with pytest.raises(EvaluationError, match="request 'nope'"):
        side_by_side(registered.registry, store, request="nope", boot=Bootstrap(0))
    with pytest.raises(EvaluationError, match="request '999999999'"):
        side_by_side(registered.registry, store, request="999999999", boot=Bootstrap(0))
    with pytest.raises(EvaluationError, match="user '-5'"):
        side_by_side(registered.registry, store, user="-5", boot=Bootstrap(0))
    with pytest.raises(EvaluationError, match="same version"):
        side_by_side(registered.registry, store, "production", registered.production, boot=Bootstrap(0))


def test_a_test_split_without_a_models_features_is_refused(registered, monkeypatch):
    data = registered.world.data
    lacking = dataclasses.replace(data, splits={**data.splits, "test": data.splits["test"].drop([data.features[0]])})
    monkeypatch.setattr(TrainingData, "load", classmethod(lambda cls, store, ref: lacking))
    store = DatasetStore(registered.world.settings.resolved_paths.datasets)
    with pytest.raises(EvaluationError, match=f"reads feature column.*{data.features[0]}"):
        side_by_side(registered.registry, store, boot=Bootstrap(0))


def test_the_page_holds_the_agreement_and_escapes_what_it_shows(registered, sbs):
    page = to_html(sbs)
    for text in (sbs.a, sbs.b, "rank-biased overlap", f"{sbs.agreement.rbo.value:.4f}", "top slot changed"):
        assert text in page
    for view in sbs.requests:
        assert f"Request {view.request_id}" in page
    item = sbs.requests[0].slate_a[0]
    hostile = dataclasses.replace(
        sbs, requests=[dataclasses.replace(sbs.requests[0], slate_a=(dataclasses.replace(item, item_id="<b>x</b>"),))]
    )
    assert "<b>x</b>" not in to_html(hostile) and "&lt;b&gt;x&lt;/b&gt;" in to_html(hostile)
    print(f"\nside-by-side on the fixture: {sbs.rows:,} rows, {sbs.agreement.requests:,} requests, {sbs.seconds:.2f} s")


def test_the_command_prints_both_slates_and_writes_the_page(registered, project_file, tmp_path, capsys):
    argv = ["evaluate", "side-by-side", "production", "candidate", "--requests", "2", "--depth", "4"]
    assert main([*argv, "--replicates", "20", "-c", str(project_file)]) == 0
    out = capsys.readouterr().out
    assert "rank-biased overlap" in out and registered.production in out and registered.candidate in out
    page = tmp_path / "reports" / f"side-by-side-{registered.production}-vs-{registered.candidate}.html"
    text = page.read_text(encoding="utf-8")
    assert registered.production in text and registered.candidate in text and "rank-biased overlap" in text
    assert text.count("<h2>Request ") == 2
    assert [p.name for p in page.parent.iterdir()] == [page.name]  # written atomically: no temporary left


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--request", "123456789"], "123456789"),
        (["--user", "abc"], "abc"),
        (["nope-0001", "candidate"], "nope-0001"),
        (["--depth", "0"], "--depth"),
        (["--depth", "100000000"], "--depth must be at most 1,000"),
    ],
)
def test_the_command_reports_a_bad_request_in_one_line(registered, project_file, tmp_path, capsys, extra, named):
    assert main(["evaluate", "side-by-side", *extra, "--replicates", "0", "-c", str(project_file)]) == 2
    assert_one_line_error(capsys.readouterr().err, named)
    assert not (tmp_path / "reports").exists()


def test_negative_replicates_are_a_bad_request_not_a_crash(registered, project_file, tmp_path, capsys):
    assert main(["evaluate", "side-by-side", "--replicates", "-5", "-c", str(project_file)]) == 2
    assert_one_line_error(capsys.readouterr().err, "--replicates must be 0 or more, got -5")
    assert not (tmp_path / "reports").exists()
