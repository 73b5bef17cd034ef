"""Take a model out of PyTorch: ONNX export, checked and timed in onnxruntime next to eager PyTorch.

Usage (needs the ``onnx`` extra: ``pip install -e ".[onnx]"``, i.e. onnx, onnxruntime, onnxscript)::

    from mnist_pruning import export
    export.onnx_missing()                                  # None, or which packages are missing
    path = export.export_onnx(model, "runs/mlp.onnx")      # input "x" with a dynamic batch, output "logits"
    table = export.onnx_report({"dense": base, "structured 0.5": small}, "runs/onnx")
    export.speedup_vs_flops(table, base, small, "dense", "structured 0.5")

:func:`onnx_report` exports each model (``torch.onnx.export``, the dynamo exporter), checks that onnxruntime's
outputs are ``allclose`` to PyTorch's (a mismatch raises, naming the model), and measures what a user ships and
what it costs to run: the file's bytes, its bytes after ``zlib -9``, the fraction of stored floats that are
exactly zero, and the median latency at each batch size in eager PyTorch and in onnxruntime (best of
``timing.rounds`` alternating rounds, the same threads for both).

What the files hold: ONNX stores each weight tensor dense. An unstructured (baked-in) model's file therefore
keeps every zero: it is as large as the dense file, smaller only once compressed, and onnxruntime multiplies the
zeros like any other weight. A structured (surgered) model's graph has smaller tensors: a smaller file and less
work in either runtime. ``bench/sparse_speed.py`` and chapter 03 use this module.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from .files import _atomic_write, _check_writable_dir
from .models import SAMPLE_SHAPE
from .sparsity.measure import Timing, flops, time_models

__all__ = ["onnx_missing", "export_onnx"]
__all__ += ["onnx_report", "speedup_vs_flops"]

_ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # the onnx extra (the dynamo exporter needs onnxscript)


def onnx_missing() -> str | None:
    """None if the onnx extra is installed, else the missing packages, comma-separated."""
    missing = [name for name in _ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    return ", ".join(missing) or None


def _require_onnx() -> None:
    missing = onnx_missing()
    if missing:
        raise ModuleNotFoundError(f"ONNX export needs {missing}: pip install -e '.[onnx]'")


def _check_exportable(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected an nn.Module, got {type(model).__name__}")
    masked = [
        name or type(model).__name__
        for name, m in model.named_modules()
        if any(isinstance(h, prune.BasePruningMethod) for h in m._forward_pre_hooks.values())
    ]
    if masked:  # the graph would store weight_orig and weight_mask and multiply them on every run
        raise ValueError(f"layer(s) {masked} still carry pruning masks: call mnist_pruning.sparsity.bake_in first")


def export_onnx(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model`` (MNIST input, any batch size) as an ONNX file at ``path``, atomically; return the path.
    Input ``x`` of shape (batch, 1, 28, 28), output ``logits``."""
    _require_onnx()
    _check_exportable(model)
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (torch.randn(2, *SAMPLE_SHAPE),),
        dynamo=True,
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: batch}},
        verbose=False,
    )
    path = Path(path)
    _check_writable_dir(path.parent)
    with _atomic_write(path) as tmp:
        program.save(str(tmp))
    return path


def _zero_fraction(path: str | os.PathLike) -> tuple[int, float]:
    """Floats stored in the file's initializers (its weights), and the fraction of them exactly zero."""
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    floats = sum(a.size for a in arrays if a.dtype.kind == "f")
    zeros = sum(int((a == 0).sum()) for a in arrays if a.dtype.kind == "f")
    return floats, zeros / floats if floats else 0.0


def _ort_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session of the file, with ``threads`` intra-op threads (default: torch's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()  # the same budget as eager
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_call(session) -> Callable[[dict], object]:
    """``session.run`` on a ready feed ``{"x": array}``: what is timed of an onnxruntime session."""
    return functools.partial(session.run, None)


def _images(batch: int) -> torch.Tensor:
    """``batch`` random MNIST-shaped images, from a private generator (the global RNG is left alone)."""
    return torch.randn(batch, *SAMPLE_SHAPE, generator=torch.Generator().manual_seed(0))


def _ort_feed(batch: int) -> dict:
    return {"x": _images(batch).numpy()}


def _ort_latency_ms(session, batch: int, min_run_time: float = 0.2) -> float:
    """Median ms of one ``session.run`` on a random batch of ``batch`` MNIST-shaped images (one round of
    :func:`~mnist_pruning.sparsity.measure.time_models`)."""
    timing = Timing(rounds=1, min_run_time=min_run_time, batches=(batch,))
    ms = time_models({"ort": _ort_call(session)}, timing, inputs=lambda _, b: _ort_feed(b))
    return ms["ort"][batch].best_ms


def onnx_report(
    models: Mapping[str, nn.Module],
    folder: str | os.PathLike,
    timing: Timing | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
):
    """Export every model of ``models`` (name -> baked-in or surgered model) to ``<folder>/<name>.onnx``, check
    onnxruntime against PyTorch, and return a pandas DataFrame indexed by name: ``bytes``, ``zlib_bytes``,
    ``zero_pct`` (of the stored floats), ``max_abs_diff``, ``eager_b<B>_ms`` and ``ort_b<B>_ms`` for each batch
    size of ``timing``. Eager PyTorch runs in ``memory_format`` (the faster one for a CNN; see
    :func:`mnist_pruning.speed.pick_format`). Raises if onnxruntime's outputs are not ``allclose`` to PyTorch's."""
    import pandas as pd

    _require_onnx()
    timing = timing or Timing()
    for model in models.values():
        _check_exportable(model)
    folder = _check_writable_dir(folder)
    rows, sessions, eager = {}, {}, {}
    for name, model in models.items():
        path = export_onnx(model, folder / f"{name.replace(' ', '_').replace(':', 'of')}.onnx")
        sessions[name] = _ort_session(path)
        eager[name] = copy.deepcopy(model).eval().to(memory_format=memory_format)
        x = torch.randn(7, *SAMPLE_SHAPE)
        with torch.inference_mode():
            expected = eager[name](x)
        got = torch.from_numpy(sessions[name].run(None, {"x": x.numpy()})[0])
        diff = float((got - expected).abs().max())
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"{name}: onnxruntime's outputs differ from PyTorch's by up to {diff:g}")
        data = path.read_bytes()
        floats, zeros = _zero_fraction(path)
        rows[name] = {
            "bytes": len(data),
            "zlib_bytes": len(zlib.compress(data, 9)),
            "floats": floats,
            "zero_pct": 100 * zeros,
            "max_abs_diff": diff,
        }
    # One round times, per batch size, every model eagerly and then in onnxruntime (mapping order), alternately.
    calls: dict[tuple[str, str], Callable] = {}
    for name in models:
        calls[name, "eager"], calls[name, "ort"] = eager[name], _ort_call(sessions[name])

    def inputs(key: tuple[str, str], batch: int):
        return _ort_feed(batch) if key[1] == "ort" else _images(batch)

    for (name, runtime), per_b in time_models(calls, timing, inputs=inputs).items():
        for b, latency in per_b.items():
            rows[name][f"{runtime}_b{b}_ms"] = latency.best_ms  # noise only adds time
    return pd.DataFrame.from_dict(rows, orient="index")


def speedup_vs_flops(report, dense_model: nn.Module, small_model: nn.Module, dense: str, small: str) -> dict:
    """Chapter 03's structured goal per runtime: (latency speedup of ``small`` over ``dense`` at the largest
    batch of ``report``) / (their FLOP reduction); the goal is >= 0.7 in either runtime."""
    reduction = flops(dense_model, SAMPLE_SHAPE) / flops(small_model, SAMPLE_SHAPE)
    big = max(int(c.split("_b")[1].removesuffix("_ms")) for c in report.columns if c.startswith("eager_b"))
    out = {"batch": big, "flop_reduction": reduction}
    for runtime in ("eager", "ort"):
        speedup = report.loc[dense, f"{runtime}_b{big}_ms"] / report.loc[small, f"{runtime}_b{big}_ms"]
        out[runtime] = {"speedup": float(speedup), "ratio": float(speedup / reduction)}
    return out
