"""The bundled Open Bandit sample: found by name, licensed, and inside an installed (non-editable) wheel too."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from homefeed.data.open_bandit import find_campaigns
from homefeed.datasets import OPEN_BANDIT_ROOT, OPEN_BANDIT_SAMPLES, SampleError, open_bandit_sample

REPO = Path(__file__).resolve().parents[1]


def test_every_sample_name_is_a_folder_of_campaigns():
    found = {name: [c.campaign for c in find_campaigns(open_bandit_sample(name))] for name in OPEN_BANDIT_SAMPLES}
    assert found == {
        "random": ["all", "men", "women"],
        "random/all": ["all"],
        "random/men": ["men"],
        "random/women": ["women"],
    }
    assert open_bandit_sample() == OPEN_BANDIT_ROOT / "random"
    for campaign in find_campaigns(open_bandit_sample()):
        assert campaign.log.name.endswith(".csv.gz") and campaign.item_context.name == "item_context.csv.gz"


def test_an_unknown_sample_is_refused_with_the_names_there_are():
    with pytest.raises(SampleError, match="no bundled Open Bandit sample 'men'; expected one of random, random/all"):
        open_bandit_sample("men")


def test_the_license_and_attribution_sit_beside_the_data():
    readme = (OPEN_BANDIT_ROOT / "README.md").read_text()
    assert "CC BY 4.0" in readme and "ZOZO, Inc." in readme and "Saito" in readme and "gzip" in readme
    assert (OPEN_BANDIT_ROOT / "LICENSE").read_text().startswith("Attribution 4.0 International")


def test_an_installed_wheel_carries_the_sample(tmp_path):
    """Built and installed as a user's pip would (not editable), the loader finds the data inside the install."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "homefeed", source / "homefeed", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source], check=True)
    (wheel,) = (tmp_path / "dist").glob("homefeed-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("homefeed/datasets/open_bandit/")}
    bundled = [p.relative_to(OPEN_BANDIT_ROOT.parent) for p in OPEN_BANDIT_ROOT.rglob("*") if p.is_file()]
    assert shipped == {f"homefeed/datasets/{p}" for p in bundled} and len(shipped) == 8  # 6 CSVs, README, LICENSE
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True)
    probe = "from homefeed.datasets import open_bandit_sample as s; print(s('random/men'))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(tmp_path / "site")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    installed = Path(out.stdout.strip())
    assert installed == tmp_path / "site" / "homefeed" / "datasets" / "open_bandit" / "random" / "men"
    assert sorted(p.name for p in installed.iterdir()) == ["item_context.csv.gz", "men.csv.gz"]
