"""The Open Bandit Dataset's files: finding the campaign logs, checking their headers, and reading them.

A campaign log is streamed (:func:`homefeed.data.readers.csv_blocks`): parsed and its clicks checked once
through, keeping nothing, then handed out a block of about ``chunk_bytes`` at a time; the small item context
is read whole.  :mod:`homefeed.data.open_bandit` maps what these give to the canonical tables.
"""

from __future__ import annotations

import csv
import gzip
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from homefeed.data.readers import IngestError, csv_blocks
from homefeed.schema import TIMESTAMP

POLICIES: tuple[str, ...] = ("random", "bts")
#: OBD's campaigns; the code is packed into item ids because OBD numbers items per campaign.
CAMPAIGNS: dict[str, int] = {"all": 1, "men": 2, "women": 3}
USER_FEATURES: tuple[str, ...] = tuple(f"user_feature_{i}" for i in range(4))
AFFINITY_PREFIX = "user-item_affinity_"
ITEM_CONTEXT = "item_context.csv"

LOG_TYPES: dict[str, pa.DataType] = {
    "timestamp": TIMESTAMP,
    "item_id": pa.int64(),
    "position": pa.int64(),
    "click": pa.int64(),
    "propensity_score": pa.float64(),
    **dict.fromkeys(USER_FEATURES, pa.string()),
}
CONTEXT_TYPES: dict[str, pa.DataType] = {"item_id": pa.int64(), "item_feature_0": pa.float64()}


@dataclass(frozen=True)
class Campaign:
    """One campaign log of one logging policy, and the item context beside it."""

    policy: str
    campaign: str
    log: Path
    item_context: Path

    @property
    def request_prefix(self) -> str:
        return f"obd-{self.policy}-{self.campaign}-"


def _csv_stem(path: Path) -> str | None:
    """A file's name without ``.csv`` or ``.csv.gz``; None if it is neither."""
    for suffix in (".csv.gz", ".csv"):
        if path.name.endswith(suffix):
            return path.name.removesuffix(suffix)
    return None


def _item_context(folder: Path) -> Path:
    """``item_context.csv`` in a campaign folder, or its gzip-compressed form where only that exists."""
    plain, packed = folder / ITEM_CONTEXT, folder / f"{ITEM_CONTEXT}.gz"
    return packed if packed.is_file() and not plain.exists() else plain


def find_campaigns(path: str | Path) -> list[Campaign]:
    """Every ``<policy>/<campaign>/<campaign>.csv[.gz]`` at or under ``path``; refuses a path that holds none."""
    path = Path(path)
    if path.is_file():
        logs = [path]
    elif path.is_dir():
        logs = sorted(p for p in path.rglob("*.csv*") if _csv_stem(p) == p.parent.name)
    else:
        raise IngestError(f"{path}: no such file or directory")
    if not logs:
        raise IngestError(f"{path}: no Open Bandit campaign logs (<policy>/<campaign>/<campaign>.csv) found")
    campaigns = []
    for log in logs:
        policy, campaign = log.parent.parent.name, log.parent.name
        if _csv_stem(log) != campaign or campaign not in CAMPAIGNS or policy not in POLICIES:
            raise IngestError(
                f"{log}: not an Open Bandit campaign log; expected <{'|'.join(POLICIES)}>/<campaign>/<campaign>.csv"
                f"[.gz] with a campaign of {', '.join(CAMPAIGNS)}"
            )
        campaigns.append(Campaign(policy, campaign, log, _item_context(log.parent)))
    return campaigns


def _header(path: Path) -> list[str]:
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # a damaged gzip stream is an OSError too
        raise IngestError(f"{path}: cannot be read as Open Bandit data: {exc}") from None


def check_headers(campaign: Campaign) -> None:
    """Refuse a campaign whose files lack a column the mapping needs, naming the file and the columns."""
    for path, required in ((campaign.log, LOG_TYPES), (campaign.item_context, CONTEXT_TYPES)):
        header = _header(path)
        missing = [c for c in required if c not in header]
        if path == campaign.log and not any(c.startswith(AFFINITY_PREFIX) for c in header):
            missing.append(f"{AFFINITY_PREFIX}*")
        if missing:
            raise IngestError(f"{path}: missing Open Bandit column(s) {', '.join(missing)}")


def _log_options(path: Path, types: dict[str, pa.DataType]) -> pa_csv.ConvertOptions:
    header = _header(path)
    # Affinities are numbers and item categories text, whatever a small file's values look like.
    extra = {c: pa.float64() for c in header if c.startswith(AFFINITY_PREFIX)}
    extra |= {c: pa.string() for c in header if c.startswith("item_feature_") and c not in types}
    return pa_csv.ConvertOptions(column_types={**types, **extra}, strings_can_be_null=True)


def _unreadable(path: Path, exc: BaseException) -> IngestError:
    return IngestError(f"{path}: cannot be read as Open Bandit data: {' '.join(str(exc).split())}")


_UNREADABLE = (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError)


def read_item_context(path: Path) -> pa.Table:
    """A campaign's item context: a small file, read whole."""
    try:
        return pa_csv.read_csv(path, convert_options=_log_options(path, CONTEXT_TYPES))
    except _UNREADABLE as exc:
        raise _unreadable(path, exc) from None


def log_blocks(campaign: Campaign, chunk_bytes: int) -> tuple[Iterator[pa.Table], pa.Scalar | None]:
    """The campaign log's blocks, every one parsed and its clicks checked before the first is handed out, and
    the log's first timestamp (the items' creation time)."""
    earliest: list[pa.Scalar] = []

    def check(batch: pa.Table, before: int) -> None:
        click = batch.column("click")
        bad = pc.fill_null(pc.invert(pc.is_in(click, value_set=pa.array([0, 1]))), True).to_numpy(zero_copy_only=False)
        if bad.any():  # the reward itself: an impression with an unknown click would read back as not clicked
            row = int(np.flatnonzero(bad)[0])
            value = click[row].as_py()
            raise IngestError(f"{campaign.log}: click must be 0 or 1; data row {before + row + 1} has {value!r}")
        earliest.append(pc.min(batch.column("timestamp")))

    blocks = csv_blocks(campaign.log, _log_options(campaign.log, LOG_TYPES), chunk_bytes, check)
    try:
        first = next(blocks)
    except _UNREADABLE as exc:
        raise _unreadable(campaign.log, exc) from None
    stamps = [e for e in earliest if e.is_valid]
    return _guarded(campaign.log, itertools.chain([first], blocks)), min(stamps, key=lambda e: e.value, default=None)


def _guarded(path: Path, blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
    try:
        yield from blocks
    except _UNREADABLE as exc:  # the file changed since it was checked
        raise _unreadable(path, exc) from None
