import csv
import json

import numpy as np
import pytest

from homefeed.cli import main
from homefeed.errors import DamagedStateError
from homefeed.evaluate.bootstrap import Bootstrap, EvaluationError, Scored
from homefeed.evaluate.human_review import (
    FORMULA_START,
    KEY_FILE,
    TASKS_CSV,
    TASKS_JSON,
    Ratings,
    export_tasks,
    import_ratings,
    win_rate,
)
from homefeed.evaluate.review import score_pair
from homefeed.train import DatasetStore


@pytest.fixture(scope="module")
def pair(registered):
    datasets = DatasetStore(registered.world.settings.resolved_paths.datasets)
    return score_pair(registered.registry, datasets, registered.candidate, registered.production)


@pytest.fixture
def exported(pair, tmp_path):
    a, b = pair.baseline_scores["ranking"], pair.candidate_scores["ranking"]
    names = (pair.baseline.version, pair.candidate.version)
    return export_tasks(a, b, names, tmp_path, tasks=60, depth=5, seed=4), tmp_path


def _write_csv(path, rows):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["task_id", "rater", "preference"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_tasks_are_blind_and_hold_each_models_top_slate(pair, exported):
    tasks, directory = exported
    key = json.loads((directory / KEY_FILE).read_text())
    assert len(tasks) == 60 and len({t.task_id for t in tasks}) == 60
    assert {json.dumps(t["left"]) for t in json.loads((directory / TASKS_JSON).read_text())}  # written, readable
    sides = [key["tasks"][t.task_id]["left"] for t in tasks]
    assert 15 < sides.count(pair.candidate.version) < 45  # sides drawn at random per task
    rows = pair.test
    for t in tasks[:10]:
        mask = rows["request_id"].to_numpy(zero_copy_only=False) == t.request_id
        items = rows["item_id"].to_numpy()[mask]
        for side in ("left", "right"):
            who = key["tasks"][t.task_id][side]
            scores = (pair.candidate_scores if who == pair.candidate.version else pair.baseline_scores)["ranking"]
            best = items[np.argsort(-scores.columns["score"][mask], kind="stable")[:5]]
            assert [i["item_id"] for i in getattr(t, side)] == list(best)
        assert t.left != t.right  # identical slates are not worth a rater's time
        assert "engaged" not in t.left[0]  # raters judge the slate, not the log
    with (directory / TASKS_CSV).open() as f:
        assert len(list(csv.DictReader(f))) == 60


def test_ratings_unblind_to_the_right_model(pair, exported):
    tasks, directory = exported
    key = json.loads((directory / KEY_FILE).read_text())["tasks"]
    b = pair.candidate.version
    # Rater 1 always prefers B, wherever it sits; rater 2 always prefers A; rater 3 always says "right".
    rows = []
    for t in tasks:
        b_side = "left" if key[t.task_id]["left"] == b else "right"
        rows.append({"task_id": t.task_id, "rater": "r1", "preference": b_side})
    ratings = import_ratings(directory, _write_csv(directory / "r1.csv", rows))
    assert win_rate(ratings, pair.baseline.version, b).win_rate_b.value == 1.0
    flipped = [{**r, "rater": "r2", "preference": "right" if r["preference"] == "left" else "left"} for r in rows]
    result = win_rate(import_ratings(directory, _write_csv(directory / "r2.csv", flipped)), "a", b)
    assert result.win_rate_b.value == 0.0 and result.wins_a == 60
    right = [{**r, "rater": "r3", "preference": "right"} for r in rows]
    rate = win_rate(import_ratings(directory, _write_csv(directory / "r3.csv", right)), "a", b, Bootstrap(2000))
    share = sum(key[t.task_id]["right"] == b for t in tasks) / len(tasks)
    assert rate.win_rate_b.value == pytest.approx(share)
    assert rate.win_rate_b.low < share < rate.win_rate_b.high
    both = import_ratings(directory, _write_csv(directory / "both.csv", rows + flipped))
    assert win_rate(both, "a", b).rater_agreement == 0.0 and win_rate(both, "a", b).win_rate_b.value == 0.5


def test_win_rate_interval_covers_a_raters_true_preference():
    """Raters who prefer B with probability 0.65: the 95% interval holds 0.65 in most seeds."""
    hits = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        rows = [{"task_id": f"t{i}", "rater": f"r{j}", "preference": "b" if rng.random() < 0.65 else "a"}
                for i in range(150) for j in range(2)]  # fmt: skip

        ratings = Ratings([{**r, "winner": r["preference"]} for r in rows])
        hits += win_rate(ratings, "a", "b", Bootstrap(400, seed=seed)).win_rate_b.contains(0.65)
    assert hits >= 34


def test_bad_rating_rows_are_set_aside_with_reasons(exported, tmp_path):
    tasks, directory = exported
    t = tasks[0].task_id
    path = directory / "bad.json"
    path.write_text(json.dumps([
        {"task_id": t, "rater": "x", "preference": "Left"},
        {"task_id": t, "rater": "x", "preference": "right"},
        {"task_id": "nope", "rater": "x", "preference": "left"},
        {"task_id": tasks[1].task_id, "rater": "x", "preference": "better"},
        {"task_id": tasks[2].task_id, "rater": "x", "preference": ""},
    ]))  # fmt: skip
    ratings = import_ratings(directory, path)
    assert [r["preference"] for r in ratings.rows] == ["left"]
    reasons = [r["reason"] for r in ratings.rejected]
    assert reasons == [f"rater 'x' rated task {t} twice", "unknown task_id 'nope'",
                       "preference 'better' is not one of left, right, tie"]  # fmt: skip
    (directory / "cols.csv").write_text("task,pref\n1,left\n")
    with pytest.raises(EvaluationError, match="missing preference, task_id"):
        import_ratings(directory, directory / "cols.csv")
    with pytest.raises(EvaluationError, match=r"no readable key\.json"):
        import_ratings(tmp_path / "elsewhere", path)


def _losing_sheet(tasks, directory, key, repeats):
    """One unnamed rating per task, the judged model (b) winning only the first, whose row is repeated."""
    rows = []
    for i, t in enumerate(tasks):
        winner = key["b"] if i == 0 else key["a"]
        rows.append((t.task_id, "left" if key["tasks"][t.task_id]["left"] == winner else "right"))
    rows += [rows[0]] * repeats
    return "task_id,preference\n" + "".join(f"{t},{p}\n" for t, p in rows)


def test_a_task_counts_once_when_no_rater_is_named(exported):
    """Without a rater column, 50 copies of one row are one rating: the judged model lost 5 of 6 tasks."""
    tasks, directory = exported
    key = json.loads((directory / KEY_FILE).read_text())
    path = directory / "anonymous.csv"
    path.write_text(_losing_sheet(tasks[:6], directory, key, repeats=49))
    ratings = import_ratings(directory, path)
    report = win_rate(ratings, ratings.a, ratings.b, Bootstrap(200, seed=0))
    assert (report.ratings, report.tasks, report.wins_b, report.wins_a) == (6, 6, 1, 5)
    assert report.win_rate_b.value == pytest.approx(1 / 6)
    assert len(ratings.rejected) == 49
    assert ratings.rejected[0]["reason"].startswith(f"task {tasks[0].task_id} rated again with no rater named")
    # Named raters still count as several ratings of one task: the identity of a rating is (task, rater).
    named = directory / "named.json"
    named.write_text(json.dumps([{"task_id": tasks[0].task_id, "rater": r, "preference": "tie"} for r in "xyz"]))
    assert len(import_ratings(directory, named).rows) == 3


def test_ratings_with_a_byte_order_mark_are_read_and_other_encodings_refused(exported):
    tasks, directory = exported
    key = json.loads((directory / KEY_FILE).read_text())
    sheet = _losing_sheet(tasks[:6], directory, key, repeats=0)
    (directory / "plain.csv").write_text(sheet, encoding="utf-8")
    (directory / "bom.csv").write_text(sheet, encoding="utf-8-sig")  # as spreadsheets save "CSV UTF-8"
    assert (
        import_ratings(directory, directory / "bom.csv").rows == import_ratings(directory, directory / "plain.csv").rows
    )
    latin = directory / "latin.csv"
    latin.write_bytes(f"task_id,rater,preference\n{tasks[0].task_id},José,left\n".encode("latin-1"))
    with pytest.raises(EvaluationError, match=r"latin\.csv: not UTF-8 \(byte 0xe9 at offset \d+\)"):
        import_ratings(directory, latin)


@pytest.mark.parametrize(
    "key",
    ['{"a": "gbdt-0001", ', '{"a": 1}', "[]", '{"a": "x", "b": "y", "tasks": {"t1": {"left": "x", "right": "z"}}}'],
)
def test_a_malformed_key_is_damaged_state_named_in_one_line(exported, key, capsys, monkeypatch):
    tasks, directory = exported
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    monkeypatch.chdir(directory)
    (directory / "ratings.csv").write_text(f"task_id,rater,preference\n{tasks[0].task_id},ann,left\n")
    (directory / KEY_FILE).write_text(key)
    with pytest.raises(DamagedStateError, match=r"key\.json: .*export the rating tasks again"):
        import_ratings(directory, directory / "ratings.csv")
    assert main(["evaluate", "human-review", "import", str(directory), str(directory / "ratings.csv")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "key.json" in err and len(err.strip().splitlines()) == 1


def test_tasks_csv_cells_that_a_spreadsheet_would_run_are_defused(pair, tmp_path):
    """Request ids and user values come from the logs: one starting ``=`` must stay text in a spreadsheet."""
    a, b = pair.baseline_scores["ranking"], pair.candidate_scores["ranking"]
    starts = [*FORMULA_START, "x"]
    _, request = np.unique(a.columns["request_id"], return_inverse=True)  # one prefix per request, not per row
    hostile = np.array(
        [
            f'{starts[k % len(starts)]}HYPERLINK("http://x",{r})'
            for k, r in zip(request, a.columns["request_id"], strict=True)
        ],
        object,
    )
    a, b = Scored({**a.columns, "request_id": hostile}), Scored({**b.columns, "request_id": hostile})
    tasks = export_tasks(a, b, ("m1", "m2"), tmp_path, tasks=40, depth=3, seed=1)
    with (tmp_path / TASKS_CSV).open(newline="") as f:
        sheet = list(csv.DictReader(f))
    cells = [value for row in sheet for value in row.values()]
    assert not [c for c in cells if c.startswith(FORMULA_START)]
    requests = {t.task_id: t.request_id for t in tasks}
    assert {r["request_id"] for r in sheet} >= {"'=" + v[1:] for v in requests.values() if v.startswith("=")}
    assert any(v.startswith("=") for v in requests.values())  # the data did hold formulas: the test can fail
    for row in sheet:  # defused, not rewritten: the text after the quote is the request id
        assert row["request_id"].removeprefix("'") == requests[row["task_id"]]
    json_ids = {t["request_id"] for t in json.loads((tmp_path / TASKS_JSON).read_text())}
    assert json_ids == set(requests.values())  # JSON is not a spreadsheet: values as they are


def test_identical_models_leave_nothing_to_rate(pair, tmp_path):
    a = pair.baseline_scores["ranking"]
    with pytest.raises(EvaluationError, match="identical slates"):
        export_tasks(a, Scored(dict(a.columns)), ("x", "y"), tmp_path)


def test_cli_exports_then_imports_ratings(registered, project_file, tmp_path, capsys):
    out = tmp_path / "tasks"
    assert (
        main(["evaluate", "human-review", "export", "--tasks", "20", "--out", str(out), "-c", str(project_file)]) == 0
    )
    assert "20 rating tasks" in capsys.readouterr().out
    key = json.loads((out / KEY_FILE).read_text())
    with (out / TASKS_CSV).open() as f:
        sheet = list(csv.DictReader(f))
    for row in sheet:  # a rater fills in the exported sheet: prefers the candidate, leaves one line blank
        row["rater"] = "ann"
        row["preference"] = "left" if key["tasks"][row["task_id"]]["left"] == registered.candidate else "right"
    sheet[0]["preference"] = ""
    sheet[1]["preference"] = "maybe"
    with (out / "ann.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(sheet[0]))
        w.writeheader()
        w.writerows(sheet)
    assert main(["evaluate", "human-review", "import", str(out), str(out / "ann.csv"), "-c", str(project_file)]) == 0
    text = capsys.readouterr().out
    assert f"{registered.candidate} vs {registered.production}: 18 ratings of 18 tasks" in text
    assert "win rate of" in text and "1.000" in text
    assert json.loads((out / "rejected-ann.json").read_text())[0]["reason"].startswith("preference 'maybe'")
    assert json.loads((out / "win-rate-ann.json").read_text())["wins_b"] == 18
    assert main(["evaluate", "human-review", "import", str(out), str(out / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.csv" in err and len(err.strip().splitlines()) == 1
