"""Categorical inputs: a category column holds strings (null where missing), and each model encodes it its own way.

The dataset, the offline join and the hydrated serving table keep a declared category as an Arrow string column
(:data:`homefeed.features.definitions.CATEGORY`); which columns are categories is read from the rows' types, so
the contract is the column's type and nothing else.  The GBDT codes them through a `Vocabulary` fitted on the
train split and saved with the model; the NN hashes them (:mod:`homefeed.train.nn`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.errors import HomefeedError

#: The code of every value a vocabulary does not hold: rarer than its threshold in training, unseen, or missing.
SHARED = 0


def is_category(kind: pa.DataType) -> bool:
    """Whether a column of this type holds categories (strings, or a dictionary of them)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def categorical_columns(rows: pa.Table, features: list[str]) -> list[str]:
    """The features of ``rows`` that hold categories, in ``features``' order."""
    present = set(rows.column_names)
    return [name for name in features if name in present and is_category(rows.schema.field(name).type)]


def _strings(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    return column.cast(pa.string()) if not pa.types.is_string(column.type) else column


@dataclass(frozen=True)
class Vocabulary:
    """Per categorical column, the values seen at least ``min_count`` times in training, coded 1..K.

    Codes go by training frequency (ties by value), so the commonest category is 1 whatever the row order.  A
    value seen fewer times, a value first seen at prediction and a missing one (null) all get `SHARED`, the one
    bucket a model learns for "a value it knows too little about": an unseen value at serving is never an error.
    """

    values: dict[str, tuple[str, ...]]
    min_count: int

    def __contains__(self, name: object) -> bool:
        return name in self.values

    @classmethod
    def fit(cls, rows: pa.Table, columns: list[str], min_count: int) -> Vocabulary:
        if min_count < 1:
            raise HomefeedError(f"a vocabulary keeps values seen at least once or more, not {min_count}")
        out = {}
        for name in columns:
            counts = pc.value_counts(_strings(rows[name]).combine_chunks())
            values = counts.field("values").to_pylist()
            n = counts.field("counts").to_numpy()
            kept = sorted((-int(c), v) for v, c in zip(values, n, strict=True) if v is not None and c >= min_count)
            out[name] = tuple(v for _, v in kept)
        return cls(out, min_count)

    def encode(self, name: str, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Each row's code (float32, as the model's input matrix holds it): 1..K, or `SHARED`."""
        known = self.values[name]
        if not known:
            return np.full(len(column), SHARED, np.float32)
        at = pc.index_in(_strings(column), value_set=pa.array(known, pa.string()))
        return (pc.fill_null(at, -1).to_numpy(zero_copy_only=False) + 1).astype(np.float32)

    def size(self, name: str) -> int:
        """Codes of the column, the shared bucket included."""
        return len(self.values[name]) + 1

    def to_json(self) -> dict:
        # a list of [column, values] pairs: the order is the columns', whatever JSON sorts
        return {"min_count": self.min_count, "columns": [[name, list(v)] for name, v in self.values.items()]}

    @classmethod
    def from_json(cls, data: dict) -> Vocabulary:
        return cls({name: tuple(values) for name, values in data["columns"]}, int(data["min_count"]))


__all__ = ["SHARED", "Vocabulary", "categorical_columns", "is_category"]
