"""The compression grid: gradual pruning, weight sharing, centroid fine-tuning and coding of every (model,
sparsity, bits) point, one row of ``results/compression_results.csv`` each.

Usage::

    config = CompressConfig(models=("mlp",), sparsities={"mlp": (0.95,)}, bits=((8, 5),))   # validated here
    csv_path = run_compression_sweep(config)       # the points not yet in the CSV; baselines reused from runs/

or one point: :func:`pruned_model` (cached in ``runs/compress/``), then :func:`compress_point` (baseline ->
pruned -> shared -> fine-tuned -> file -> decoded, every accuracy measured on decoded files) and
:func:`record_point`; from the shell: ``mnist-pruning compress --model mlp --sparsity 0.95 --bits-fc 5``
(``--sweep`` for the grid).
"""

from __future__ import annotations

import copy
import dataclasses
import lzma
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import zstandard
from torch import nn

from .. import __version__
from ..checks import _check_choice, _check_choices, _check_int, _check_ratio
from ..config import RunConfig
from ..data import MNISTData
from ..frontier import RECIPES, _check_recipe, _Recipe, _run_recipe
from ..models import MODEL_NAMES, build_model
from ..results import COMPRESSION, Schema
from ..runner import Study, _accuracies, _cached_model, _config_hash, _record, run_study
from ..schedules import gradual_prune
from ..sparsity.compact import _dense_file, _encode_compact, _position_bytes, load_compact
from ..sparsity.measure import sparsity as measured_sparsity
from ..sparsity.unstructured import bake_in
from ..sweep import BUDGETS
from ..train import TrainConfig, evaluate
from .coded import _CodedModel
from .fileformat import _load_coded, decode, encode, layer_table, load_model, save_coded, size_breakdown
from .limits import _information_limit
from .sharing import (
    _BIAS_DTYPES,
    _CODEBOOK_DTYPES,
    _bits_text,
    _check_bits,
    _snapshot,
    fine_tune_centroids,
    layer_bits,
    share_weights,
    unshare,
)

__all__ = [
    "CompressConfig",
    "pruned_model",
    "compress_point",
    "record_point",
    "run_compression_sweep",
]

# The grid of the full run: per model, the sparsities pruned (each pruned model is trained once and reused for
# every bits setting) and the (conv, fc) bits per index. The MLP has no convolution: only its fc bits vary. Sized
# for a 2-core machine (the README gives the grid's run time).
_SPARSITIES = {"mlp": (0.95, 0.98, 0.99), "cnn": (0.95, 0.99)}
_BITS = {"mlp": ((8, 5), (6, 4), (5, 3), (4, 2)), "cnn": ((8, 5), (6, 4), (5, 3))}
# Centroid fine-tuning: a short run at a low learning rate (the codebook has few, shared degrees of freedom).
_CENTROID_EPOCHS = {"mlp": 2, "cnn": 1}
_CENTROID_LR = 0.01
_ZSTD_LEVEL = 19
_LZMA_PRESET = 9 | lzma.PRESET_EXTREME


@dataclass
class CompressConfig(RunConfig):
    """What the compression grid does, with which budgets (folders, seeds and data: :class:`RunConfig`)."""

    models: tuple[str, ...] = MODEL_NAMES
    sparsities: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(_SPARSITIES))  # per model
    # (conv bits, fc bits) settings per model, or one tuple of settings for every model
    bits: dict[str, tuple[tuple[int, int], ...]] | tuple[tuple[int, int], ...] = field(
        default_factory=lambda: dict(_BITS)
    )
    per_layer: dict[str, int] = field(default_factory=dict)  # per-layer bits overriding bits (one model only)
    prune_epochs: dict[str, int] = field(default_factory=dict)  # gradual pruning; default sweep.BUDGETS frontier
    centroid_epochs: dict[str, int] = field(default_factory=dict)  # default CENTROID_EPOCHS
    centroid_lr: float = _CENTROID_LR
    codebook_dtype: str = "F32"  # shared values stored as F32 or F16
    bias_dtype: str = "float16"  # biases stored as float16 or float32
    recipes: dict[str, str] = field(default_factory=dict)  # per model, the frontier recipe that prunes
    # (mnist_pruning.frontier.RECIPES); a model without one: plain gradual pruning at the sweep's budget

    def __post_init__(self) -> None:
        super().__post_init__()
        for arch, name in self.recipes.items():
            _check_recipe(_check_choice(arch, MODEL_NAMES, "model"), name)
        self.models = _check_choices(self.models, MODEL_NAMES, "model")
        self.sparsities = {m: tuple(self.sparsities.get(m, _SPARSITIES[m])) for m in self.models}
        for m, values in self.sparsities.items():
            self.sparsities[m] = tuple(_check_ratio(s, "sparsity") for s in values)
        given = self.bits if isinstance(self.bits, Mapping) else dict.fromkeys(self.models, self.bits)
        self.bits = {
            m: tuple((_check_bits(c, "bits_conv"), _check_bits(f, "bits_fc")) for c, f in given.get(m, _BITS[m]))
            for m in self.models
        }
        for arch in self.models:
            layer_bits(arch, 8, 5, self.per_layer)
            for name, table in (("prune_epochs", self.prune_epochs), ("centroid_epochs", self.centroid_epochs)):
                if arch in table:
                    _check_int(table[arch], f"{name} of {arch!r}")
        _check_choice(self.codebook_dtype, _CODEBOOK_DTYPES, "codebook dtype")
        _check_choice(self.bias_dtype, tuple(_BIAS_DTYPES), "bias dtype")
        TrainConfig(epochs=1, lr=self.centroid_lr)

    def recipe(self, arch: str) -> _Recipe | None:
        """The frontier recipe that prunes ``arch`` (its epochs: :meth:`prune_config`'s), or None."""
        if arch not in self.recipes:
            return None
        return dataclasses.replace(RECIPES[arch][self.recipes[arch]], epochs=self.prune_config(arch).epochs)

    def prune_config(self, arch: str) -> TrainConfig:
        default = (
            RECIPES[arch][self.recipes[arch]].epochs if arch in self.recipes else BUDGETS[arch].frontier_epochs
        )
        epochs = self.prune_epochs.get(arch, default)
        lr = self.baseline_config(arch).lr
        return TrainConfig(epochs=epochs, lr=lr, seed=self.one_seed(), precision=self.precision)

    def centroid_config(self, arch: str) -> TrainConfig:
        epochs = self.centroid_epochs.get(arch, _CENTROID_EPOCHS[arch])
        return TrainConfig(epochs=epochs, lr=self.centroid_lr, seed=self.one_seed(), precision=self.precision)

    def hash(self, arch: str) -> str:
        """Everything that shapes ``arch``'s numbers (not the grid, not paths)."""
        key = {
            "baseline": self.baseline_config(arch).to_dict(),
            "prune": self.prune_config(arch).to_dict(),
            "centroids": self.centroid_config(arch).to_dict(),
            "per_layer": self.per_layer,
            "dtypes": [self.codebook_dtype, self.bias_dtype],
            "data": [self.subset, self.test_subset],
        }
        if arch in self.recipes:  # only then: the hashes of plain gradual pruning stay those of earlier rows
            key["recipe"] = self.recipe(arch).key()
        return _config_hash(key)

    def points(self) -> list[_CompressPoint]:
        """The grid's points; the MLP's duplicates (same fc bits) dropped."""
        out = []
        for arch in self.models:
            for s in self.sparsities[arch]:
                seen = []
                for conv, fc in self.bits[arch]:
                    bits = layer_bits(arch, conv, fc, self.per_layer)
                    if bits not in seen:
                        seen.append(bits)
                        out.append(_CompressPoint(arch, s, tuple(bits.items())))
        return out


@dataclass(frozen=True)
class _CompressPoint:
    """One point of the grid: a model pruned to a sparsity, its weights shared with these bits per layer."""

    model: str  # mlp | cnn
    sparsity: float  # requested fraction of weights removed
    bits: tuple[tuple[str, int], ...]  # (layer, bits per index), in layer order

    @property
    def label(self) -> str:
        return f"{self.model} {self.sparsity:g} {_bits_text(dict(self.bits))}"


@dataclass
class _CompressStudy(Study):
    """The compression grid as the runner runs it: points of one (model, sparsity) share one pruned model and
    run in one task; rows of :data:`mnist_pruning.results.COMPRESSION`."""

    config: CompressConfig
    schema: ClassVar[Schema] = COMPRESSION

    def points(self) -> list[_CompressPoint]:
        return self.config.points()

    def run_key(self, point: _CompressPoint) -> dict:
        bits = _bits_text(dict(point.bits))
        return {"model": point.model, "sparsity_target": point.sparsity, "bits": bits, "seed": self.config.seed}

    def hash(self, point: _CompressPoint) -> str:
        return self.config.hash(point.model)

    def group(self, point: _CompressPoint) -> tuple[str, float]:
        return point.model, point.sparsity

    def run(self, points: Sequence[_CompressPoint], base, info, data, progress) -> list[dict]:
        ((acc_baseline, _),) = info
        pruned = pruned_model(points[0].model, points[0].sparsity, base, data, self.config, progress)
        rows = []
        for point in points:
            row = compress_point(pruned, dict(point.bits), data, self.config, acc_baseline, progress).row
            if progress:
                print(
                    f"{point.label}: {row['size_coded_bytes']:,} bytes, error {100 * (1 - row['acc_test']):.2f} % "
                    f"({row['seconds']} s + pruning {row['prune_seconds']} s)"
                )
            rows.append(row)
            pruned.seconds = 0.0  # counted once, in the first row of this pruned model
        return rows


def _fixed_width_bytes(coded: _CodedModel, header: int) -> int:
    """Weight sharing without entropy coding: ``ceil(log2 k)``-bit indices, Elias-Fano positions (the compact
    format's), raw codebooks and biases, and the coded file's header."""
    total = header
    for layer in coded.layers.values():
        k = len(layer.codebook)
        total += math.ceil(layer.nnz * max(1, math.ceil(math.log2(k))) / 8) if k > 1 else 0
        total += _position_bytes("ef", layer.numel, layer.nnz) + layer.codebook.nbytes
    return total + sum(t.numel() * t.element_size() for t in coded.tensors.values())


def _other_compressors(dense: bytes, compact: bytes) -> dict[str, int]:
    z = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    return {
        "dense_zstd_bytes": len(z.compress(dense)),
        "dense_lzma_bytes": len(lzma.compress(dense, preset=_LZMA_PRESET)),
        "compact_zstd_bytes": len(z.compress(compact)),
        "compact_lzma_bytes": len(lzma.compress(compact, preset=_LZMA_PRESET)),
    }


@dataclass
class _PrunedModel:
    """A gradually pruned model (masks baked in, CPU) and how it was made."""

    model: nn.Module
    sparsity: float  # requested
    epochs: int
    seconds: float  # 0 when loaded from its file


def pruned_model(
    arch: str, sparsity: float, base: nn.Module, data, config: CompressConfig, progress: bool = True
) -> _PrunedModel:
    """Gradual global magnitude pruning of a copy of ``base`` to ``sparsity``; cached in
    ``<out_dir>/compress/<arch>_gradual_<sparsity>_seed<seed>.pt`` (reused when made with the same recipe)."""
    cfg = config.prune_config(arch)
    path = config.paths.runs / "compress" / f"{arch}_gradual_{sparsity:g}_seed{config.seed}.pt"
    recipe = {"baseline": config.baseline_config(arch).to_dict(), "prune": cfg.to_dict()}
    if arch in config.recipes:
        recipe["recipe"] = config.recipe(arch).key()
    key = {"recipe": recipe, "sparsity": sparsity, "data": [len(data.train_y), len(data.test_y)]}

    def make():
        device = next(base.parameters()).device
        recipe = config.recipe(arch)
        if recipe is None:
            result = gradual_prune(
                copy.deepcopy(base), data.to(device), "global", sparsity, cfg, progress=progress
            )
        else:
            result = _run_recipe(base, data.to(device), sparsity, recipe, config.baseline_config(arch), progress)
        make.seconds = result.seconds
        return bake_in(result.model).cpu(), result.history, {}

    make.seconds = 0.0
    what = f"the {arch} model pruned to {sparsity:g}"
    model, _, _ = _cached_model(path, cfg, {"key": key}, make, what, torch.device("cpu"))
    return _PrunedModel(model, sparsity, cfg.epochs, make.seconds)


@dataclass
class _CompressionResult:
    """One point: its CSV row, the coded file, and the decoded model."""

    row: dict
    path: Path  # the coded file
    model: nn.Module  # decoded from ``path``
    coded: _CodedModel


def compress_point(
    pruned: _PrunedModel,
    bits: Mapping[str, int],
    data,
    config: CompressConfig,
    acc_baseline: float,
    progress: bool = True,
) -> _CompressionResult:
    """Weight sharing, centroid fine-tuning and entropy coding of a copy of ``pruned``; the file is written to
    ``<out_dir>/compress/``, decoded, and every accuracy of the row is measured on decoded files."""
    arch = pruned.model.config.arch
    bits = layer_bits(pruned.model, per_layer=dict(bits))
    start = time.perf_counter()
    dense, compact = _dense_file(pruned.model), _encode_compact(pruned.model)
    as_loaded = build_model(pruned.model.config)
    as_loaded.load_state_dict(_load_compact_bytes(compact))
    acc_pruned = evaluate(as_loaded, data.test_x, data.test_y)["accuracy"]

    device = data.train_x.device
    model = copy.deepcopy(pruned.model).to(device)
    share_weights(model, bits, seed=config.seed, codebook_dtype=config.codebook_dtype)
    shared = decode(encode(_snapshot(model, config.bias_dtype))).model().to(device)
    acc_shared = evaluate(shared, data.test_x, data.test_y)["accuracy"]
    fine_tune_centroids(model, data, config.centroid_config(arch), progress=progress)
    coded = unshare(model, config.bias_dtype)
    folder = config.paths.runs / "compress"
    stem = f"{arch}_{pruned.sparsity:g}_{'-'.join(str(b) for b in bits.values())}_seed{config.seed}"
    if (config.codebook_dtype, config.bias_dtype) != ("F32", "float16"):
        stem += f"_{config.codebook_dtype}_{config.bias_dtype}"
    path = folder / f"{stem}.mnpz"
    size = save_coded(coded, path)
    data_bytes = path.read_bytes()
    decoded = load_model(path).to(device)
    acc_test, acc_val = _accuracies(decoded, data)
    parts = size_breakdown(data_bytes)
    layers = layer_table(data_bytes)
    loaded = _load_coded(path)
    row = COMPRESSION.row(
        model=arch,
        sparsity_target=f"{pruned.sparsity:.6g}",
        sparsity=measured_sparsity(decoded),
        bits=_bits_text(bits),
        codebook_entries=";".join(f"{r['layer'].removesuffix('.weight')}={r['codebook entries']}" for r in layers),
        position_coding=";".join(
            f"{r['layer'].removesuffix('.weight')}={r['positions coded as']}" for r in layers
        ),
        acc_baseline=acc_baseline,
        acc_pruned=acc_pruned,
        acc_shared=acc_shared,
        acc_test=acc_test,
        acc_val=acc_val,
        size_coded_bytes=size,
        ratio_vs_dense=len(dense) / size,
        bytes_values=parts["values"],
        bytes_positions=parts["positions"],
        bytes_codebooks=parts["codebooks"],
        bytes_biases=parts["biases"],
        bytes_header=parts["header"],
        limit_bytes=round(_information_limit(loaded)["total"], 1),
        size_fixed_bytes=_fixed_width_bytes(loaded, parts["header"]),
        size_dense_bytes=len(dense),
        size_compact_bytes=len(compact),
        **_other_compressors(dense, compact),
        prune_epochs=pruned.epochs,
        centroid_epochs=config.centroid_config(arch).epochs,
        prune_seconds=round(pruned.seconds, 1),
        seconds=round(time.perf_counter() - start, 1),
        seed=config.seed,
        config_hash=config.hash(arch),
        version=__version__,
    )
    return _CompressionResult(row, path, decoded.cpu(), loaded)


def _load_compact_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """A compact file's state_dict from its bytes (through a temporary file: safetensors reads paths)."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.safetensors"
        p.write_bytes(data)
        return load_compact(p)


def record_point(row: dict, config: CompressConfig) -> Path:
    """Append ``row`` to ``<results_dir>/compression_results.csv`` unless the same run is there; return it."""
    return _record(_CompressStudy(config), row)


def _compress_config_of(sweep_config: RunConfig, **overrides) -> CompressConfig:
    """The compression grid of a full run: the sweep's models, seeds, data, folders and baselines."""
    return CompressConfig(**{**sweep_config.run_settings(), "models": sweep_config.models, **overrides})


def run_compression_sweep(config: CompressConfig, progress: bool = True, data: MNISTData | None = None, **where):
    """Every point of ``config.points()`` (every seed) not yet in the CSV: the baseline (reused from ``runs/``),
    one gradual pruning per (model, sparsity), then every bits setting on it (:func:`~mnist_pruning.runner.
    run_study`; ``where``: its ``executor`` or ``workers``). Returns the CSV's path."""
    run_study(_CompressStudy(config), progress=progress, data=data, **where)
    return COMPRESSION.csv(config.paths.results)
