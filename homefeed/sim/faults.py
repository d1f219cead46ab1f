"""Fault injection: the things that break in real logging pipelines, on purpose.

Faults change what is *logged*, never what happened (except a market shift,
which changes behaviour and lives in :mod:`homefeed.sim.behaviour`), so a
check or monitor can be tested against a known break on a known day.  Any
fault on impressions or engagements can be scoped to a surface or to one arm
of an experiment (``surface``, ``experiment`` + ``arm``): a logging bug that
ships with one arm is how an A/B test goes wrong.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.config import ConfigError, CoverageDrop, DelayedArrival, LoggingChange, SimSettings, VolumeDrop
from homefeed.schema import TABLES
from homefeed.sim.world import World


class Faults:
    """The configured logging faults, applied to one day's canonical tables at a time."""

    def __init__(self, settings: SimSettings, world: World):
        self.settings = settings
        self.world = world
        for i, fault in enumerate(settings.faults):
            if isinstance(fault, CoverageDrop):
                schema = TABLES[fault.table]
                if fault.column not in schema.names:
                    raise ConfigError(f"sim.faults[{i}].column: {fault.table} has no column {fault.column!r}")
                if fault.table == "items" and fault.country is not None:
                    raise ConfigError(f"sim.faults[{i}].country: items have no market; leave country unset")
                if not schema.field(fault.column).nullable:
                    raise ConfigError(
                        f"sim.faults[{i}].column: {fault.table}.{fault.column} is required and cannot go missing"
                    )

    def _rng(self, index: int, day: int, table: str) -> np.random.Generator:
        return np.random.default_rng([self.settings.seed, 4, index, day, sorted(TABLES).index(table)])

    def _row_country(self, name: str, table: pa.Table) -> np.ndarray:
        """Market index of each row (-1 where unknown), to select a segment."""
        if "user_id" in table.column_names:  # users, impressions, engagements
            return self.world.user_country[table["user_id"].to_numpy()].astype(np.int64)
        return np.full(table.num_rows, -1)

    def _segment(
        self, name: str, table: pa.Table, fault: object, share: float, rng: np.random.Generator, scope: pa.Table | None
    ) -> np.ndarray:
        mask = rng.random(table.num_rows) < share
        country = getattr(fault, "country", None)
        if country is not None:
            mask &= self._row_country(name, table) == self.world.countries.index(country)
        return mask & in_scope(fault, scope, table.num_rows)

    def apply(self, name: str, table: pa.Table, day: int, scope: pa.Table | None = None) -> pa.Table:
        """The table as the logging pipeline would record it on ``day``.

        ``scope`` holds each row's ``surface`` and ``experiments`` (impressions carry their own; an engagement's
        are its impression's), for faults scoped to a surface or an arm.
        """
        return self.apply_scoped(name, table, day, scope)[0]

    def apply_scoped(
        self, name: str, table: pa.Table, day: int, scope: pa.Table | None = None
    ) -> tuple[pa.Table, pa.Table | None]:
        """:meth:`apply`, also returning the scope rows of the rows kept."""
        if scope is None and name == "impressions":
            scope = table
        for i, fault in enumerate(self.settings.faults):
            if getattr(fault, "from_day", None) is None or day < fault.from_day or table.num_rows == 0:
                continue
            if isinstance(fault, CoverageDrop) and fault.table == name:
                mask = self._segment(name, table, fault, fault.share, self._rng(i, day, name), scope)
                column = table[fault.column]
                nulls = pa.nulls(table.num_rows, column.type)
                idx = table.schema.get_field_index(fault.column)
                table = table.set_column(idx, table.field(idx), pc.if_else(pa.array(mask), nulls, column))
            elif isinstance(fault, VolumeDrop) and fault.table == name:
                mask = self._segment(name, table, fault, fault.share, self._rng(i, day, name), scope)
                table, scope = _keep(table, scope, ~mask)
            elif isinstance(fault, LoggingChange) and name == "engagements":
                hit = pc.and_(pc.equal(table["action"], fault.action), pa.array(in_scope(fault, scope, len(table))))
                if fault.rename_to is None:
                    table, scope = _keep(table, scope, ~hit.to_numpy(zero_copy_only=False))
                else:
                    idx = table.schema.get_field_index("action")
                    renamed = pc.if_else(hit, pa.scalar(fault.rename_to), table["action"])
                    table = table.set_column(idx, table.field(idx), renamed)
        return table, scope

    def delayed(
        self, name: str, table: pa.Table, day: int, scope: pa.Table | None = None
    ) -> list[tuple[int, pa.Table]]:
        """Split off the rows of ``day`` that arrive late: [(arrival_day, rows)], the on-time rows first."""
        if scope is None and name == "impressions":
            scope = table
        out: list[tuple[int, pa.Table]] = []
        for i, fault in enumerate(self.settings.faults):
            if isinstance(fault, DelayedArrival) and fault.day == day and table.num_rows:
                late = self._rng(i, day, name).random(table.num_rows) < fault.share
                late &= in_scope(fault, scope, table.num_rows)
                out.append((day + fault.delay_days, table.filter(pa.array(late))))
                table, scope = _keep(table, scope, ~late)
        return [(day, table), *out]


def in_scope(fault: object, scope: pa.Table | None, n: int) -> np.ndarray:
    """Rows on the fault's surface and in its experiment arm (all rows for an unscoped fault)."""
    mask = np.ones(n, bool)
    surface, experiment = getattr(fault, "surface", None), getattr(fault, "experiment", None)
    if scope is None or (surface is None and experiment is None):
        return mask
    if surface is not None:
        mask &= scope["surface"].to_numpy(zero_copy_only=False) == surface
    if experiment is not None:
        arm = pc.map_lookup(scope["experiments"], pa.scalar(experiment), "first")
        if fault.arm is None:
            mask &= pc.is_valid(arm).to_numpy(zero_copy_only=False)
        else:
            mask &= pc.fill_null(pc.equal(arm, fault.arm), False).to_numpy(zero_copy_only=False)
    return mask


def _keep(table: pa.Table, scope: pa.Table | None, mask: np.ndarray) -> tuple[pa.Table, pa.Table | None]:
    keep = pa.array(mask)
    kept = table.filter(keep)
    if scope is None:
        return kept, None
    return kept, kept if scope is table else scope.filter(keep)
