"""Train/serve skew: what the model saw when serving vs what the offline join says it should have seen.

The ranking service logs, for a sample of impressions, the feature vector it
scored (``impressions.served_features``).  Recomputing those rows through the
point-in-time join must give the same values; a feature that differs was
computed differently online (a changed transform, a stale cache, a default
applied on one side only) and the model is being served inputs it never
learned from.  Per feature we report the share of rows that disagree beyond a
tolerance and the distribution distance (PSI and Jensen–Shannon over the
offline values' quantile bins), and flag features beyond the thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.config import FeatureSettings
from homefeed.data import drift
from homefeed.data.lake import Lake
from homefeed.features.definitions import FeatureError, FeatureSet, at_impression, is_categorical
from homefeed.features.pit import join_frame


@dataclass(frozen=True)
class SkewThresholds:
    tolerance: float = 1e-4  # relative (and absolute near zero) difference still counted as equal
    mismatch_share: float = 0.01  # more disagreeing rows than this flags the feature
    psi: float = 0.1  # or a distribution this far from the offline one

    @classmethod
    def from_settings(cls, s: FeatureSettings) -> SkewThresholds:
        return cls(s.skew_tolerance, s.skew_mismatch_share, s.skew_psi)


@dataclass(frozen=True)
class FeatureSkew:
    feature: str
    rows: int  # sampled impressions that logged this feature
    mismatch_share: float
    mean_served: float
    mean_offline: float
    psi: float
    js: float
    flagged: bool

    @property
    def reason(self) -> str:
        if not self.flagged:
            return ""
        return (
            f"{self.mismatch_share:.1%} of rows differ; PSI {self.psi:.3f}; "
            f"mean {self.mean_served:.4g} served vs {self.mean_offline:.4g} offline"
        )


def skew(
    impressions: pa.Table,
    fs: FeatureSet,
    etl: Lake,
    lake: Lake,
    thresholds: SkewThresholds | None = None,
) -> list[FeatureSkew]:
    """Compare each logged feature of ``fs`` with its point-in-time value; impressions without a log are skipped."""
    t = thresholds or SkewThresholds()
    # A declared feature of the impression is computed from the same logged columns on both sides (tested equal);
    # the skew check is about snapshots served against snapshots joined.
    fs = FeatureSet(fs.name, tuple(f for f in fs.features if not at_impression(f)), fs.missing_flags)
    logged = impressions.filter(pc.is_valid(impressions["served_features"]))
    if logged.num_rows == 0:
        raise FeatureError("no impressions with served_features: the service logs them for a sample of requests")
    keyed = logged.append_column("_row", pa.array(np.arange(logged.num_rows), pa.int64()))
    con = duckdb.connect()
    try:
        offline = join_frame(fs, etl, lake, keyed.select(["request_id", "ts", "user_id", "item_id", "_row"]), con)
        offline_rows = offline.order("_row").to_arrow_table()
    finally:
        con.close()
    served = keyed["served_features"]
    out = []
    coded = {f.name for f in fs.features if is_categorical(f)}  # logged as their store codes, not comparable
    for name in fs.columns:
        if name in coded:
            continue
        present = pc.map_lookup(served, pa.scalar(name), "first")
        mask = pc.is_valid(present).to_numpy(zero_copy_only=False)
        if not mask.any():
            continue
        a = pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False)[mask]
        b = offline_rows[name].to_numpy(zero_copy_only=False).astype(np.float64)[mask]
        differs = np.abs(a - b) > t.tolerance * np.maximum(1.0, np.abs(b))
        edges = drift.quantile_edges(b, 10)
        p, q = drift.histogram(a, edges), drift.histogram(b, edges)
        psi, js = drift.psi(p, q), drift.js_distance(p, q)
        share = float(differs.mean())
        out.append(
            FeatureSkew(
                name,
                int(mask.sum()),
                share,
                float(a.mean()),
                float(b.mean()),
                psi,
                js,
                share > t.mismatch_share or psi > t.psi,
            )
        )
    if not out:
        raise FeatureError(f"the logged served_features name none of feature set {fs.name!r}'s features")
    return out
