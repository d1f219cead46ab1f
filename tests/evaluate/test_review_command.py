"""`homefeed launch review` on the command line: data printed as text, bad requests (2) and damaged state (3)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from homefeed.cli import main
from homefeed.train.gbdt import GBDTRanker
from homefeed.train.registry import Registry
from tests.evaluate.conftest import FAST_GBDT
from tests.test_cli import assert_one_line_error, plain
from tests.train.conftest import build

#: Market names a careless (or hostile) log could hold: Rich markup, which once crashed the review's printing.
MARKETS = {"US[/bold]": 0.6, "[red]BR": 0.4}


@dataclass
class Marked:
    root: Path  # the world: lake, ETL, datasets, registry with a strong "production" and a weak "candidate"
    dataset: str


@pytest.fixture(scope="module")
def marked(tmp_path_factory) -> Marked:
    world = build(tmp_path_factory.mktemp("marked_world"), "random", days=6, countries=MARKETS)
    registry = Registry.of(world.settings)
    strong = registry.register(GBDTRanker(**FAST_GBDT).fit(world.data), world.data)
    weak = registry.register(GBDTRanker(n_estimators=1, num_leaves=2).fit(world.data), world.data)
    registry.alias("production", strong.version, reason="fixture")
    registry.alias("candidate", weak.version, reason="fixture")
    return Marked(world.settings.resolved_paths.root, world.data.dataset_id)


@pytest.fixture
def project(marked, tmp_path, monkeypatch) -> Path:
    """A project over a copy of the world's registry, models and datasets (to damage), reports in ``tmp_path``."""
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    for name in ("models", "datasets"):
        shutil.copytree(marked.root / name, tmp_path / name)
    shutil.copy(marked.root / "registry.sqlite", tmp_path / "registry.sqlite")
    paths = {name: (tmp_path / name).as_posix() for name in ("models", "datasets", "reports")}
    text = f'[paths]\nroot = "{marked.root.as_posix()}"\nregistry = "{(tmp_path / "registry.sqlite").as_posix()}"\n'
    text += "".join(f'{name} = "{path}"\n' for name, path in paths.items()) + "[etl]\nwindows = [1, 7]\n"
    (tmp_path / "homefeed.toml").write_text(text, encoding="utf-8")
    (tmp_path / "gates.toml").write_text('[[guardrails]]\nmetric = "auc"\nmax_regression = 0.0\n', encoding="utf-8")
    return tmp_path / "homefeed.toml"


def test_data_holding_markup_is_printed_as_text(project, tmp_path, capsys):
    """A market named ``US[/bold]`` is a slice name in the verdict's reasons: printed as it is, never parsed."""
    assert main(["launch", "review", "candidate", "--gates", "gates.toml", "--replicates", "20"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "NO SHIP" in plain(out)
    assert "market=US[/bold]" in out or "market=[red]BR" in out
    assert sorted(p.suffix for p in (tmp_path / "reports").iterdir()) == [".html", ".js", ".json"]  # + plotly.js
    assert main(["models", "alias", "staging", "production", "--reason", "[/bold] after [red]review"]) == 0
    assert "[/bold] after [red]review" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "gates", "expected"),
    [
        (["--replicates", "-5"], None, ["--replicates", "-5"]),
        (["--replicates", "0"], None, ["--replicates", "0"]),
        ([], '[[goals]]\nmetric = "ndcg@100000000"\n', ["gates.toml", "ndcg@100000000", "from 1 to 1,000"]),
        ([], '[[goals]]\nmetric = "ndcg@0"\n', ["ndcg@0", "from 1 to 1,000"]),
    ],
)
def test_bad_requests_are_one_line_errors_with_exit_code_2(project, tmp_path, capsys, argv, gates, expected):
    if gates:
        (tmp_path / "gates.toml").write_text(gates, encoding="utf-8")
    assert main(["launch", "review", "candidate", "--gates", "gates.toml", *argv]) == 2
    assert_one_line_error(capsys.readouterr().err, *expected)
    assert not (tmp_path / "reports").exists()


def test_a_swapped_test_split_is_damaged_state_with_exit_code_3(project, marked, tmp_path, capsys):
    folder = tmp_path / "datasets" / marked.dataset
    shutil.copy(folder / "validation.parquet", folder / "test.parquet")
    assert main(["launch", "review", "candidate", "--replicates", "20"]) == 3
    assert_one_line_error(capsys.readouterr().err, f"{marked.dataset}/test.parquet", "SHA-256", "dataset build")
    assert main(["evaluate", "side-by-side", "--replicates", "20"]) == 3
    assert_one_line_error(capsys.readouterr().err, "test.parquet")
    assert not (tmp_path / "reports").exists()


def test_a_corrupt_or_missing_registry_is_damaged_state_with_exit_code_3(project, marked, tmp_path, capsys):
    registry = tmp_path / "registry.sqlite"
    good = registry.read_bytes()
    registry.write_bytes(good[:100] + b"\x00" * 4000)  # a header, then nothing a database could be
    for argv in (["launch", "review", "candidate"], ["models", "list"]):
        assert main(argv) == 3
        assert_one_line_error(capsys.readouterr().err, "registry.sqlite", "not a readable model registry")
    registry.unlink()
    argv = ["train", "--model", "gbdt", "--dataset", marked.dataset, "--param", "n_estimators=5"]
    assert main(argv) == 3
    assert_one_line_error(capsys.readouterr().err, "registry.sqlite", "missing", "gbdt-0001", "backup")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["gbdt-0001", "gbdt-0002"]
    assert not registry.exists()
