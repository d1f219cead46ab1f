"""Training: the dataset builder (labels, sampling, versioned snapshots); models and the registry come next.

``build_dataset(load_spec(settings, "dataset.toml"), settings)`` turns the lake's impressions and engagements
and the ETL's feature snapshots into ``<paths.datasets>/<id>/{train,validation,test}.parquet`` + ``manifest.json``.
"""

from homefeed.train.dataset import BUILDER_VERSION, Built, build_dataset
from homefeed.train.snapshots import DatasetDiff, DatasetStore, diff
from homefeed.train.spec import SPLITS, DatasetError, DatasetSpec, load_spec, split_days

__all__ = [
    "BUILDER_VERSION",
    "SPLITS",
    "Built",
    "DatasetDiff",
    "DatasetError",
    "DatasetSpec",
    "DatasetStore",
    "build_dataset",
    "diff",
    "load_spec",
    "split_days",
]
