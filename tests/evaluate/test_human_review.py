import csv
import json

import numpy as np
import pytest

from homefeed.cli import main
from homefeed.evaluate.bootstrap import Bootstrap, EvaluationError, Scored
from homefeed.evaluate.human_review import (
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
