"""The Open Bandit Dataset (ZOZOTOWN; Saito et al., NeurIPS 2021) as canonical tables.

OBD is real logged bandit feedback: each row of ``<policy>/<campaign>/<campaign>.csv``
is one item shown in one of three slots by a known logging policy (``random`` or
``bts``), with its propensity, whether it was clicked, four hashed user features and
the user-item affinities; ``item_context.csv`` beside it describes the campaign's items.
Off-policy estimators (IPS, SNIPS, DR) are only as right as the propensities,
positions, actions and rewards they read, so the mapping keeps every one of them
exactly, and :func:`bandit_feedback` gets the rows back out of the lake.

Mapping, per row of a campaign log:

- impression: ``request_id`` = ``obd-<policy>-<campaign>-<row index>`` (stable, so
  re-ingesting dedupes), ``ts`` = ``timestamp``, ``surface`` = the campaign,
  ``position`` = ``position`` (OBD's slots are already 1..3), ``propensity`` =
  ``propensity_score``, ``model_version`` = the logging policy, ``served_features`` =
  the ``user-item_affinity_*`` columns, ``country`` = ``JP`` (ZOZOTOWN's market);
- engagement, where ``click`` = 1: one ``click`` at the impression's ``ts``;
- user: OBD has no user id, so ``user_id`` is derived from a hash of the four user
  features (a user here is a user-feature *segment*, not a person), ``attributes`` =
  those features, ``signup_at`` null (OBD has no sign-up time, so no tenure feature);
- item: ``item_id`` = :func:`item_ids` (campaign and OBD item id packed into a
  namespace no other source uses; OBD's ids are per campaign), ``content`` =
  ``item_feature_0`` and the hashed categorical ``item_feature_1..3`` one-hot as
  ``item_feature_k=<hash>: 1.0``, ``created_at`` = the first timestamp of the campaign
  log, ``creator_id`` = -1 (unknown), ``safety_label`` = ``safe`` (a retail catalogue;
  no safety classifier ran on it).

A path is a dataset root (``random/``, ``bts/`` below it), a policy folder, a
campaign folder or one campaign CSV; any file may be gzip-compressed (``.csv.gz``,
as in the sample :mod:`homefeed.datasets` bundles).  A missing file or column refuses
the whole call by name before anything is written (every file's header is checked
first); a cell that does not parse, or a click that is not 0/1 (the reward itself),
refuses its file before any of its rows is written.  A value that parses but breaks the contract (a propensity
of 0, a null position, a future timestamp) quarantines its row, as any ingest does.
A campaign log is streamed (:func:`homefeed.data.readers.csv_blocks`): parsed and checked once
through, then mapped and ingested a block of about ``chunk_bytes`` at a time, so the 12-million-row
``bts/all`` is held one block at a time, never whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.data.ingest import IngestReport, ingest_table
from homefeed.data.lake import Lake
from homefeed.data.open_bandit_files import (
    AFFINITY_PREFIX,
    CAMPAIGNS,
    USER_FEATURES,
    Campaign,
    check_headers,
    find_campaigns,
    log_blocks,
    read_item_context,
)
from homefeed.data.readers import CHUNK_BYTES
from homefeed.schema import TABLES

COUNTRY = "JP"
UNKNOWN_CREATOR = -1
#: Ids no other source uses: 0x0BD0/0x0BD1 in the top 16 bits of a positive int64.
ITEM_NAMESPACE = 0x0BD0 << 48
USER_NAMESPACE = 0x0BD1 << 48
_ITEM_BITS = 32


def item_ids(campaign: str, obd_item_ids: pa.Array) -> pa.Array:
    """Canonical item ids of a campaign's OBD item ids; ids outside [0, 2^32) become null (and fail the contract)."""
    ids = pc.cast(obd_item_ids, pa.int64())
    valid = pc.and_(pc.greater_equal(ids, 0), pc.less(ids, 1 << _ITEM_BITS))
    packed = pc.add(ids, ITEM_NAMESPACE | CAMPAIGNS[campaign] << _ITEM_BITS)
    return pc.if_else(valid, packed, pa.nulls(len(ids), pa.int64()))


def obd_item_ids(ids: np.ndarray) -> np.ndarray:
    """OBD's own item ids (the bandit's actions) back from canonical item ids."""
    return np.asarray(ids, dtype=np.int64) & ((1 << _ITEM_BITS) - 1)


def logged_item_ids(ids: np.ndarray) -> np.ndarray:
    """Each item's id as its own logs name it, what a declared cross's ``{item_id}`` is: OBD's per-campaign id
    (``user-item_affinity_5`` names OBD's item 5) for an item of OBD's namespace, the canonical id for any other."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids // (1 << 48) == ITEM_NAMESPACE >> 48, obd_item_ids(ids), ids)


def logged_item_id_sql(column: str) -> str:
    """`logged_item_ids` in SQL both engines run: integer division and modulo, no bitwise operator to transpile."""
    return (
        f"CASE WHEN {column} // {1 << 48} = {ITEM_NAMESPACE >> 48} THEN {column} % {1 << _ITEM_BITS} ELSE {column} END"
    )


def user_ids(features: list[pa.Array]) -> tuple[pa.Array, np.ndarray]:
    """Stable user ids from the user-feature combination, and each row's index into the distinct combinations.

    A 48-bit blake2b of the features (a missing one as empty) under :data:`USER_NAMESPACE`;
    blake2b because Python's ``hash`` is salted per process and ids must be the same on
    every run.  It runs once per distinct combination (hundreds), never per row.
    """
    joined = pc.binary_join_element_wise(*[pc.fill_null(f, "") for f in features], "\x1f")
    encoded = pc.dictionary_encode(joined)
    combos = encoded.dictionary.to_pylist()
    digests = [int.from_bytes(hashlib.blake2b(c.encode(), digest_size=6).digest(), "big") for c in combos]
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    return pa.array((np.array(digests, dtype=np.int64) | USER_NAMESPACE)[codes]), codes


def _map(entries: list[tuple[str | pa.Array, pa.Array]], n: int) -> pa.MapArray:
    """A map column with one entry per (key, value column) pair in every row, built column-wise.

    A key given as a string is the same in every row: such keys are tiled straight into the key array's buffers
    (taking them from repeated string columns was most of the time of reading a campaign log).
    """
    k = len(entries)
    order = (np.arange(k)[None, :] * n + np.arange(n)[:, None]).ravel()  # row-major over the stacked columns
    values = pa.concat_arrays([value for _, value in entries]).take(order)
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    names = [key for key, _ in entries]
    if all(isinstance(key, str) for key in names):
        return pa.MapArray.from_arrays(offsets, _tiled([str(key) for key in names], n), values)
    keys = pa.concat_arrays([pa.repeat(key, n) if isinstance(key, str) else key for key in names])
    return pa.MapArray.from_arrays(offsets, keys.take(order), values)


def _tiled(names: list[str], n: int) -> pa.Array:
    """``names`` repeated ``n`` times as one string array, built from its buffers."""
    encoded = [name.encode() for name in names]
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    total = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    ends = (np.arange(n, dtype=np.int64)[:, None] * total + (starts + lengths)[None, :]).ravel()
    if n * total >= 2**31:
        raise ValueError(f"{n:,} rows of {total} key bytes overflow a string array; read the log in smaller blocks")
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    data = np.tile(np.frombuffer(b"".join(encoded), dtype=np.uint8), n)
    return pa.StringArray.from_buffers(n * len(names), pa.py_buffer(offsets), pa.py_buffer(data))


def _table(name: str, n: int, columns: dict[str, pa.Array | object]) -> pa.Table:
    """Exactly the canonical columns and types of ``name``: a scalar fills its column, an absent one is null.

    Built on the schema rather than through ``schema.conform``, which refuses a whole table for one null in a
    required column: here such a row must reach the contract and be quarantined on its own.
    """
    schema = TABLES[name]
    arrays = [columns.get(f.name, pa.nulls(n, f.type)) for f in schema]
    arrays = [
        a if isinstance(a, pa.Array) else pa.repeat(pa.scalar(a, f.type), n)
        for a, f in zip(arrays, schema, strict=True)
    ]
    return pa.Table.from_arrays([pc.cast(a, f.type) for a, f in zip(arrays, schema, strict=True)], schema=schema)


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


def _block_tables(campaign: Campaign, log: pa.Table, first_row: int) -> dict[str, tuple[pa.Table, np.ndarray]]:
    """Users, impressions and engagements of a block of a campaign log whose first row is data row
    ``first_row``, each with the 1-based data row of every row in the log (see the module docstring)."""
    lines = np.arange(first_row, first_row + log.num_rows)
    impressions, codes = _impressions(campaign, log, first_row)
    clicked = pc.equal(_column(log, "click"), 1).to_numpy(zero_copy_only=False)
    engagements = impressions.select(["ts", "user_id", "item_id", "request_id"]).filter(clicked)
    engagements = _table("engagements", engagements.num_rows, {**_columns(engagements), "action": "click"})
    users, first = _users(log, impressions, codes)
    return {
        "users": (users, lines[first]),
        "impressions": (impressions, lines),
        "engagements": (engagements, lines[clicked]),
    }


def _impressions(campaign: Campaign, log: pa.Table, first_row: int) -> tuple[pa.Table, np.ndarray]:
    """One impression per log row, and each row's index into the distinct user-feature combinations."""
    n = log.num_rows
    # OBD's unnamed row index, else the row's own place in the file (0-based, as OBD numbers them)
    index = _column(log, "") if "" in log.column_names else pa.array(np.arange(first_row - 1, first_row - 1 + n))
    user_id, codes = user_ids([_column(log, f) for f in USER_FEATURES])
    affinities = sorted((c for c in log.column_names if c.startswith(AFFINITY_PREFIX)), key=_suffix)
    columns = {
        "request_id": pc.binary_join_element_wise(campaign.request_prefix, pc.cast(index, pa.string()), ""),
        "ts": _column(log, "timestamp"),
        "user_id": user_id,
        "item_id": item_ids(campaign.campaign, _column(log, "item_id")),
        "surface": campaign.campaign,
        "position": _column(log, "position"),
        "country": COUNTRY,
        "model_version": campaign.policy,
        "propensity": _column(log, "propensity_score"),
        "served_features": _map([(c, pc.cast(_column(log, c), pa.float64())) for c in affinities], n),
    }
    return _table("impressions", n, columns), codes


def _users(log: pa.Table, impressions: pa.Table, codes: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """One user per user-feature combination, in order of first appearance (and the row of it).

    OBD has no sign-up time, so ``signup_at`` stays null: inventing one (the segment's first row in a file) gave
    negative tenures once the same segment appeared earlier in another campaign's file.
    """
    first = np.sort(np.unique(codes, return_index=True)[1])
    m = len(first)
    attributes = [(f, _column(log, f).take(first)) for f in USER_FEATURES]
    columns = {"user_id": _column(impressions, "user_id").take(first), "country": COUNTRY}
    columns["attributes"] = _map(attributes, m)
    return _table("users", m, columns), first


def _columns(table: pa.Table) -> dict[str, pa.Array]:
    return {name: _column(table, name) for name in table.column_names}


def _suffix(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _items(campaign: Campaign, context: pa.Table, created: pa.Scalar | None) -> pa.Table:
    """Items of a campaign: numeric context features as they are, hashed categories one-hot."""
    m = context.num_rows
    entries = []
    for name in sorted((c for c in context.column_names if c.startswith("item_feature_")), key=_suffix):
        column = _column(context, name)
        if pa.types.is_string(column.type):  # a hashed category: its value goes into the key
            key = pc.binary_join_element_wise(f"{name}=", pc.fill_null(column, ""), "")
            entries.append((key, pa.repeat(pa.scalar(1.0), m)))
        else:
            entries.append((name, pc.cast(column, pa.float64())))
    return _table(
        "items",
        m,
        {
            "item_id": item_ids(campaign.campaign, _column(context, "item_id")),
            "creator_id": UNKNOWN_CREATOR,
            "created_at": None if created is None else created.as_py(),
            "content": _map(entries, m),
            "safety_label": "safe",
        },
    )


def _unmap(column: pa.MapArray, keys: list[str] | None = None) -> dict[str, pa.Array]:
    """One column per key of a map column (all its keys by default), in one pass over the entries.

    ``pc.map_lookup`` rescans every map once per key: seconds for OBD's 80 affinities on 10,000 rows.
    """
    offsets = column.offsets.to_numpy()
    start, count = int(offsets[0]), int(offsets[-1] - offsets[0])
    names, values = column.keys.slice(start, count), column.items.slice(start, count)
    keys = pc.unique(names).to_pylist() if keys is None else keys
    slot = pc.fill_null(pc.index_in(names, value_set=pa.array(keys, pa.string())), -1).to_numpy()
    row = np.repeat(np.arange(len(column)), np.diff(offsets))
    entry = np.full((len(column), len(keys)), -1, dtype=np.int64)
    found = np.flatnonzero(slot >= 0)[::-1]  # written last to first: a key's first entry in a row wins
    entry[row[found], slot[found]] = found
    return {k: values.take(pa.array(entry[:, i], mask=entry[:, i] < 0)) for i, k in enumerate(keys)}


def ingest_open_bandit(
    path: str | Path,
    lake: Lake,
    quarantine_root: str | Path,
    now: dt.datetime | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[IngestReport]:
    """Ingest every campaign at or under ``path``: users, items, impressions, then engagements (orphan check).

    Each table goes through the same contract, quarantine, dedupe and lake path as
    ``homefeed ingest`` of a file, so the invariant rows in = written + duplicates +
    quarantined holds per report, and re-ingesting adds nothing.  A campaign's items go
    first, then each block of its log: its users, impressions and engagements; one report
    per table and campaign adds the blocks up.
    """
    now = now or dt.datetime.now(dt.UTC)
    campaigns = find_campaigns(path)
    for campaign in campaigns:  # refuse a bad header in any file before anything is written
        check_headers(campaign)
    reports = []
    for campaign in campaigns:
        blocks, created = log_blocks(campaign, chunk_bytes)
        items = _items(campaign, read_item_context(campaign.item_context), created)
        mine = {t: IngestReport(source=str(campaign.log), table=t) for t in ("users", "impressions", "engagements")}
        lines = np.arange(1, items.num_rows + 1)
        items_report = ingest_table(items, "items", lake, quarantine_root, campaign.item_context, now, lines)
        first_row = 1
        for log in blocks:
            for table, (rows, lines) in _block_tables(campaign, log, first_row).items():
                mine[table].add(ingest_table(rows, table, lake, quarantine_root, campaign.log, now, lines))
            first_row += log.num_rows
        reports += [mine["users"], items_report, mine["impressions"], mine["engagements"]]
    return reports


def bandit_feedback(lake: Lake, policy: str, campaign: str) -> pa.Table:
    """A campaign's logged bandit feedback from the lake, in OBD's own columns, one row per OBD row.

    Columns: ``row`` (OBD's row index), ``timestamp``, ``item_id`` (OBD's action id),
    ``position``, ``click``, ``propensity_score``, ``user_feature_0..3`` and the
    ``user-item_affinity_*`` columns: what off-policy estimators read.
    """
    prefix = f"obd-{policy}-{campaign}-"
    impressions = lake.read("impressions")
    mine = pc.and_(
        pc.starts_with(impressions["request_id"], prefix),
        pc.and_(pc.equal(impressions["surface"], campaign), pc.equal(impressions["model_version"], policy)),
    )
    impressions = impressions.filter(mine)
    engagements = lake.read("engagements")
    clicks = engagements.filter(
        pc.and_(pc.equal(engagements["action"], "click"), pc.starts_with(engagements["request_id"], prefix))
    )
    users = lake.read("users")
    row = pc.cast(pc.utf8_slice_codeunits(_column(impressions, "request_id"), len(prefix)), pa.int64())
    order = pc.sort_indices(row)  # the lake's order is by partition: back to OBD's row order
    rows, row = impressions.take(order), row.take(order)
    attributes = _column(users, "attributes").take(
        pc.index_in(_column(rows, "user_id"), value_set=_column(users, "user_id"))
    )
    served = _unmap(_column(rows, "served_features"))
    out = {
        "row": row,
        "timestamp": _column(rows, "ts"),
        "item_id": pa.array(obd_item_ids(_column(rows, "item_id").to_numpy())),
        "position": pc.cast(_column(rows, "position"), pa.int64()),
        "click": pc.cast(pc.is_in(_column(rows, "request_id"), value_set=_column(clicks, "request_id")), pa.int64()),
        "propensity_score": _column(rows, "propensity"),
        **_unmap(attributes, list(USER_FEATURES)),
        **{key: served[key] for key in sorted(served, key=_suffix)},
    }
    return pa.table(out)
