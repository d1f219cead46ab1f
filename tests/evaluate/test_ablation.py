"""Ablations on the fixture world: the group engagement depends on costs AUC beyond noise; a weak group does not."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from homefeed.cli import main
from homefeed.evaluate.ablation import ablate
from homefeed.evaluate.bootstrap import Bootstrap, EvaluationError
from homefeed.features.definitions import FeatureError, group_columns
from homefeed.train.registry import Registry, RegistryError, model_class
from homefeed.train.snapshots import DatasetStore

BOOT = Bootstrap(replicates=100, seed=0)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _datasets(registered):
    return DatasetStore(registered.world.settings.resolved_paths.datasets)


@pytest.fixture(scope="module")
def ablations(registered):
    """The production GBDT without its user x topic affinities (what the simulated engagement depends on most)
    and without the request context (hour, weekday, item age in hours: the item's age is also an item feature)."""
    return {
        group: ablate(registered.registry, _datasets(registered), "production", [group], boot=BOOT)
        for group in ("user_topic", "context")
    }


def test_dropping_the_user_topic_affinities_costs_auc_and_ndcg_beyond_noise(ablations, registered):
    r = ablations["user_topic"]
    assert r.reference == registered.production and r.kind == "gbdt" and r.registered is None
    assert r.dropped == group_columns("user_topic", registered.registry.load("production").features)
    auc, ndcg = r.overall["auc"], r.overall["ndcg@10"]
    assert auc["delta"]["high"] < 0 and ndcg["delta"]["high"] < 0  # the whole interval below 0
    assert auc["delta"]["value"] == pytest.approx(auc["ablated"]["value"] - auc["full"]["value"])
    assert {"auc", "ndcg@10"} <= set(r.beyond_noise())
    assert set(r.overall) == {"auc", "log_loss", "ndcg@10", "negative_rate@3"}
    assert r.overall["log_loss"]["delta"]["low"] > 0  # worse calibrated probabilities, too
    assert any(s.startswith("topic=") for s in r.slices) and r.training_seconds["ablated"] > 0


def test_dropping_a_weak_group_stays_within_noise_and_costs_far_less(ablations):
    weak, strong = ablations["context"].overall["auc"]["delta"], ablations["user_topic"].overall["auc"]["delta"]
    assert weak["high"] >= 0  # no loss beyond noise
    assert abs(weak["value"]) < abs(strong["value"]) / 4


def test_the_ablation_is_not_registered_unless_asked_and_then_with_its_lineage(registered, tmp_path):
    versions = len(registered.registry.versions())
    # a copy of the fixture's registry: the shared one keeps its two versions for every other test
    shutil.copy(registered.registry.db, tmp_path / "registry.sqlite")
    shutil.copytree(registered.registry.root, tmp_path / "models")
    copy = Registry(tmp_path / "registry.sqlite", tmp_path / "models")
    r = ablate(copy, _datasets(registered), "production", ["context_*"], ["auc"], Bootstrap(replicates=0), True)
    assert len(registered.registry.versions()) == versions
    v, reference = copy.get(r.registered), copy.get("production")
    assert v.kind == "gbdt" and v.params == reference.params and v.dataset_id == reference.dataset_id
    assert v.metrics["ablation"] == {"reference": reference.version, "groups": ["context_*"], "dropped": r.dropped}
    assert v.feature_set.endswith("without context_*") and len(copy.load(v.version).features) == r.kept


def test_every_kind_is_rebuilt_from_its_registered_parameters(registered):
    for ref in ("production", "candidate"):
        v = registered.registry.get(ref)
        assert model_class(v.kind).from_params(v.params).params() == v.params


@pytest.mark.parametrize(
    ("ref", "drop", "metrics", "error", "text"),
    [
        ("production", ["items"], ["auc"], FeatureError, "'items' matches none"),
        ("production", ["*"], ["auc"], FeatureError, "leaves the model no input columns"),
        ("production", ["context"], ["ndgc@10"], EvaluationError, "unknown metric 'ndgc@10'"),
        ("nope", ["context"], ["auc"], RegistryError, "'nope'"),
    ],
)
def test_bad_requests_fail_before_any_training(registered, ref, drop, metrics, error, text):
    with pytest.raises(error, match=re.escape(text)):
        ablate(registered.registry, _datasets(registered), ref, drop, metrics, BOOT)


def test_the_command_prints_the_table_and_writes_the_report(project_file, registered, tmp_path, capsys):
    argv = ["evaluate", "ablate", "--drop", "context", "--drop", "*_1d", "--replicates", "50", "-c", str(project_file)]
    assert main(argv) == 0
    out = ANSI.sub("", capsys.readouterr().out)
    assert f"ablation: {registered.production} without context + *_1d" in out
    for name in ("auc", "log_loss", "ndcg@10", "negative_rate@3"):
        assert re.search(rf"{re.escape(name)}\s.*[+-]\d\.\d{{4}} \[[+-]\d\.\d{{4}}, [+-]\d\.\d{{4}}\]", out), name
    assert "beyond noise" in out and "dropped: item_impressions_1d" in out
    reports = tmp_path / "reports"  # the project file's
    written = sorted(p.name for p in reports.glob(f"ablation-{registered.production}-without-context*"))
    assert len(written) == 2 and written[0].endswith(".html") and written[1].endswith(".json")
    report = json.loads((reports / written[1]).read_text())
    assert report["groups"] == ["context", "*_1d"] and "context_hour_of_day" in report["dropped"]
    assert "item_click_rate_1d" in report["dropped"] and report["replicates"] == 50


def test_each_group_is_retrained_on_its_own_and_tabled(project_file, registered, tmp_path, capsys):
    argv = ["evaluate", "ablate", "--each", "--drop", "user_topic", "--drop", "context", "--metric", "auc"]
    assert main([*argv, "--replicates", "50", "-c", str(project_file)]) == 0
    out = ANSI.sub("", capsys.readouterr().out)
    rows = {line.split()[1]: line for line in out.splitlines() if re.match(r"^\W+(user_topic|context)\s", line)}
    assert set(rows) == {"user_topic", "context"}
    assert "worse" in rows["user_topic"] and "worse" not in rows["context"]  # as the single ablations find
    for group in ("user_topic", "context"):
        path = tmp_path / "reports" / f"ablation-{registered.production}-without-{group}.json"
        report = json.loads(path.read_text())
        assert report["groups"] == [group]  # one group per retraining, not dropped together
    assert main(["evaluate", "ablate", "--each", "--drop", "itemz", "-c", str(project_file)]) == 2  # before training
    assert "'itemz' matches none" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        (["--drop", "itemz"], "'itemz' matches none"),
        (["--drop", "context", "--metric", "happiness"], "unknown metric 'happiness'"),
        (["nope", "--drop", "context"], "'nope'"),
    ],
)
def test_a_bad_request_is_one_error_line_and_exit_2(project_file, capsys, extra, text):
    assert main(["evaluate", "ablate", *extra, "-c", str(project_file)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines
