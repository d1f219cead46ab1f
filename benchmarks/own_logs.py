"""Your own logs (issue 20): ingesting a big Open Bandit-shaped log in bounded memory.

**streaming**: the bundled ``random/men`` sample (10,000 rows, 34 user-item affinities a row) tiled into one
campaign log of ``--rows`` rows (row indices renumbered, so every row is a distinct impression; about 330
bytes a row as CSV), then ingested by ``homefeed ingest --format open-bandit``'s code path in a fresh process
(:func:`common.isolated`), so its peak resident memory is the ingest's own.  Each size is measured, so a peak
that does not grow with the rows shows the memory is bounded by the chunk, not the file.  Target: 5 million
rows under 2 GB.

Figures are printed, never asserted.

    python benchmarks/own_logs.py [--rows 1000000,5000000] [--chunk-mib 32]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from common import isolated, pin

TARGET_PEAK_BYTES = 2 * 1024**3
SAMPLE_ROWS = 10_000


def generate(folder: Path, rows: int) -> dict:
    """``<folder>/random/men/men.csv`` of ``rows`` rows, the sample tiled with each row's index its own."""
    from homefeed.datasets import open_bandit_sample

    sample = open_bandit_sample("random/men")
    campaign = folder / "random" / "men"
    campaign.mkdir(parents=True)
    with gzip.open(sample / "item_context.csv.gz", "rb") as src, (campaign / "item_context.csv").open("wb") as out:
        shutil.copyfileobj(src, out)
    text = gzip.decompress((sample / "men.csv.gz").read_bytes()).decode("utf-8").splitlines()
    header, body = text[0], [line.split(",", 1)[1] for line in text[1:]]
    start = time.perf_counter()
    with (campaign / "men.csv").open("w", encoding="utf-8", newline="") as out:
        out.write(header + "\n")
        for base in range(0, rows, len(body)):
            n = min(len(body), rows - base)
            out.write("".join(f"{base + i},{body[i]}\n" for i in range(n)))
    path = campaign / "men.csv"
    return {"rows": rows, "bytes": path.stat().st_size, "seconds": time.perf_counter() - start}


def bench_ingest(folder: Path, lake_root: Path, chunk_bytes: int) -> dict:
    """One campaign log of the generated size into a fresh lake; the books of every table."""
    from homefeed.data.lake import Lake
    from homefeed.data.open_bandit import ingest_open_bandit

    start = time.perf_counter()
    reports = ingest_open_bandit(
        folder, Lake(lake_root / "lake"), lake_root / "q", dt.datetime.now(dt.UTC), chunk_bytes=chunk_bytes
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "tables": {r.table: (r.rows_in, r.written, r.duplicates, r.quarantined) for r in reports},
        "balanced": all(r.balanced for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated sizes of the generated log")
    parser.add_argument("--chunk-mib", type=int, default=32, help="bytes of CSV ingested at a time, in MiB")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    pin(args.cores)
    print(f"machine: {platform.machine()}, {args.cores} cores, Python {platform.python_version()}")
    for rows in (int(r) for r in args.rows.split(",")):
        with tempfile.TemporaryDirectory(prefix="own-logs-") as tmp:
            made = generate(Path(tmp) / "obd", rows)
            load = os.getloadavg()[0]
            got = isolated(bench_ingest, Path(tmp) / "obd", Path(tmp) / "out", args.chunk_mib << 20)
            impressions = got["tables"]["impressions"]
            peak = got["peak_rss"]
            print(
                f"streaming ingest, {rows:,} rows ({made['bytes'] / 1024**2:,.0f} MiB of CSV, generated in "
                f"{made['seconds']:.1f} s), chunks of {args.chunk_mib} MiB, load average {load:.1f} at the start"
            )
            print(
                f"  {got['seconds']:.1f} s ({impressions[1] / got['seconds']:,.0f} impressions/s); "
                f"peak resident memory {peak / 1024**3:.2f} GiB (target < {TARGET_PEAK_BYTES / 1024**3:.0f} GiB: "
                f"{'met' if peak < TARGET_PEAK_BYTES else 'NOT met'})"
            )
            for table, (rows_in, written, duplicates, quarantined) in got["tables"].items():
                books = f"in {rows_in:>10,}  written {written:>10,}  dup {duplicates:>9,}  q {quarantined:,}"
                print(f"  {table:<12} {books}")
            print(f"  books balance (rows in = written + duplicates + quarantined): {got['balanced']}")


if __name__ == "__main__":
    main()
