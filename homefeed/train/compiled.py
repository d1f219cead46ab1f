"""Compiled trees for serving: a LightGBM text model turned into native code by lleaves (LLVM), with a fallback.

Why: serving scores a few hundred candidates per request, and LightGBM's own ``predict`` of 500 rows through 300
trees takes 2.5–5 ms here, most of the request's budget; the same forest compiled by lleaves takes about 1 ms
(2-core x86_64, measured in ``benchmarks/serving.py``) and gives the same raw scores (to 1e-12: a test checks it).
Why not our own: lleaves reads LightGBM's text format, categorical splits included, and emits LLVM IR through
llvmlite, which ships LLVM in its wheel, so no C compiler is needed on the serving machine (treelite/tl2cgen need
one).

Compiling takes 10–40 s per head, so it is done once per model text and CPU and cached on disk (the key is the
text's SHA-256, the CPU's name and features and the lleaves version; the object file is written to a temporary
name and renamed, so two workers compiling at once never read half a file).  Until a head is compiled, or where
lleaves or LLVM is missing or compiling fails, LightGBM predicts: the caller gets a reason, never an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger("homefeed.train")

Predict = Callable[[np.ndarray], np.ndarray]


def _backend() -> tuple[object, object] | str:
    """lleaves and llvmlite's binding, or why not."""
    try:
        import lleaves
        import llvmlite.binding as llvm
    except ImportError as exc:
        return f"lleaves is not installed ({exc.name}); LightGBM predicts"
    return lleaves, llvm


def cache_key(text: str) -> str:
    """The cache file's name for a model text on this machine: object code is specific to the CPU it targets."""
    backend = _backend()
    if isinstance(backend, str):
        return ""
    _, llvm = backend
    from importlib.metadata import version

    cpu = f"{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}|{version('lleaves')}"
    return hashlib.sha256(text.encode() + b"\0" + cpu.encode()).hexdigest()[:32]


def compile_forest(text: str, cache: Path | None = None) -> Predict | str:
    """A function from a float matrix (rows x features) to the forest's raw scores, or the reason there is none.

    ``cache``: a folder for compiled object files (created if missing); None compiles without keeping the result.
    """
    backend = _backend()
    if isinstance(backend, str):
        return backend
    lleaves, _ = backend
    try:
        with tempfile.TemporaryDirectory(prefix="homefeed-compile-") as tmp:
            source = Path(tmp) / "model.txt"
            source.write_text(text, encoding="utf-8")
            model = lleaves.Model(model_file=str(source))
            if cache is None:
                model.compile(raw_score=True)
            else:
                cache.mkdir(parents=True, exist_ok=True)
                final = cache / f"{cache_key(text)}.o"
                if final.exists():
                    model.compile(cache=str(final), raw_score=True)
                else:
                    partial = Path(tmp) / "forest.o"  # lleaves writes its cache file in place: rename when whole
                    model.compile(cache=str(partial), raw_score=True)
                    staged = cache / f".{final.name}.{os.getpid()}.tmp"
                    staged.write_bytes(partial.read_bytes())
                    os.replace(staged, final)
    except Exception as exc:  # LLVM errors come in many types; any of them means: LightGBM predicts
        log.warning("compiling the trees failed, LightGBM predicts: %s: %s", type(exc).__name__, exc)
        return f"compiling failed ({type(exc).__name__}: {exc}); LightGBM predicts"
    n_features = model.num_feature()
    entry = _entry(model)

    def predict(x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != n_features:
            raise ValueError(f"the compiled forest reads {n_features} features, got a matrix of shape {x.shape}")
        x = np.ascontiguousarray(x, np.float64)
        if entry is None:
            return model.predict(x, n_jobs=1)
        out = np.zeros(len(x), np.float64)
        entry(x.ctypes.data, out.ctypes.data, 0, len(x))  # the GIL is released while the trees run
        return out

    return predict


def _entry(model: object) -> Callable[[int, int, int, int], None] | None:
    """The forest's native function, called with plain addresses; None where lleaves' layout is not the known one.

    Why not ``model.predict``: it passes its arrays through ``ndarray.ctypes.data_as``, whose ``ctypes.cast`` makes
    a reference cycle per array, so every request left its input matrix (~200 KB) and scores for the garbage
    collector, and a third of a request's young objects were these.
    """
    import ctypes

    func = getattr(model, "_c_entry_func", None)
    if func is None or not getattr(model, "use_fp64", False) or getattr(model, "_n_classes", None) != 1:
        return None
    by_address = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)
    return ctypes.cast(func, by_address)
