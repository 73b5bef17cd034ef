"""Training, fine-tuning and evaluation, as plain as the PyTorch MNIST example.

Usage::

    from mnist_pruning.data import load_mnist
    from mnist_pruning.train import TrainConfig, train, evaluate, _save_checkpoint
    mnist = load_mnist()
    model, history = train("mlp", mnist, TrainConfig.for_model("mlp"))
    print(evaluate(model, mnist.val_x, mnist.val_y))        # {'loss': ..., 'accuracy': 0.98...}
    _save_checkpoint("runs/mlp_baseline.pt", model, TrainConfig.for_model("mlp"), history)

``fine_tune`` is ``train`` on an existing (possibly pruned) model. A model with ``torch.nn.utils.prune`` masks
trains through :class:`~mnist_pruning.sparsity.masked.MaskedTraining`: plain weights holding exact zeros, masks
held aside and put back at the end, so pruned weights stay exactly zero (momentum and weight decay included), the
weights it computes with are those of training with the prune hooks attached (bitwise in one memory format), and
no forward recomputes ``weight_orig * weight_mask``.

The device is picked once, by :func:`_get_device`: CUDA when present, else CPU. Histories log the validation
split (``mnist_pruning.data``): the test set is evaluated once per final model, by the caller, and only reported.

Precision: ``TrainConfig.precision="auto"`` (the default) trains in bfloat16 autocast where the device supports
it (CPUs with AVX-512 BF16 or AMX, CUDA GPUs from Ampere on) and in float32 elsewhere; the weights, the optimizer
state, pruning decisions and every saved or evaluated model stay float32, only the forward/backward arithmetic
runs in bfloat16. ``precision="fp32"`` keeps the plain float32 path. The resolved value is what the config holds.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .checks import _check_choice, _check_fraction, _check_int
from .data import MNISTData, _batches
from .files import CorruptFileError, _load_torch, _save_torch
from .models import ModelConfig, build_model
from .settings import _show_progress
from .sparsity.masked import MaskedTraining

_LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, x, y) -> a scalar loss

__all__ = [
    "TrainConfig",
    "evaluate",
    "train",
    "fine_tune",
]


_PRECISIONS = ("auto", "bf16", "fp32")
_OPTIMIZERS = ("sgd", "adam")


def _bf16_supported(device: torch.device | None = None) -> bool:
    """Whether bfloat16 autocast runs natively on ``device`` (default: :func:`_get_device`)."""
    device = device or _get_device()
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


@dataclass
class TrainConfig:
    """How a model is trained (SGD with Nesterov momentum, or Adam, and a cosine learning-rate decay)."""

    epochs: int = 20  # passes over the training set
    batch_size: int = 128  # images per optimizer step
    lr: float = 0.05  # peak learning rate, decayed to ~0 by a cosine schedule over all steps
    momentum: float = 0.9  # SGD (Nesterov) momentum
    weight_decay: float = 5e-4  # L2 penalty, as Han et al. 2015 train with; also helps magnitude pruning
    warmup: float = 0.03  # fraction of steps with a linear learning-rate warm-up (keeps early steps stable)
    seed: int = 0  # seeds init (when training from scratch) and the batch order
    precision: str = "auto"  # "bf16" autocast (fp32 master weights) | "fp32"; "auto" = bf16 where supported
    optimizer: str = "sgd"  # "sgd" (Nesterov, `momentum`) | "adam" (default betas; `momentum` unused)

    def __post_init__(self) -> None:
        _check_choice(self.precision, _PRECISIONS, "precision")
        _check_choice(self.optimizer, _OPTIMIZERS, "optimizer")
        if self.precision == "auto":
            self.precision = "bf16" if _bf16_supported() else "fp32"
        _check_int(self.epochs, "epochs")
        _check_int(self.batch_size, "batch_size")
        _check_int(self.seed, "seed", minimum=0)
        _check_fraction(self.lr, "lr", 1e-12, math.inf)
        _check_fraction(self.momentum, "momentum", 0.0, 1.0)
        _check_fraction(self.weight_decay, "weight_decay", 0.0, math.inf)
        _check_fraction(self.warmup, "warmup", 0.0, 0.999)

    @classmethod
    def for_model(cls, arch: str, **overrides) -> TrainConfig:
        """The full-budget baseline recipe for ``"mlp"`` or ``"cnn"`` (see the closing notes for timings)."""
        # LeNet-5-Caffe has no ReLU between its convolutions; at lr 0.05 it can diverge in the first epoch.
        defaults = {"mlp": {"epochs": 20, "lr": 0.05}, "cnn": {"epochs": 10, "lr": 0.02}}
        return cls(**{**defaults[arch], **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["optimizer"] == "sgd":  # configs from before the field existed keep their dict, hence their hashes
            del d["optimizer"]
        return d


def _get_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _train_one_epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    after_step=None,
    precision: str = "fp32",
    penalty: Callable[[], torch.Tensor] | None = None,
    loss_fn: _LossFn | None = None,
) -> float:
    """One pass over ``(x, y)`` in seeded random order; returns the mean training loss (penalty included).

    ``after_step()`` is called after every optimizer step, outside autocast (gradual pruning hooks in there and
    ranks float32 weights). ``precision="bf16"`` runs forward and loss in bfloat16 autocast. ``penalty()``, when
    given, is called once per step, outside autocast, and added to the loss (e.g. a KL term). ``loss_fn(logits,
    x, y)`` replaces the cross-entropy (e.g. :class:`~mnist_pruning.distill.Distillation`).
    """
    model.train()
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    total = torch.zeros((), device=x.device)
    count = 0
    for xb, yb in _batches(x, y, batch_size, shuffle=True, generator=generator):
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb) if loss_fn is None else loss_fn(logits, xb, yb)
        if penalty is not None:
            loss = loss + penalty()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        total += loss.detach().float() * yb.shape[0]  # no .item() per step: a sync each step on a GPU
        count += yb.shape[0]
    return total.item() / max(count, 1)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy (fraction in [0, 1]) of ``model`` on ``(x, y)``."""
    model.eval()
    device = next(model.parameters()).device
    loss, correct = 0.0, 0
    for xb, yb in _batches(x, y, batch_size):
        xb, yb = xb.to(device), yb.to(device)
        logits = model(xb)
        loss += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    n = y.shape[0]
    return {"loss": loss / n, "accuracy": correct / n}


def _optimizer(model: nn.Module, config: TrainConfig, steps: int):
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    warm = int(config.warmup * steps)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps - warm, 1))
    if warm == 0:
        return optimizer, cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.05, total_iters=warm)
    return optimizer, torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warm])


def fine_tune(
    model: nn.Module,
    data: MNISTData,
    config: TrainConfig,
    desc: str = "fine-tune",
    progress: bool = True,
    after_step=None,
    penalty: Callable[[], torch.Tensor] | None = None,
    masked: MaskedTraining | None = None,
    loss_fn: _LossFn | None = None,
) -> list[dict[str, float]]:
    """Train an existing model in place for ``config.epochs``; returns per-epoch history.

    ``penalty()`` is added to every step's loss, ``loss_fn`` replaces the cross-entropy (see
    :func:`_train_one_epoch`).

    History rows: ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy`` (the validation split, float32),
    ``seconds`` (cumulative, evaluation included).

    Pruning masks are held aside while training and attached again at the end (see the module docstring).
    ``masked`` is the :class:`~mnist_pruning.sparsity.masked.MaskedTraining` of ``model`` to train through (None:
    a new one); give one when ``after_step`` changes masks, which it then does inside ``masked.pruning()``.
    """
    if masked is not None and masked.model is not model:
        raise ValueError("masked= must be a MaskedTraining of the model being trained (masked.model is model)")
    device = next(model.parameters()).device
    if device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        # oneDNN's channels-last convolutions train LeNet-5 ~1.7x faster on CPU than the default NCHW path.
        model.to(memory_format=torch.channels_last)  # undone below, so saved/reloaded models compute alike
    x, y = data.train_x.to(device), data.train_y.to(device)
    steps_per_epoch = math.ceil(x.shape[0] / config.batch_size)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    start = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc=desc, disable=not _show_progress(progress), leave=False)
    with masked or MaskedTraining(model) as training:
        optimizer, scheduler = _optimizer(model, config, config.epochs * steps_per_epoch)
        training.watch(optimizer)
        for epoch in bar:
            train_loss = _train_one_epoch(
                model,
                x,
                y,
                optimizer,
                config.batch_size,
                generator,
                scheduler,
                after_step,
                config.precision,
                penalty,
                loss_fn,
            )
            metrics = evaluate(model, data.val_x, data.val_y)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": metrics["loss"],
                    "val_accuracy": metrics["accuracy"],
                    "seconds": time.perf_counter() - start,
                }
            )
            bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{metrics['accuracy']:.4f}")
    model.to(memory_format=torch.contiguous_format)
    return history


def train(
    spec: str | ModelConfig,
    data: MNISTData,
    config: TrainConfig,
    device: torch.device | None = None,
    progress: bool = True,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Build a model from ``spec`` (seeded by ``config.seed``) and train it from scratch; return it + history."""
    torch.manual_seed(config.seed)
    model = build_model(spec).to(device or _get_device())
    history = fine_tune(model, data, config, desc=f"train {model.config.arch}", progress=progress)
    return model, history


def _save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    train_config: TrainConfig | None = None,
    history: list[dict[str, float]] | None = None,
    **extra,
) -> None:
    """Write ``{model_config, train_config, state_dict, history, ...}`` atomically; no pickled modules."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "model_config": model.config.to_dict(),
        "train_config": train_config.to_dict() if train_config else None,
        "state_dict": state_dict,
        "history": history or [],
        **extra,
    }
    _save_torch(payload, path)


def _load_checkpoint(path: str | os.PathLike, device: torch.device | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint (integrity checked, weights only, no code executed); return it and the
    whole payload. A damaged file raises :class:`~mnist_pruning.files.CorruptFileError` naming it."""
    payload = _load_torch(path)
    try:
        model = build_model(ModelConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, KeyError, ValueError, RuntimeError) as e:
        raise CorruptFileError(f"{str(path)!r} is not an mnist_pruning checkpoint of a known model: {e}") from e
    return model.to(device or _get_device()), payload
