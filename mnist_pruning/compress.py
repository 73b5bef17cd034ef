"""Deep Compression on a pruned model: k-means weight sharing, centroid fine-tuning, entropy-coded files.

Usage::

    from mnist_pruning.compress import layer_bits, share_weights, fine_tune_centroids, unshare, encode, load_model
    bits = layer_bits("cnn", bits_conv=8, bits_fc=5)          # {"conv1": 8, "conv2": 8, "fc1": 5, "fc2": 5}
    share_weights(pruned_model, bits)                          # k-means per layer, codebooks become Parameters
    fine_tune_centroids(pruned_model, mnist, TrainConfig(epochs=1, lr=0.01))   # mask held, zeros stay zero
    coded = unshare(pruned_model)                              # -> CodedModel (codebooks + indices + positions)
    n_bytes = save_coded(coded, "runs/cnn-99.mnpz")            # entropy-coded file (constriction's ANS coder)
    model = load_model("runs/cnn-99.mnpz")                     # CRC checked, rebuilt with models.build_model
    size_breakdown(encode(coded))                              # bytes on values / positions / codebooks / ...

or one whole point of the pipeline (baseline -> gradual pruning -> sharing -> fine-tuning -> file -> decode ->
accuracy of the decoded model): :func:`compress_point`; the grid of both models: :func:`run_compression_sweep`;
from the shell: ``mnist-pruning compress --model mlp --sparsity 0.95 --bits-fc 5`` (``--sweep`` for the grid).

The steps (Han et al. 2016, "Deep Compression", sections 3-4):

1. **Weight sharing.** Per prunable layer, the surviving (non-zero) weights are clustered into at most ``2**b``
   shared values by scikit-learn's ``KMeans`` started from the paper's linear initialisation (centroids evenly
   spaced over ``[min, max]``, which keeps the large weights represented). A layer with fewer distinct surviving
   values than ``2**b`` keeps them all exactly. Unused clusters are dropped and the codebook is sorted.
2. **Centroid fine-tuning.** The layer's ``weight`` becomes ``codebook[index] * keep`` (a forward pre-hook, as
   ``torch.nn.utils.prune`` does), with ``codebook`` a Parameter and ``index`` / ``keep`` buffers: autograd
   gives each centroid the sum of the gradients of the weights that share it (its SGD step is scaled by
   ``k / kept`` per layer, see :func:`fine_tune_centroids`), and pruned weights stay exactly zero. Biases train
   too and are stored as ``bias_dtype`` (fp16 by default: on LeNet-300-100 at 95 % / 4 bits fp32 biases cost
   820 more bytes for the same 1.44 % error; the decoded model is what is measured, so the rounding is in every
   accuracy reported). Codebooks are F32 by default; F16 saved 96 bytes there for +0.01 pp error.
3. **Entropy coding** with ``constriction``'s ANS coder (``constriction.stream.stack.AnsCoder``), order-0
   models built from counts stored in the file: the cluster indices (``Categorical`` over the empirical
   frequencies), the positions either as a bitmask (``Bernoulli(nnz / n)`` per weight) or as relative index
   gaps (the gap's bit length coded with a ``Categorical``, its remaining low bits with ``Uniform``); both are
   measured per layer and the smaller is written (the header says which).

File format ``mnist-pruning-coded/1`` (little-endian; no pickle, nothing in it is executed)::

    magic  b"MNPZ" | version u8 = 1 | header length u16 | header (ASCII) | payload | CRC-32 u32

The CRC-32 (``zlib.crc32``) covers every byte before it, so one flipped bit anywhere (magic, header, payload or
the CRC itself) is refused, as is a truncated file. The header is ``;``-joined records:

- ``model <arch> <widths>``, e.g. ``model cnn 20,50,500`` (rebuilt with :func:`mnist_pruning.models.build_model`);
- ``shared <name> <shape> <bits> <nnz> <k> <codebook dtype> <position coding> <5 section lengths>``: one per
  prunable weight; sections, in order: codebook (``k`` raw values), index table (``k`` LEB128 counts), index
  stream (ANS words), position table (gaps: the number of bit-length buckets then their LEB128 counts; mask:
  empty), position stream (ANS words);
- ``raw <name> <shape> <dtype> <length>``: every other state-dict entry (biases), raw bytes.

The loader checks that every length agrees with what shape / dtype / k imply and that they add up to the payload
exactly before decoding, and that the decoded counts and positions are consistent. The *information limit* of a
file (:func:`information_limit`) is what an ideal order-0 coder needs for the same content: per layer the
empirical entropy of its indices (``sum -c log2(c / nnz)``), ``log2 C(n, nnz)`` bits for the positions, the
codebook's raw bits, plus the raw bits of the biases; the header and the count tables are not in it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import lzma
import math
import os
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from .checks import check_choice, check_choices, check_int, check_ratio
from .files import CorruptFileError, atomic_write
from .models import MODEL_NAMES, ModelConfig, build_model
from .sparsity.measure import prunable_layers

__all__ = [
    "FORMAT",
    "MAGIC",
    "DEFAULT_BITS",
    "BIAS_DTYPES",
    "SharedLayer",
    "CodedModel",
    "layer_bits",
    "bits_text",
    "share_weights",
    "fine_tune_centroids",
    "unshare",
    "snapshot",
    "encode",
    "decode",
    "save_coded",
    "load_coded",
    "load_model",
    "size_breakdown",
    "decode_header",
    "layer_table",
    "information_limit",
    "empirical_entropy_bits",
    "CompressConfig",
    "compress_point",
    "run_compression_sweep",
    "compress_config_of",
    "steps_table",
    "record_point",
    "pruned_model",
    "goals_table",
]

FORMAT = "mnist-pruning-coded/1"
MAGIC = b"MNPZ"
VERSION = 1
DEFAULT_BITS = {"conv": 8, "fc": 5}  # Deep Compression's bits per layer kind (Han et al. 2016, Tables 2-3)
MAX_BITS = 16
POSITION_CODINGS = ("mask", "gap")
CODEBOOK_DTYPES = ("F32", "F16")  # how shared values are stored
# Names as safetensors spells them (compact.py's convention): short, and readers know them.
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_NAME_OF = {v: k for k, v in _DTYPES.items()}
BIAS_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_PREFIX = struct.Struct("<4sBH")  # magic, version, header length


# --------------------------------------------------------------------------------------------- bits per layer


def _layer_kinds(model_or_arch: nn.Module | str | ModelConfig) -> dict[str, str]:
    model = model_or_arch if isinstance(model_or_arch, nn.Module) else build_model(model_or_arch)
    return {name: "conv" if isinstance(module, nn.Conv2d) else "fc" for name, module in prunable_layers(model)}


def _check_bits(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= MAX_BITS:
        raise ValueError(f"{name} must be an integer in 1..{MAX_BITS} (bits per cluster index), got {value!r}")
    return int(value)


def layer_bits(
    model_or_arch: nn.Module | str | ModelConfig,
    bits_conv: int = DEFAULT_BITS["conv"],
    bits_fc: int = DEFAULT_BITS["fc"],
    per_layer: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Bits per cluster index of every prunable layer: ``bits_conv`` for convolutions, ``bits_fc`` for fully
    connected layers, ``per_layer[name]`` where given. Raises ValueError (before any work) for bits outside
    1..16 or a layer name the model does not have, listing the valid names."""
    kinds = _layer_kinds(model_or_arch)
    bits = {"conv": _check_bits(bits_conv, "bits_conv"), "fc": _check_bits(bits_fc, "bits_fc")}
    out = {name: bits[kind] for name, kind in kinds.items()}
    for name, value in (per_layer or {}).items():
        if name not in kinds:
            raise ValueError(f"unknown layer {name!r} in the per-layer bits; the model's layers: {list(kinds)}")
        out[name] = _check_bits(value, f"bits of layer {name!r}")
    return out


def bits_text(bits: Mapping[str, int]) -> str:
    """``conv1=8;conv2=8;fc1=5;fc2=5``: how a results row spells the bits per layer."""
    return ";".join(f"{name}={b}" for name, b in bits.items())


# -------------------------------------------------------------------------------------------- weight sharing


@dataclass
class SharedLayer:
    """One weight tensor as the file holds it: which weights survive, which shared value each one takes."""

    shape: tuple[int, ...]
    bits: int  # requested bits per index (the codebook has at most 2**bits entries)
    positions: np.ndarray  # int64, sorted flat (C order) positions of the kept weights
    indices: np.ndarray  # int64 in [0, k), the codebook entry of each kept weight, in position order
    codebook: np.ndarray  # (k,) shared values, sorted ascending, float32 or float16

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nnz(self) -> int:
        return len(self.positions)

    def weight(self) -> torch.Tensor:
        flat = np.zeros(self.numel, dtype=np.float32)
        flat[self.positions] = self.codebook.astype(np.float32)[self.indices]
        return torch.from_numpy(flat).reshape(self.shape)


@dataclass
class CodedModel:
    """What a coded file holds: the model's config, its shared weights and every other tensor (biases)."""

    config: ModelConfig
    layers: dict[str, SharedLayer]  # by state-dict name, e.g. "fc1.weight"
    tensors: dict[str, torch.Tensor]  # every other state-dict entry, as stored (e.g. fp16 biases)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Float32 tensors in the model's own state-dict order."""
        order = list(build_model(self.config).state_dict())
        out = {name: layer.weight() for name, layer in self.layers.items()}
        out.update({name: t.to(torch.float32) for name, t in self.tensors.items()})
        missing = set(order) ^ set(out)
        if missing:
            raise ValueError(
                f"the coded model's tensors do not match a {self.config.arch} model: {sorted(missing)}"
            )
        return {name: out[name] for name in order}

    def model(self) -> nn.Module:
        model = build_model(self.config)
        model.load_state_dict(self.state_dict())
        return model


def _kmeans(values: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Codebook (sorted, unused entries dropped) and labels of 1-D ``values`` clustered into at most ``k``."""
    from sklearn.cluster import KMeans

    distinct = np.unique(values)
    if len(distinct) <= k:  # nothing to share: every distinct value is its own centroid, exactly
        return distinct, np.searchsorted(distinct, values)
    init = np.linspace(values.min(), values.max(), k).reshape(-1, 1)  # Deep Compression's linear init
    km = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(values.reshape(-1, 1))
    centers, labels = km.cluster_centers_.ravel(), km.labels_
    used = np.unique(labels)
    order = used[np.argsort(centers[used], kind="stable")]
    remap = np.zeros(k, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return centers[order], remap[labels]


def _shared_weight(module: nn.Module) -> torch.Tensor:
    return module.codebook[module.weight_index] * module.weight_keep


def _refresh(module: nn.Module, _inputs) -> None:
    module.weight = _shared_weight(module)


def share_weights(
    model: nn.Module, bits: Mapping[str, int], seed: int = 0, codebook_dtype: str = "F32"
) -> nn.Module:
    """Replace every prunable layer's ``weight`` by ``codebook[index] * keep`` (k-means, see the module
    docstring), in place; ``bits`` from :func:`layer_bits`. Torch prune masks still attached are baked in
    first; the surviving weights are the non-zero ones. Returns ``model``."""
    check_choice(codebook_dtype, CODEBOOK_DTYPES, "codebook dtype")
    layers = dict(prunable_layers(model))
    unknown = sorted(set(bits) - set(layers))
    if unknown or set(bits) != set(layers):
        raise ValueError(f"bits must name exactly the model's layers {list(layers)}, got {list(bits)}")
    for name, module in layers.items():
        if prune.is_pruned(module):
            prune.remove(module, "weight")
        if hasattr(module, "codebook"):
            raise ValueError(f"layer {name!r} already shares its weights")
        w = module.weight.detach().cpu()
        keep = w != 0
        values = w[keep].double().numpy()
        if len(values):
            codebook, labels = _kmeans(values, 2 ** _check_bits(bits[name], f"bits of {name!r}"), seed)
        else:
            codebook, labels = np.zeros(1), np.zeros(0, dtype=np.int64)
        # Rounded to the stored dtype now, so what trains is what the file can hold.
        codebook = torch.from_numpy(codebook.astype(np.float32)).to(_DTYPES[codebook_dtype]).float()
        index = torch.zeros(w.shape, dtype=torch.int64)
        index[keep] = torch.from_numpy(labels)
        device = module.weight.device
        del module._parameters["weight"]
        module.register_parameter("codebook", nn.Parameter(codebook.to(device), requires_grad=len(values) > 0))
        module.register_buffer("weight_index", index.to(device))
        module.register_buffer("weight_keep", keep.to(device=device, dtype=torch.float32))
        module.shared_bits = int(bits[name])
        module.codebook_dtype = codebook_dtype
        module.weight = _shared_weight(module)
        module.register_forward_pre_hook(_refresh)
    return model


def fine_tune_centroids(model: nn.Module, data, config, progress: bool = True) -> list[dict]:
    """Train the shared values (and biases) of a :func:`share_weights` model for ``config.epochs``: SGD with
    Nesterov momentum and a cosine decay, seeded batch order (``train.train_one_epoch``).

    Each centroid's gradient is the sum of its weights' gradients (autograd through ``codebook[index]``), as in
    Deep Compression; its *step size* is ``config.lr * k / kept`` per layer, so a centroid moves like one
    average weight would. With the plain ``lr`` a sum over thousands of weights overshoots: LeNet-5's fc1 with 4
    shared values (95 % sparsity, 2 bits) went from 0.7 % to 90 % test error in one epoch; where it did not
    diverge it trained LeNet-300-100 a little further (over its 12 grid points the scaled step's error is
    -0.05 to +0.14 pp higher; 95 % / 4 bits: 1.58 % against 1.44 %). The kept/pruned
    pattern never changes. After every step the codebooks are rounded to their stored dtype (no-op for F32).
    Returns per-epoch rows like ``train.fine_tune``'s."""
    from .train import evaluate, train_one_epoch

    shared = [m for _, m in prunable_layers(model) if hasattr(m, "codebook")]
    codebooks = {id(m.codebook) for m in shared}
    groups = [
        {"params": [m.codebook], "lr": config.lr * len(m.codebook) / max(1.0, float(m.weight_keep.sum()))}
        for m in shared
    ]
    groups.append({"params": [p for p in model.parameters() if id(p) not in codebooks], "lr": config.lr})
    optimizer = torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )
    x, y = data.train_x, data.train_y
    steps = config.epochs * math.ceil(x.shape[0] / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    generator = torch.Generator().manual_seed(config.seed)

    def round_codebooks() -> None:
        with torch.no_grad():
            for m in shared:
                m.codebook.copy_(m.codebook.to(_DTYPES[m.codebook_dtype]).float())

    history = []
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        loss = train_one_epoch(model, x, y, optimizer, config.batch_size, generator, scheduler, round_codebooks)
        metrics = evaluate(model, data.test_x, data.test_y)
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss,
                "test_loss": metrics["loss"],
                "test_accuracy": metrics["accuracy"],
                "seconds": time.perf_counter() - start,
            }
        )
    for m in shared:
        m.weight = _shared_weight(m)
    return history


_SHARED_ENTRIES = ("codebook", "weight_index", "weight_keep")


def snapshot(model: nn.Module, bias_dtype: str = "float16") -> CodedModel:
    """The :class:`CodedModel` of a :func:`share_weights` model as it is now (the model is not changed)."""
    check_choice(bias_dtype, tuple(BIAS_DTYPES), "bias dtype")
    layers: dict[str, SharedLayer] = {}
    for name, module in prunable_layers(model):
        if not hasattr(module, "codebook"):
            raise ValueError(f"layer {name!r} does not share its weights; call share_weights first")
        keep = module.weight_keep.detach().cpu().bool().reshape(-1)
        codebook = module.codebook.detach().cpu().to(_DTYPES[module.codebook_dtype])
        indices = module.weight_index.detach().cpu().reshape(-1)[keep].numpy().astype(np.int64)
        k = int(indices.max()) + 1 if len(indices) else 0
        layers[f"{name}.weight"] = SharedLayer(
            shape=tuple(module.weight_keep.shape),
            bits=module.shared_bits,
            positions=torch.nonzero(keep).reshape(-1).numpy().astype(np.int64),
            indices=indices,
            codebook=codebook[:k].numpy().copy(),
        )
    tensors = {
        name: t.detach().cpu().to(BIAS_DTYPES[bias_dtype]).clone()
        for name, t in model.state_dict().items()
        if name not in layers and name.rsplit(".", 1)[-1] not in _SHARED_ENTRIES
    }
    return CodedModel(model.config, layers, tensors)


def unshare(model: nn.Module, bias_dtype: str = "float16") -> CodedModel:
    """Turn a :func:`share_weights` model back into plain parameters (``weight = codebook[index] * keep``, biases
    rounded to ``bias_dtype`` in the model too, so the in-memory model computes what the file will) and return
    the :class:`CodedModel` to encode."""
    coded = snapshot(model, bias_dtype)
    for name, module in prunable_layers(model):
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is _refresh:
                del module._forward_pre_hooks[key]
        weight = coded.layers[f"{name}.weight"].weight().to(module.weight_keep.device)
        del module._parameters["codebook"]
        for attr in ("weight_index", "weight_keep"):
            del module._buffers[attr]
        for attr in ("weight", "shared_bits", "codebook_dtype"):
            module.__dict__.pop(attr, None)
        module.weight = nn.Parameter(weight)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name in coded.tensors:
                t.copy_(coded.tensors[name].to(t.dtype))
    return coded


# ------------------------------------------------------------------------------------------- entropy coding


def _uleb(values) -> bytes:
    out = bytearray()
    for v in values:
        v = int(v)
        while True:
            byte = v & 0x7F
            v >>= 7
            out.append(byte | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def _read_uleb(buf: bytes, count: int | None) -> list[int]:
    """Exactly ``count`` (None: any number of) LEB128 numbers filling ``buf``; ValueError otherwise."""
    out, v, shift = [], 0, 0
    for byte in buf:
        v |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            out.append(v)
            v, shift = 0, 0
        elif shift > 63:
            raise ValueError("a count is too long")
    if shift or (count is not None and len(out) != count):
        raise ValueError(f"count table holds {len(out)} complete numbers, expected {count}")
    return out


def _categorical(counts: np.ndarray):
    import constriction

    # Both sides build the model from the same integer counts, so both quantise it identically.
    return constriction.stream.model.Categorical(np.asarray(counts, dtype=np.float64), perfect=False)


def _words(coder) -> bytes:
    return coder.get_compressed().astype("<u4").tobytes()


def _coder(data: bytes):
    import constriction

    if len(data) % 4:
        raise ValueError("an ANS stream must be a whole number of 32-bit words")
    return constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))


def _encode_indices(indices: np.ndarray, k: int) -> tuple[bytes, bytes]:
    """(count table, ANS stream) of a layer's cluster indices; an empty stream when k <= 1."""
    import constriction

    counts = np.bincount(indices, minlength=k) if k else np.zeros(0, dtype=np.int64)
    if k <= 1:
        return _uleb(counts), b""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(indices.astype(np.int32), _categorical(counts))
    return _uleb(counts), _words(coder)


def _decode_indices(table: bytes, stream: bytes, k: int, nnz: int) -> np.ndarray:
    counts = np.array(_read_uleb(table, k), dtype=np.int64)
    if counts.sum() != nnz or (k and counts.min() < 1):
        raise ValueError(f"index counts {counts.tolist()[:8]}... do not add up to {nnz} with every entry used")
    if k <= 1:
        if stream:
            raise ValueError("a one-entry codebook has no index stream")
        return np.zeros(nnz, dtype=np.int64)
    coder = _coder(stream)
    indices = coder.decode(_categorical(counts), nnz).astype(np.int64)
    if not coder.is_empty() or not np.array_equal(np.bincount(indices, minlength=k), counts):
        raise ValueError("the index stream does not decode to the recorded counts")
    return indices


def _bernoulli(n: int, nnz: int):
    import constriction

    return constriction.stream.model.Bernoulli(nnz / n, perfect=False)


def _encode_positions(coding: str, positions: np.ndarray, n: int) -> tuple[bytes, bytes]:
    """(table, ANS stream) of sorted flat positions among ``n``, as a bitmask or as gaps."""
    import constriction

    nnz = len(positions)
    if nnz in (0, n):
        return b"", b""
    coder = constriction.stream.stack.AnsCoder()
    if coding == "mask":
        bits = np.zeros(n, dtype=np.int32)
        bits[positions] = 1
        coder.encode_reverse(bits, _bernoulli(n, nnz))
        return b"", _words(coder)
    gaps = np.diff(positions, prepend=-1)  # >= 1
    buckets = np.floor(np.log2(gaps)).astype(np.int64)  # gap in [2**b, 2**(b+1)): b low bits follow
    low = buckets > 0
    if low.any():  # encoded first, so the decoder (a stack) reads the buckets first
        coder.encode_reverse(
            (gaps[low] - (1 << buckets[low])).astype(np.int32),
            constriction.stream.model.Uniform(),
            (1 << buckets[low]).astype(np.int32),
        )
    counts = np.bincount(buckets)
    if len(counts) > 1:
        coder.encode_reverse(buckets.astype(np.int32), _categorical(counts))
    return _uleb([len(counts), *counts]), _words(coder)


def _decode_positions(coding: str, table: bytes, stream: bytes, n: int, nnz: int) -> np.ndarray:
    import constriction

    if nnz in (0, n):
        if table or stream:
            raise ValueError("an empty or full layer has no position sections")
        return np.arange(nnz, dtype=np.int64)
    coder = _coder(stream)
    if coding == "mask":
        if table:
            raise ValueError("a bitmask has no table")
        positions = np.flatnonzero(coder.decode(_bernoulli(n, nnz), n)).astype(np.int64)
    else:
        if not table:
            raise ValueError("gap coding needs a bucket table")
        numbers = _read_uleb(table, None)
        if numbers[0] != len(numbers) - 1 or numbers[0] < 1:
            raise ValueError("the gap bucket table does not say how many buckets it holds")
        nb, counts = numbers[0], np.array(numbers[1:], dtype=np.int64)
        if counts.sum() != nnz:
            raise ValueError(f"gap bucket counts add up to {counts.sum()}, not {nnz}")
        buckets = coder.decode(_categorical(counts), nnz).astype(np.int64) if nb > 1 else np.zeros(nnz, np.int64)
        if np.any(buckets > 23):
            raise ValueError("a gap is too long")
        gaps = np.left_shift(1, buckets)
        low = buckets > 0
        if low.any():
            gaps[low] += coder.decode(constriction.stream.model.Uniform(), (1 << buckets[low]).astype(np.int32))
        positions = np.cumsum(gaps) - 1
    if not coder.is_empty():
        raise ValueError("the position stream holds more than the recorded positions")
    if len(positions) != nnz or (nnz and positions[-1] >= n):
        raise ValueError(f"the positions are not {nnz} increasing indices below {n}")
    return positions


# ---------------------------------------------------------------------------------------------- file format


def _shape_text(shape) -> str:
    return ",".join(map(str, shape)) or "-"


def _parse_shape(text: str) -> tuple[int, ...]:
    shape = () if text == "-" else tuple(int(s) for s in text.split(","))
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in {text!r}")
    return shape


def _layer_sections(layer: SharedLayer, coding: str | None = None) -> tuple[str, list[bytes]]:
    """The smaller position coding (or ``coding``) and the five sections of a shared layer."""
    k = len(layer.codebook)
    table, stream = _encode_indices(layer.indices, k)
    codebook = np.ascontiguousarray(layer.codebook, dtype=layer.codebook.dtype.newbyteorder("<")).tobytes()
    options = {}
    for c in (coding,) if coding else POSITION_CODINGS:
        options[c] = _encode_positions(c, layer.positions, layer.numel)
    best = min(options, key=lambda c: (len(options[c][0]) + len(options[c][1]), POSITION_CODINGS.index(c)))
    return best, [codebook, table, stream, *options[best]]


def encode(coded: CodedModel, position_coding: str | None = None) -> bytes:
    """The bytes of the coded file (see the module docstring). ``position_coding`` forces "mask" or "gap" for
    every layer; by default each layer gets the smaller one."""
    if position_coding is not None:
        check_choice(position_coding, POSITION_CODINGS, "position coding")
    records = [f"model {coded.config.arch} {_shape_text(coded.config.widths)}"]
    payload: list[bytes] = []
    for name, layer in coded.layers.items():
        if layer.codebook.dtype not in (np.float32, np.float16):
            raise ValueError(f"codebook of {name!r} must be float32 or float16, got {layer.codebook.dtype}")
        dtype = "F32" if layer.codebook.dtype == np.float32 else "F16"
        coding, sections = _layer_sections(layer, position_coding)
        lengths = ",".join(str(len(s)) for s in sections)
        records.append(
            f"shared {name} {_shape_text(layer.shape)} {layer.bits} {layer.nnz} {len(layer.codebook)} {dtype} "
            f"{coding} {lengths}"
        )
        payload.extend(sections)
    for name, t in coded.tensors.items():
        if t.dtype not in _NAME_OF:
            raise ValueError(f"tensor {name!r} has unsupported dtype {t.dtype}")
        data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        records.append(f"raw {name} {_shape_text(t.shape)} {_NAME_OF[t.dtype]} {len(data)}")
        payload.append(data)
    header = ";".join(records).encode("ascii")
    if len(header) >= 1 << 16:
        raise ValueError("the header is too long for this format")
    body = _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(payload)
    return body + struct.pack("<I", zlib.crc32(body))


def save_coded(coded: CodedModel, path: str | os.PathLike, position_coding: str | None = None) -> int:
    """Write :func:`encode`'s bytes atomically; return the file size in bytes."""
    data = encode(coded, position_coding)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _bad(source: str, why: str) -> CorruptFileError:
    return CorruptFileError(
        f"{source!r} is not a valid {FORMAT} file: {why}. It is damaged (truncated or altered) or not a coded "
        "model file; write it again with save_coded"
    )


@dataclass
class _Parsed:
    coded: CodedModel
    sections: dict[str, int]  # bytes per part: header, codebooks, values, positions, biases
    layers: list[dict]  # per shared layer: name, coding, section lengths


def _parse(data: bytes, source: str) -> _Parsed:
    if len(data) < _PREFIX.size + 4:
        raise _bad(source, f"it is {len(data)} bytes long, shorter than the fixed fields")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise _bad(source, f"it starts with {magic!r}, not {MAGIC!r}")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise _bad(source, "its CRC-32 does not match its contents")
    if version != VERSION:
        raise _bad(source, f"version {version} (this reader knows {VERSION})")
    start = _PREFIX.size + header_len
    if start > len(data) - 4:
        raise _bad(source, "the header runs past the end")
    payload = data[start:-4]
    try:
        return _parse_records(data[_PREFIX.size : start].decode("ascii"), payload, header_len)
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        raise _bad(source, str(e)) from e


def _parse_records(header: str, payload: bytes, header_len: int) -> _Parsed:
    records = [r.split(" ") for r in header.split(";")]
    if not records or records[0][0] != "model" or len(records[0]) != 3:
        raise ValueError("the header does not start with a model record")
    config = ModelConfig.from_dict({"arch": records[0][1], "widths": _parse_shape(records[0][2])})
    layers: dict[str, SharedLayer] = {}
    tensors: dict[str, torch.Tensor] = {}
    info: list[dict] = []
    sizes = {"header": _PREFIX.size + header_len + 4, "codebooks": 0, "values": 0, "positions": 0, "biases": 0}
    offset = 0

    def take(length: int) -> bytes:
        nonlocal offset
        if offset + length > len(payload):
            raise ValueError("the payload ends inside a section")
        offset += length
        return payload[offset - length : offset]

    for fields in records[1:]:
        kind, name = fields[0], fields[1] if len(fields) > 1 else ""
        if name in layers or name in tensors:
            raise ValueError(f"{name!r} appears twice")
        if kind == "shared" and len(fields) == 9:
            shape = _parse_shape(fields[2])
            bits, nnz, k = (int(f) for f in fields[3:6])
            dtype, coding = fields[6], fields[7]
            lengths = [int(x) for x in fields[8].split(",")]
            n = math.prod(shape)
            if dtype not in ("F32", "F16") or coding not in POSITION_CODINGS or len(lengths) != 5:
                raise ValueError(f"record of {name!r} has an unknown dtype or position coding")
            if not 1 <= bits <= MAX_BITS or not 0 <= nnz <= n or not (0 <= k <= min(nnz, 1 << bits)):
                raise ValueError(f"record of {name!r} has impossible bits / nnz / k")
            itemsize = _DTYPES[dtype].itemsize
            if lengths[0] != k * itemsize or min(lengths) < 0:
                raise ValueError(f"codebook of {name!r} is {lengths[0]} bytes, {k} x {itemsize} expected")
            codebook_b, table, stream, ptable, pstream = (take(x) for x in lengths)
            codebook = np.frombuffer(codebook_b, dtype="<f4" if dtype == "F32" else "<f2").copy()
            indices = _decode_indices(table, stream, k, nnz)
            positions = _decode_positions(coding, ptable, pstream, n, nnz)
            layers[name] = SharedLayer(
                shape, bits, positions, indices, codebook.astype(np.dtype(codebook.dtype.char))
            )
            sizes["codebooks"] += lengths[0]
            sizes["values"] += lengths[1] + lengths[2]
            sizes["positions"] += lengths[3] + lengths[4]
            info.append({"name": name, "coding": coding, "lengths": lengths, "k": k, "nnz": nnz, "numel": n})
        elif kind == "raw" and len(fields) == 5:
            shape, dtype, length = _parse_shape(fields[2]), _DTYPES[fields[3]], int(fields[4])
            if length != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"{name!r} is {length} bytes, its shape and dtype say otherwise")
            raw = take(length)
            t = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.zeros(0, dtype=dtype)
            tensors[name] = t.reshape(shape).clone()
            sizes["biases"] += length
        else:
            raise ValueError(f"unknown record {' '.join(fields)[:60]!r}")
    if offset != len(payload):
        raise ValueError(f"{len(payload) - offset} bytes after the last section")
    coded = CodedModel(config, layers, tensors)
    coded.state_dict()  # the names must be exactly the model's
    return _Parsed(coded, sizes, info)


def decode(data: bytes, source: str = "<bytes>") -> CodedModel:
    """The :class:`CodedModel` in ``data``; CorruptFileError (naming ``source``) for anything not a whole,
    unaltered file of this format."""
    return _parse(bytes(data), source).coded


def load_coded(path: str | os.PathLike) -> CodedModel:
    """Read and check a coded file (see :func:`decode`)."""
    return decode(Path(path).read_bytes(), str(path))


def load_model(path: str | os.PathLike) -> nn.Module:
    """The model of a coded file, rebuilt with :func:`mnist_pruning.models.build_model` from its header."""
    return load_coded(path).model()


def decode_header(data: bytes, source: str = "<bytes>") -> list[str]:
    """The header records of a coded file (after its magic and CRC-32 are checked), for reading and tests."""
    data = bytes(data)
    if (
        len(data) < _PREFIX.size + 4
        or data[:4] != MAGIC
        or zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]
    ):
        raise _bad(source, "wrong magic, CRC-32 or length")
    n = _PREFIX.unpack_from(data)[2]
    return data[_PREFIX.size : _PREFIX.size + n].decode("ascii", errors="replace").split(";")


def size_breakdown(data: bytes) -> dict[str, int]:
    """Bytes of a coded file by what they hold: header (fixed fields, header text and CRC), codebooks, values
    (cluster-index count tables + streams), positions (tables + streams), biases; they sum to ``len(data)``."""
    return dict(_parse(bytes(data), "<bytes>").sections)


def layer_table(data: bytes) -> list[dict]:
    """Per shared layer: name, weights, kept, codebook entries, position coding chosen, bytes of each part."""
    rows = []
    for row in _parse(bytes(data), "<bytes>").layers:
        codebook, table, stream, ptable, pstream = row["lengths"]
        rows.append(
            {
                "layer": row["name"],
                "weights": row["numel"],
                "kept": row["nnz"],
                "codebook entries": row["k"],
                "positions coded as": row["coding"],
                "codebook bytes": codebook,
                "index bytes": table + stream,
                "position bytes": ptable + pstream,
            }
        )
    return rows


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """``sum_s -c_s log2(c_s / N)``: the order-0 information content of a symbol sequence, in bits."""
    counts = np.bincount(np.asarray(symbols, dtype=np.int64))
    counts = counts[counts > 0]
    total = counts.sum()
    return float(-(counts * np.log2(counts / total)).sum()) if total else 0.0


def information_limit(coded: CodedModel) -> dict[str, float]:
    """Bytes an ideal order-0 coder needs for the same content: index entropy (values), ``log2 C(n, nnz)``
    (positions), raw codebooks and biases; no header, no count tables. See the module docstring."""
    values = positions = codebooks = 0.0
    for layer in coded.layers.values():
        values += empirical_entropy_bits(layer.indices)
        n, k = layer.numel, layer.nnz
        positions += (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
        codebooks += 8 * layer.codebook.nbytes
    biases = sum(8 * t.numel() * t.element_size() for t in coded.tensors.values())
    out = {"values": values / 8, "positions": positions / 8, "codebooks": codebooks / 8, "biases": biases / 8}
    out["total"] = sum(out.values())
    return out


# ------------------------------------------------------------------------------------------------- pipeline

# The grid of the full run: per model, the sparsities pruned (each pruned model is trained once and reused for
# every bits setting) and the (conv, fc) bits per index. The MLP has no convolution: only its fc bits vary. Sized
# for the 2-core machine: a gradual pruning run costs ~20 s (MLP, 20 epochs) / ~95 s (CNN, 6 epochs) there, a
# bits setting ~5 s / ~30 s (k-means, centroid fine-tuning, coding, decoding, evaluations).
SPARSITIES = {"mlp": (0.95, 0.98, 0.99), "cnn": (0.95, 0.99)}
BITS = {"mlp": ((8, 5), (6, 4), (5, 3), (4, 2)), "cnn": ((8, 5), (6, 4), (5, 3))}
# Centroid fine-tuning: a short run at a low learning rate (the codebook has few, shared degrees of freedom).
CENTROID_EPOCHS = {"mlp": 2, "cnn": 1}
CENTROID_LR = 0.01
ZSTD_LEVEL = 19
LZMA_PRESET = 9 | lzma.PRESET_EXTREME


@dataclass
class CompressConfig:
    """What :func:`run_compression_sweep` / :func:`compress_point` do, with which budgets and where."""

    models: tuple[str, ...] = MODEL_NAMES
    sparsities: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(SPARSITIES))  # per model
    # (conv bits, fc bits) settings per model, or one tuple of settings for every model
    bits: dict[str, tuple[tuple[int, int], ...]] | tuple[tuple[int, int], ...] = field(
        default_factory=lambda: dict(BITS)
    )
    per_layer: dict[str, int] = field(default_factory=dict)  # per-layer bits overriding bits (one model only)
    seed: int = 0
    prune_epochs: dict[str, int] = field(default_factory=dict)  # gradual pruning; default sweep.BUDGETS frontier
    centroid_epochs: dict[str, int] = field(default_factory=dict)  # default CENTROID_EPOCHS
    centroid_lr: float = CENTROID_LR
    codebook_dtype: str = "F32"  # shared values stored as F32 or F16
    bias_dtype: str = "float16"  # biases stored as float16 or float32
    baseline_epochs: dict[str, int] = field(default_factory=dict)  # per model; empty -> TrainConfig.for_model
    subset: int | None = None  # class-balanced training subset (smoke runs)
    test_subset: int | None = None
    data_dir: str | None = None
    out_dir: str | None = None  # baselines (shared with the sweep), pruned models and coded files
    results_dir: str | None = None  # compression_results.csv

    def __post_init__(self) -> None:
        self.models = check_choices(self.models, MODEL_NAMES, "model")
        self.sparsities = {m: tuple(self.sparsities.get(m, SPARSITIES[m])) for m in self.models}
        for m, values in self.sparsities.items():
            self.sparsities[m] = tuple(check_ratio(s, "sparsity") for s in values)
        given = self.bits if isinstance(self.bits, Mapping) else dict.fromkeys(self.models, self.bits)
        self.bits = {
            m: tuple((_check_bits(c, "bits_conv"), _check_bits(f, "bits_fc")) for c, f in given.get(m, BITS[m]))
            for m in self.models
        }
        for arch in self.models:
            layer_bits(arch, 8, 5, self.per_layer)
            for name, table in (("prune_epochs", self.prune_epochs), ("centroid_epochs", self.centroid_epochs)):
                if arch in table:
                    check_int(table[arch], f"{name} of {arch!r}")
        check_choice(self.codebook_dtype, CODEBOOK_DTYPES, "codebook dtype")
        check_choice(self.bias_dtype, tuple(BIAS_DTYPES), "bias dtype")
        check_int(self.seed, "seed", minimum=0)
        from .train import TrainConfig

        TrainConfig(epochs=1, lr=self.centroid_lr)

    def baseline_config(self, arch: str):
        from .train import TrainConfig

        extra = {"epochs": self.baseline_epochs[arch]} if arch in self.baseline_epochs else {}
        return TrainConfig.for_model(arch, seed=self.seed, **extra)

    def prune_config(self, arch: str):
        from .sweep import BUDGETS
        from .train import TrainConfig

        epochs = self.prune_epochs.get(arch, BUDGETS[arch].frontier_epochs)
        return TrainConfig(epochs=epochs, lr=self.baseline_config(arch).lr, seed=self.seed)

    def centroid_config(self, arch: str):
        from .train import TrainConfig

        epochs = self.centroid_epochs.get(arch, CENTROID_EPOCHS[arch])
        return TrainConfig(epochs=epochs, lr=self.centroid_lr, seed=self.seed)

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
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def points(self) -> list[tuple[str, float, dict[str, int]]]:
        """(model, sparsity, bits per layer) of the grid; the MLP's duplicates (same fc bits) dropped."""
        out = []
        for arch in self.models:
            for s in self.sparsities[arch]:
                seen = []
                for conv, fc in self.bits[arch]:
                    bits = layer_bits(arch, conv, fc, self.per_layer)
                    if bits not in seen:
                        seen.append(bits)
                        out.append((arch, s, bits))
        return out


def _fixed_width_bytes(coded: CodedModel, header: int) -> int:
    """Weight sharing without entropy coding: ``ceil(log2 k)``-bit indices, Elias-Fano positions (the compact
    format's), raw codebooks and biases, and the coded file's header."""
    from .sparsity.compact import position_bytes

    total = header
    for layer in coded.layers.values():
        k = len(layer.codebook)
        total += math.ceil(layer.nnz * max(1, math.ceil(math.log2(k))) / 8) if k > 1 else 0
        total += position_bytes("ef", layer.numel, layer.nnz) + layer.codebook.nbytes
    return total + sum(t.numel() * t.element_size() for t in coded.tensors.values())


def _other_compressors(dense: bytes, compact: bytes) -> dict[str, int]:
    import zstandard

    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return {
        "dense_zstd_bytes": len(z.compress(dense)),
        "dense_lzma_bytes": len(lzma.compress(dense, preset=LZMA_PRESET)),
        "compact_zstd_bytes": len(z.compress(compact)),
        "compact_lzma_bytes": len(lzma.compress(compact, preset=LZMA_PRESET)),
    }


@dataclass
class PrunedModel:
    """A gradually pruned model (masks baked in, CPU) and how it was made."""

    model: nn.Module
    sparsity: float  # requested
    epochs: int
    seconds: float  # 0 when loaded from its file


def pruned_model(
    arch: str, sparsity: float, base: nn.Module, data, config: CompressConfig, progress: bool = True
) -> PrunedModel:
    """Gradual global magnitude pruning of a copy of ``base`` to ``sparsity``; cached in
    ``<out_dir>/compress/<arch>_gradual_<sparsity>_seed<seed>.pt`` (reused when made with the same recipe)."""
    from .schedules import gradual_prune
    from .settings import paths
    from .sparsity.unstructured import bake_in
    from .train import load_checkpoint, save_checkpoint

    cfg = config.prune_config(arch)
    folder = paths(config.data_dir, config.out_dir).runs / "compress"
    path = folder / f"{arch}_gradual_{sparsity:g}_seed{config.seed}.pt"
    recipe = {"baseline": config.baseline_config(arch).to_dict(), "prune": cfg.to_dict()}
    key = {"recipe": recipe, "sparsity": sparsity, "data": [len(data.train_y), len(data.test_y)]}
    if path.exists():
        try:
            model, payload = load_checkpoint(path, torch.device("cpu"))
        except CorruptFileError:
            pass
        else:
            if payload.get("key") == key:
                return PrunedModel(model, sparsity, cfg.epochs, 0.0)
    device = next(base.parameters()).device
    result = gradual_prune(copy.deepcopy(base), data.to(device), "global", sparsity, cfg, progress=progress)
    model = bake_in(result.model).cpu()
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, cfg, result.history, key=key)
    return PrunedModel(model, sparsity, cfg.epochs, result.seconds)


@dataclass
class CompressionResult:
    """One point: its CSV row, the coded file, and the decoded model."""

    row: dict
    path: Path  # the coded file
    model: nn.Module  # decoded from ``path``
    coded: CodedModel


def _accuracies(model: nn.Module, data) -> tuple[float, float | str]:
    from .train import evaluate

    test = evaluate(model, data.test_x, data.test_y)["accuracy"]
    val_x, val_y = getattr(data, "val_x", None), getattr(data, "val_y", None)
    val = evaluate(model, val_x, val_y)["accuracy"] if val_x is not None and len(val_y) else ""
    return test, val


def compress_point(
    pruned: PrunedModel,
    bits: Mapping[str, int],
    data,
    config: CompressConfig,
    acc_baseline: float,
    progress: bool = True,
) -> CompressionResult:
    """Weight sharing, centroid fine-tuning and entropy coding of a copy of ``pruned``; the file is written to
    ``<out_dir>/compress/``, decoded, and every accuracy of the row is measured on decoded files."""
    from . import __version__
    from .settings import paths
    from .sparsity.compact import _dense_file, encode_compact
    from .sparsity.measure import sparsity as measured_sparsity
    from .train import evaluate

    arch = pruned.model.config.arch
    bits = layer_bits(pruned.model, per_layer=dict(bits))
    start = time.perf_counter()
    dense, compact = _dense_file(pruned.model), encode_compact(pruned.model)
    as_loaded = build_model(pruned.model.config)
    as_loaded.load_state_dict(_load_compact_bytes(compact))
    acc_pruned = evaluate(as_loaded, data.test_x, data.test_y)["accuracy"]

    device = data.train_x.device
    model = copy.deepcopy(pruned.model).to(device)
    share_weights(model, bits, seed=config.seed, codebook_dtype=config.codebook_dtype)
    shared = decode(encode(snapshot(model, config.bias_dtype))).model().to(device)
    acc_shared = evaluate(shared, data.test_x, data.test_y)["accuracy"]
    fine_tune_centroids(model, data, config.centroid_config(arch), progress=progress)
    coded = unshare(model, config.bias_dtype)
    folder = paths(config.data_dir, config.out_dir).runs / "compress"
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
    loaded = load_coded(path)
    row = {
        "model": arch,
        "sparsity_target": f"{pruned.sparsity:.6g}",
        "sparsity": measured_sparsity(decoded),
        "bits": bits_text(bits),
        "codebook_entries": ";".join(
            f"{r['layer'].removesuffix('.weight')}={r['codebook entries']}" for r in layers
        ),
        "position_coding": ";".join(
            f"{r['layer'].removesuffix('.weight')}={r['positions coded as']}" for r in layers
        ),
        "acc_baseline": acc_baseline,
        "acc_pruned": acc_pruned,
        "acc_shared": acc_shared,
        "acc_test": acc_test,
        "acc_val": acc_val,
        "size_coded_bytes": size,
        "ratio_vs_dense": len(dense) / size,
        "bytes_values": parts["values"],
        "bytes_positions": parts["positions"],
        "bytes_codebooks": parts["codebooks"],
        "bytes_biases": parts["biases"],
        "bytes_header": parts["header"],
        "limit_bytes": round(information_limit(loaded)["total"], 1),
        "size_fixed_bytes": _fixed_width_bytes(loaded, parts["header"]),
        "size_dense_bytes": len(dense),
        "size_compact_bytes": len(compact),
        **_other_compressors(dense, compact),
        "prune_epochs": pruned.epochs,
        "centroid_epochs": config.centroid_config(arch).epochs,
        "prune_seconds": round(pruned.seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "seed": config.seed,
        "config_hash": config.hash(arch),
        "version": __version__,
    }
    return CompressionResult(row, path, decoded.cpu(), loaded)


def _load_compact_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """A compact file's state_dict from its bytes (through a temporary file: safetensors reads paths)."""
    import tempfile

    from .sparsity.compact import load_compact

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.safetensors"
        p.write_bytes(data)
        return load_compact(p)


def record_point(row: dict, config: CompressConfig) -> Path:
    """Append ``row`` to ``<results_dir>/compression_results.csv`` unless the same run is there; return it."""
    from .results import COMPRESSION_COLUMNS, append_row, compression_csv, compression_key
    from .settings import paths

    path = compression_csv(paths(config.data_dir, config.out_dir, config.results_dir).results)
    append_row(path, row, COMPRESSION_COLUMNS, compression_key)
    return path


def steps_table(row: Mapping[str, object]):
    """The Deep Compression story of one row, step by step: file bytes, ratio to the dense file and test
    accuracy of each stage (accuracies of decoded files), then what zstd and lzma make of the usual files. The
    information limit is a size with no model: its test error reads "—", never NaN."""
    import pandas as pd

    dense = float(row["size_dense_bytes"])
    steps = [
        ("dense baseline (fp32 state_dict file)", dense, row["acc_baseline"]),
        ("pruned (gradual), compact file: fp32 values + positions", row["size_compact_bytes"], row["acc_pruned"]),
        ("+ weight sharing (k-means), fixed-width indices*", row["size_fixed_bytes"], row["acc_shared"]),
        ("+ centroid fine-tuning, fixed-width indices*", row["size_fixed_bytes"], row["acc_test"]),
        ("+ entropy coding (ANS): the coded file", row["size_coded_bytes"], row["acc_test"]),
        ("information limit of the coded content", row["limit_bytes"], None),
        ("zstd of the dense file", row["dense_zstd_bytes"], row["acc_pruned"]),
        ("lzma of the dense file", row["dense_lzma_bytes"], row["acc_pruned"]),
        ("zstd of the compact file", row["compact_zstd_bytes"], row["acc_pruned"]),
        ("lzma of the compact file", row["compact_lzma_bytes"], row["acc_pruned"]),
    ]
    table = pd.DataFrame(
        [
            {
                "bytes": float(b),
                "x smaller than dense": dense / float(b),
                "test error %": 100 * (1 - float(a)) if a not in (None, "") else "—",  # a size, not a model
            }
            for _, b, a in steps
        ],
        index=[name for name, _, _ in steps],
    )
    return table


def compress_config_of(sweep_config, **overrides) -> CompressConfig:
    """The compression grid of a full run for the sweep's first seed (``seed=`` for another): the sweep's
    models, data, folders and baselines."""
    kwargs = dict(
        models=sweep_config.models,
        seed=sweep_config.seeds[0],
        baseline_epochs=dict(sweep_config.baseline_epochs),
        subset=sweep_config.subset,
        test_subset=sweep_config.test_subset,
        data_dir=sweep_config.data_dir,
        out_dir=sweep_config.out_dir,
        results_dir=sweep_config.results_dir,
    )
    return CompressConfig(**{**kwargs, **overrides})


def run_compression_sweep(config: CompressConfig, progress: bool = True, data=None) -> Path:
    """Every point of ``config.points()`` not yet in the CSV: baseline (reused from ``runs/``), one gradual
    pruning per (model, sparsity), then every bits setting on it. Returns the CSV's path."""
    from .data import load_mnist
    from .files import check_writable_dir
    from .results import COMPRESSION_COLUMNS, compression_csv, compression_key, read_results
    from .settings import paths
    from .sweep import baseline
    from .train import evaluate, get_device

    p = paths(config.data_dir, config.out_dir, config.results_dir)
    check_writable_dir(p.runs)
    check_writable_dir(p.results)
    csv_path = compression_csv(p.results)
    done = {compression_key(r) for r in read_results(csv_path, COMPRESSION_COLUMNS)}
    todo = [
        (arch, s, bits)
        for arch, s, bits in config.points()
        if compression_key(
            {
                "model": arch,
                "sparsity_target": s,
                "bits": bits_text(bits),
                "seed": config.seed,
                "config_hash": config.hash(arch),
            }
        )
        not in done
    ]
    if not todo:
        return csv_path
    if data is None:
        data = load_mnist(p.data, subset=config.subset, test_subset=config.test_subset, seed=config.seed)
    data = data.to(get_device())
    bases: dict[str, tuple[nn.Module, float]] = {}
    pruned: dict[tuple[str, float], PrunedModel] = {}
    for arch, s, bits in todo:
        if arch not in bases:
            model, _ = baseline(arch, data, config.baseline_config(arch), p.runs, progress)
            bases[arch] = (model, evaluate(model, data.test_x, data.test_y)["accuracy"])
        if (arch, s) not in pruned:
            pruned[(arch, s)] = pruned_model(arch, s, bases[arch][0], data, config, progress)
        result = compress_point(pruned[(arch, s)], bits, data, config, bases[arch][1], progress)
        if progress:
            r = result.row
            print(
                f"{arch} {s:g} {r['bits']}: {r['size_coded_bytes']:,} bytes, "
                f"error {100 * (1 - r['acc_test']):.2f} % ({r['seconds']} s + pruning {r['prune_seconds']} s)"
            )
        record_point(result.row, config)
        pruned[(arch, s)].seconds = 0.0  # counted once, in the first row of this pruned model
    return csv_path


def goals_table(comp):
    """Chapter 07's goals (:data:`mnist_pruning.references.COMPRESSION_GOALS`) against the compression rows: per
    goal, the smallest coded file within the error bound, and the lowest error within the byte bound. Given the
    seed means of :func:`~mnist_pruning.results.load_compression_results`, goals are judged on the means."""
    import pandas as pd

    from .references import COMPRESSION_GOALS

    out = []
    for arch, goals in COMPRESSION_GOALS.items():
        rows = comp[comp["model"] == arch] if len(comp) else comp
        base = float(rows["acc_baseline"].median()) if len(rows) else math.nan
        for max_bytes, max_error in goals:
            # "or, if the dense baseline is above the reference's error, at no loss against it"
            bound = (
                max(max_error, 1 - base) if arch == "cnn" and max_bytes == 44_000 and base == base else max_error
            )
            err = 1 - rows["acc_test"] if len(rows) else pd.Series(dtype=float)
            within_error = rows[err <= bound + 1e-12] if len(rows) else rows
            within_bytes = rows[rows["size_coded_bytes"] <= max_bytes] if len(rows) else rows
            smallest = within_error.nsmallest(1, "size_coded_bytes") if len(within_error) else None
            best = within_bytes.loc[[(1 - within_bytes["acc_test"]).idxmin()]] if len(within_bytes) else None
            out.append(
                {
                    "model": arch,
                    "goal": f"<= {max_bytes / 1000:g} kB at <= {100 * bound:.2f} % error",
                    "reached": bool(smallest is not None and smallest["size_coded_bytes"].iloc[0] <= max_bytes),
                    "smallest file within the error (bytes)": None
                    if smallest is None
                    else int(smallest["size_coded_bytes"].iloc[0]),
                    "its sparsity / bits": None
                    if smallest is None
                    else f"{smallest['sparsity_target'].iloc[0]:g} / {smallest['bits'].iloc[0]}",
                    "lowest error within the bytes (%)": None
                    if best is None
                    else round(100 * (1 - float(best["acc_test"].iloc[0])), 2),
                    "seeds": None
                    if smallest is None or "n_seeds" not in smallest
                    else int(smallest["n_seeds"].iloc[0]),
                }
            )
    return pd.DataFrame(out)
