"""Weight sharing (Deep Compression, Han et al. 2016, sections 3.1-3.2): bits per layer, k-means codebooks as a
``torch.nn.utils.parametrize`` reparametrisation, centroid fine-tuning, and the :class:`_CodedModel` of the result.

Usage::

    from mnist_pruning.compress.sharing import layer_bits, share_weights, fine_tune_centroids, unshare
    bits = layer_bits("cnn", bits_conv=8, bits_fc=5)          # {"conv1": 8, "conv2": 8, "fc1": 5, "fc2": 5}
    share_weights(pruned_model, bits)                          # weight = codebook[index] * keep, per layer
    pruned_model.fc1.parametrizations.weight[0].codebook       # the shared values: a Parameter
    fine_tune_centroids(pruned_model, mnist, TrainConfig(epochs=1, lr=0.01))   # mask held, zeros stay zero
    coded = unshare(pruned_model)                              # plain weights again -> CodedModel

Per prunable layer the surviving (non-zero) weights are clustered into at most ``2**b`` shared values by
scikit-learn's ``KMeans`` started from the paper's linear initialisation (centroids evenly spaced over
``[min, max]``, which keeps the large weights represented). A layer with fewer distinct surviving values than
``2**b`` keeps them all exactly. Unused clusters are dropped and the codebook is sorted. The layer's ``weight``
then becomes ``codebook[index] * keep`` (:class:`_SharedWeight`, a parametrization holding ``codebook`` as a
Parameter and ``index`` / ``keep`` as buffers): autograd gives each centroid the sum of the gradients of the
weights that share it, and pruned weights stay exactly zero. Biases train too and are stored as ``bias_dtype``
(fp16 by default: on LeNet-300-100 at 95 % / 4 bits fp32 biases cost 820 more bytes for the same 1.44 % error;
the decoded model is what is measured, so the rounding is in every accuracy reported). Codebooks are F32 by
default; F16 saved 96 bytes there for +0.01 pp error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn
from torch.nn.utils import parametrize, prune

from ..checks import _check_choice
from ..models import ModelConfig, build_model
from ..sparsity._binary import _DTYPE_BY_NAME
from ..sparsity.measure import prunable_layers
from ..train import _train_one_epoch, evaluate
from .coded import _CodedModel, _SharedLayer

__all__ = [
    "layer_bits",
    "share_weights",
    "fine_tune_centroids",
    "unshare",
]

_DEFAULT_BITS = {"conv": 8, "fc": 5}  # Deep Compression's bits per layer kind (Han et al. 2016, Tables 2-3)
_MAX_BITS = 16
_CODEBOOK_DTYPES = ("F32", "F16")  # how shared values are stored (safetensors' names)
_BIAS_DTYPES = {"float32": torch.float32, "float16": torch.float16}


# --------------------------------------------------------------------------------------------- bits per layer


def _layer_kinds(model_or_arch: nn.Module | str | ModelConfig) -> dict[str, str]:
    model = model_or_arch if isinstance(model_or_arch, nn.Module) else build_model(model_or_arch)
    return {name: "conv" if isinstance(module, nn.Conv2d) else "fc" for name, module in prunable_layers(model)}


def _check_bits(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= _MAX_BITS:
        raise ValueError(f"{name} must be an integer in 1..{_MAX_BITS} (bits per cluster index), got {value!r}")
    return int(value)


def layer_bits(
    model_or_arch: nn.Module | str | ModelConfig,
    bits_conv: int = _DEFAULT_BITS["conv"],
    bits_fc: int = _DEFAULT_BITS["fc"],
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


def _bits_text(bits: Mapping[str, int]) -> str:
    """``conv1=8;conv2=8;fc1=5;fc2=5``: how a results row spells the bits per layer."""
    return ";".join(f"{name}={b}" for name, b in bits.items())


# -------------------------------------------------------------------------------------------- weight sharing


class _SharedWeight(nn.Module):
    """Parametrization ``weight = codebook[index] * keep`` of one layer (register it on ``"weight"`` with
    ``torch.nn.utils.parametrize.register_parametrization``; :func:`share_weights` does).

    Args:
        codebook: (k,) float32 shared values, already rounded to ``codebook_dtype``; trained as a Parameter
            (frozen when the layer keeps no weight).
        index: int64, the weight's shape: the codebook entry of every weight (0 where pruned).
        keep: float32 0/1, the weight's shape: which weights survive.
        bits: requested bits per index, recorded in the file.
        codebook_dtype: "F32" or "F16", how the file stores the codebook.

    The weight before sharing stays in ``parametrizations.weight.original`` (torch's convention), frozen and
    unused: the shared weight depends on the codebook alone.
    """

    def __init__(
        self, codebook: torch.Tensor, index: torch.Tensor, keep: torch.Tensor, bits: int, codebook_dtype: str
    ) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook, requires_grad=bool(keep.any()))
        self.register_buffer("index", index)
        self.register_buffer("keep", keep)
        self.bits = bits
        self.codebook_dtype = codebook_dtype

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return self.codebook[self.index] * self.keep

    @torch.no_grad()
    def round_codebook(self) -> None:
        """Round the codebook to its stored dtype in place (no-op for F32): what trains is what the file holds."""
        self.codebook.copy_(self.codebook.to(_DTYPE_BY_NAME[self.codebook_dtype]).float())


def _sharing(module: nn.Module) -> _SharedWeight | None:
    """The :class:`_SharedWeight` of a layer, None if its weight is not shared."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, _SharedWeight)), None)


def _kmeans(values: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Codebook (sorted, unused entries dropped) and labels of 1-D ``values`` clustered into at most ``k``."""
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


def share_weights(
    model: nn.Module, bits: Mapping[str, int], seed: int = 0, codebook_dtype: str = "F32"
) -> nn.Module:
    """Reparametrise every prunable layer's ``weight`` as ``codebook[index] * keep`` (:class:`_SharedWeight`,
    k-means, see the module docstring), in place.

    Args:
        model: a pruned model; torch prune masks still attached are baked in first, and the surviving weights
            are the non-zero ones.
        bits: bits per cluster index of every prunable layer, from :func:`layer_bits`.
        seed: k-means' random state.
        codebook_dtype: "F32" or "F16"; the codebook is rounded to it now and after every fine-tuning step.

    Returns:
        ``model``.

    Raises:
        ValueError: ``bits`` does not name exactly the model's layers, bits outside 1..16, an unknown codebook
            dtype, or a layer whose weight is already shared (or otherwise parametrized).

    Example::

        share_weights(model, layer_bits(model, bits_fc=5))
        len(model.fc1.parametrizations.weight[0].codebook)     # <= 32
    """
    _check_choice(codebook_dtype, _CODEBOOK_DTYPES, "codebook dtype")
    layers = dict(prunable_layers(model))
    unknown = sorted(set(bits) - set(layers))
    if unknown or set(bits) != set(layers):
        raise ValueError(f"bits must name exactly the model's layers {list(layers)}, got {list(bits)}")
    for name, module in layers.items():
        if prune.is_pruned(module):
            prune.remove(module, "weight")
        if _sharing(module) is not None:
            raise ValueError(f"layer {name!r} already shares its weights")
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"layer {name!r} has another parametrization of its weight; remove it first")
        w = module.weight.detach().cpu()
        keep = w != 0
        values = w[keep].double().numpy()
        if len(values):
            codebook, labels = _kmeans(values, 2 ** _check_bits(bits[name], f"bits of {name!r}"), seed)
        else:
            codebook, labels = np.zeros(1), np.zeros(0, dtype=np.int64)
        # Rounded to the stored dtype now, so what trains is what the file can hold.
        codebook = torch.from_numpy(codebook.astype(np.float32)).to(_DTYPE_BY_NAME[codebook_dtype]).float()
        index = torch.zeros(w.shape, dtype=torch.int64)
        index[keep] = torch.from_numpy(labels)
        device = module.weight.device
        shared = _SharedWeight(
            codebook.to(device),
            index.to(device),
            keep.to(device=device, dtype=torch.float32),
            int(bits[name]),
            codebook_dtype,
        )
        parametrize.register_parametrization(module, "weight", shared)
        module.parametrizations.weight.original.requires_grad_(False)
    return model


def fine_tune_centroids(model: nn.Module, data, config, progress: bool = True) -> list[dict]:
    """Train the shared values (and biases) of a :func:`share_weights` model for ``config.epochs``: SGD with
    Nesterov momentum and a cosine decay, seeded batch order (``train._train_one_epoch``).

    Each centroid's gradient is the sum of its weights' gradients (autograd through ``codebook[index]``), as in
    Deep Compression; its *step size* is ``config.lr * k / kept`` per layer, so a centroid moves like one
    average weight would. With the plain ``lr`` a sum over thousands of weights overshoots: LeNet-5's fc1 with 4
    shared values (95 % sparsity, 2 bits) went from 0.7 % to 90 % test error in one epoch; where it did not
    diverge it trained LeNet-300-100 a little further (over its 12 grid points the scaled step's error is
    -0.05 to +0.14 pp higher; 95 % / 4 bits: 1.58 % against 1.44 %). The kept/pruned
    pattern never changes. After every step the codebooks are rounded to their stored dtype (no-op for F32).
    Returns per-epoch rows like ``train.fine_tune``'s."""
    shared = [s for _, m in prunable_layers(model) if (s := _sharing(m)) is not None]
    codebooks = {id(s.codebook) for s in shared}
    groups = [
        {"params": [s.codebook], "lr": config.lr * len(s.codebook) / max(1.0, float(s.keep.sum()))} for s in shared
    ]
    others = [p for p in model.parameters() if id(p) not in codebooks and p.requires_grad]
    groups.append({"params": others, "lr": config.lr})
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
        for s in shared:
            s.round_codebook()

    history = []
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        loss = _train_one_epoch(model, x, y, optimizer, config.batch_size, generator, scheduler, round_codebooks)
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
    return history


def _snapshot(model: nn.Module, bias_dtype: str = "float16") -> _CodedModel:
    """The :class:`_CodedModel` of a :func:`share_weights` model as it is now (the model is not changed)."""
    _check_choice(bias_dtype, tuple(_BIAS_DTYPES), "bias dtype")
    layers: dict[str, _SharedLayer] = {}
    for name, module in prunable_layers(model):
        shared = _sharing(module)
        if shared is None:
            raise ValueError(f"layer {name!r} does not share its weights; call share_weights first")
        keep = shared.keep.detach().cpu().bool().reshape(-1)
        codebook = shared.codebook.detach().cpu().to(_DTYPE_BY_NAME[shared.codebook_dtype])
        indices = shared.index.detach().cpu().reshape(-1)[keep].numpy().astype(np.int64)
        k = int(indices.max()) + 1 if len(indices) else 0
        layers[f"{name}.weight"] = _SharedLayer(
            shape=tuple(shared.keep.shape),
            bits=shared.bits,
            positions=torch.nonzero(keep).reshape(-1).numpy().astype(np.int64),
            indices=indices,
            codebook=codebook[:k].numpy().copy(),
        )
    # the parametrizations' own entries (original, codebook, index, keep) are in ``layers`` already
    inner = tuple(f"{name}.parametrizations.weight." for name, _ in prunable_layers(model))
    tensors = {
        name: t.detach().cpu().to(_BIAS_DTYPES[bias_dtype]).clone()
        for name, t in model.state_dict().items()
        if name not in layers and not name.startswith(inner)
    }
    return _CodedModel(model.config, layers, tensors)


def unshare(model: nn.Module, bias_dtype: str = "float16") -> _CodedModel:
    """Turn a :func:`share_weights` model back into plain parameters (``weight = codebook[index] * keep``, biases
    rounded to ``bias_dtype`` in the model too, so the in-memory model computes what the file will) and return
    the :class:`_CodedModel` to encode."""
    coded = _snapshot(model, bias_dtype)
    for name, module in prunable_layers(model):
        # The file's weight (+0.0 where pruned), not the parametrization's (-0.0 under a negative centroid).
        weight = coded.layers[f"{name}.weight"].weight().to(_sharing(module).keep.device)
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        module.weight = nn.Parameter(weight)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name in coded.tensors:
                t.copy_(coded.tensors[name].to(t.dtype))
    return coded
