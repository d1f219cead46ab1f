"""Fault injection: the things that break in real logging pipelines, on purpose.

Faults change what is *logged*, never what happened (except a market shift,
which changes behaviour and lives in :mod:`homefeed.sim.behaviour`), so a
check or monitor can be tested against a known break on a known day.
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
        self, name: str, table: pa.Table, country: str | None, share: float, rng: np.random.Generator
    ) -> np.ndarray:
        mask = rng.random(table.num_rows) < share
        if country is not None:
            mask &= self._row_country(name, table) == self.world.countries.index(country)
        return mask

    def apply(self, name: str, table: pa.Table, day: int) -> pa.Table:
        """The table as the logging pipeline would record it on ``day``."""
        for i, fault in enumerate(self.settings.faults):
            if getattr(fault, "from_day", None) is None or day < fault.from_day or table.num_rows == 0:
                continue
            if isinstance(fault, CoverageDrop) and fault.table == name:
                mask = self._segment(name, table, fault.country, fault.share, self._rng(i, day, name))
                column = table[fault.column]
                nulls = pa.nulls(table.num_rows, column.type)
                idx = table.schema.get_field_index(fault.column)
                table = table.set_column(idx, table.field(idx), pc.if_else(pa.array(mask), nulls, column))
            elif isinstance(fault, VolumeDrop) and fault.table == name:
                mask = self._segment(name, table, fault.country, fault.share, self._rng(i, day, name))
                table = table.filter(pa.array(~mask))
            elif isinstance(fault, LoggingChange) and name == "engagements":
                hit = pc.equal(table["action"], fault.action)
                if fault.rename_to is None:
                    table = table.filter(pc.invert(hit))
                else:
                    idx = table.schema.get_field_index("action")
                    renamed = pc.if_else(hit, pa.scalar(fault.rename_to), table["action"])
                    table = table.set_column(idx, table.field(idx), renamed)
        return table

    def delayed(self, name: str, table: pa.Table, day: int) -> list[tuple[int, pa.Table]]:
        """Split off the rows of ``day`` that arrive late: [(arrival_day, rows)], the on-time rows first."""
        out: list[tuple[int, pa.Table]] = []
        for i, fault in enumerate(self.settings.faults):
            if isinstance(fault, DelayedArrival) and fault.day == day and table.num_rows:
                late = self._rng(i, day, name).random(table.num_rows) < fault.share
                out.append((day + fault.delay_days, table.filter(pa.array(late))))
                table = table.filter(pa.array(~late))
        return [(day, table), *out]
