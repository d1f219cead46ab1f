"""Public sample data shipped inside the package, so a first ingest, the examples and the tests need nothing else.

In the spirit of ``sklearn.datasets``: real public data, small enough to ship, found by name wherever homefeed is
installed (a clone, an editable install, a wheel). Not to be confused with the training datasets of ``train/``
(``homefeed dataset build``), which are built from a project's own lake.

Each sample keeps its license and attribution in its folder:

- ``open_bandit/``: the Open Bandit Dataset's uniform-random sample (ZOZO, Inc., CC BY 4.0; see its README):
  campaigns ``all``, ``men`` and ``women``, 10,000 logged impressions each, as obp ships them. Gzip-compressed:
  12.2 MB of CSV in 0.53 MB; :mod:`homefeed.data.open_bandit` and Arrow read ``.csv.gz`` as they read ``.csv``.
"""

from __future__ import annotations

from pathlib import Path

from homefeed.errors import DamagedStateError, HomefeedError

#: The Open Bandit sample's root: ``random/<campaign>/<campaign>.csv.gz`` and ``item_context.csv.gz`` below it.
OPEN_BANDIT_ROOT = Path(__file__).resolve().parent / "open_bandit"
#: The names :func:`open_bandit_sample` takes: the logging policy's folder (every campaign) or one campaign's.
OPEN_BANDIT_SAMPLES: tuple[str, ...] = ("random", "random/all", "random/men", "random/women")


class SampleError(HomefeedError, ValueError):
    """An unknown sample name."""


def open_bandit_sample(name: str = "random") -> Path:
    """The folder of a bundled Open Bandit sample, ready for ``ingest_open_bandit`` or ``homefeed ingest``.

    ``name`` is one of :data:`OPEN_BANDIT_SAMPLES`: ``"random"`` holds all three campaigns, ``"random/men"`` one.
    """
    if name not in OPEN_BANDIT_SAMPLES:
        raise SampleError(f"no bundled Open Bandit sample {name!r}; expected one of {', '.join(OPEN_BANDIT_SAMPLES)}")
    path = OPEN_BANDIT_ROOT / name
    if not path.is_dir():
        raise DamagedStateError(f"the bundled Open Bandit sample is missing at {path}; reinstall homefeed")
    return path
