"""Sparse Variational Dropout (Molchanov, Ashukha & Vetrov 2017) for any model's Linear / Conv2d layers.

Usage::

    from mnist_pruning.sparsity import variational as vd
    vd.to_variational_(model)                      # Linear / Conv2d -> VDLinear / VDConv2d, weights kept
    ...                                            # train on  N * cross_entropy + kl_weight * vd.kl(model)
    vd.finalize_(model)                            # back to plain layers + prune masks where log alpha > 3
    sparsity.bake_in(model)                        # as after any other pruning

Every weight ``w`` gets a Gaussian posterior ``N(theta, sigma^2)`` with ``sigma^2 = alpha * theta^2``; the
log-uniform prior's KL term (approximated as in the paper, :func:`_neg_kl`) pushes ``alpha`` up, and a weight with
``log alpha > threshold`` (3, i.e. dropout rate above ~95 %) is noise and removed. The layers parametrise
``theta`` (the layer's own ``weight``) and ``log sigma^2`` (``log_sigma2``), the additive reparametrisation that
keeps gradients of large-alpha weights small. In training they sample pre-activations by the local
reparametrisation trick (mean ``x theta_kept``, variance ``x^2 sigma^2``); in eval they compute deterministically
with ``theta_kept``, i.e. ``theta`` where ``log alpha <= threshold`` and 0 elsewhere, which is exactly what
:func:`finalize_` makes permanent with ``torch.nn.utils.prune.custom_from_mask``. Using ``theta_kept`` in the
training mean too (the authors' ``train_clip``) trains the network that eval and the finalised model compute.

:class:`_VDLinear` and :class:`_VDConv2d` subclass ``nn.Linear`` / ``nn.Conv2d``, so their ``weight`` (``theta``)
is where every tool expects it; the pruning and measurement tools, though, are for the finalised model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from ..checks import _check_fraction
from .measure import _FilterFn, prunable_layers

__all__ = [
    "to_variational_",
    "kl",
    "finalize_",
]

_LOG_ALPHA_RANGE = (-10.0, 10.0)  # log alpha is clamped here (as the authors' code does): keeps exp() finite
_LOG_SIGMA2_RANGE = (-30.0, 10.0)  # initial log sigma^2 allowed: from "deterministic" to "noise"
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695  # the paper's fit of -KL(q || log-uniform prior) (eq. 14)
_EPS = 1e-8  # added to the sampled variance before sqrt: a zero input would give an infinite gradient
_THETA_EPS = 1e-16  # added to theta^2 before log: a zero weight gets log alpha = the clamp's top, not inf


def _check_threshold(threshold: object) -> float:
    return _check_fraction(threshold, "threshold (log alpha above which a weight is removed)", *_LOG_ALPHA_RANGE)


def _check_log_sigma2(value: object) -> float:
    return _check_fraction(value, "log_sigma2 (initial log sigma^2 of every weight)", *_LOG_SIGMA2_RANGE)


def _neg_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    """The paper's approximation of ``-KL(q(w | theta, alpha) || p(w))`` under the log-uniform prior, elementwise.

    ``k1 * sigmoid(k2 + k3 * log_alpha) - 0.5 * log1p(exp(-log_alpha)) - k1``: never positive, increasing in
    ``log_alpha`` and 0 in the limit ``alpha -> inf``.

    Example::

        neg_kl(torch.tensor([-8.0, 0.0, 8.0]))   # tensor([-4.6359, -0.4312, -0.0002])
    """
    return _K1 * torch.sigmoid(_K2 + _K3 * log_alpha) - 0.5 * torch.nn.functional.softplus(-log_alpha) - _K1


class _Variational:
    """What both VD layers share: ``log_sigma2``, ``log alpha``, the KL term and the keep-mask."""

    weight: nn.Parameter
    log_sigma2: nn.Parameter
    threshold: float

    def _init_variational(self, log_sigma2: float, threshold: float) -> None:
        self.threshold = _check_threshold(threshold)
        self.log_sigma2 = nn.Parameter(torch.full_like(self.weight, _check_log_sigma2(log_sigma2)))

    def log_alpha(self) -> torch.Tensor:
        """``log sigma^2 - log theta^2`` per weight, clamped to :data:`_LOG_ALPHA_RANGE`."""
        return torch.clamp(self.log_sigma2 - torch.log(self.weight * self.weight + _THETA_EPS), *_LOG_ALPHA_RANGE)

    def kl(self) -> torch.Tensor:
        """``KL(q || prior)`` of this layer's weights, summed (a non-negative scalar)."""
        return -_neg_kl(self.log_alpha()).sum()

    def keep_mask(self) -> torch.Tensor:
        """Boolean mask of the weights kept: ``log alpha <= threshold``."""
        return self.log_alpha() <= self.threshold

    def _sampled(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return mean + torch.sqrt(var + _EPS) * torch.randn_like(mean)

    def _masked_weight(self) -> torch.Tensor:
        return self.weight * self.keep_mask().to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold:g}"  # type: ignore[misc]


class _VDLinear(_Variational, nn.Linear):
    """``nn.Linear`` with a Gaussian posterior per weight (theta = ``weight``, ``log_sigma2``); bias deterministic.

    Example::

        layer = VDLinear(784, 300)            # theta as nn.Linear initialises it, log sigma^2 = -10
        layer.train(); y = layer(x)           # sampled pre-activations (local reparametrisation)
        layer.eval(); y = layer(x)            # x @ (theta * (log_alpha <= 3)).T + bias
    """

    def __init__(self, *args, log_sigma2: float = -10.0, threshold: float = 3.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_variational(log_sigma2, threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.functional.linear(x, self._masked_weight(), self.bias)
        mean = nn.functional.linear(x, self._masked_weight(), self.bias)
        return self._sampled(mean, nn.functional.linear(x * x, torch.exp(self.log_sigma2)))


class _VDConv2d(_Variational, nn.Conv2d):
    """``nn.Conv2d`` with a Gaussian posterior per weight, as :class:`_VDLinear` (zero padding only).

    Example::

        layer = VDConv2d(1, 20, kernel_size=5)
    """

    def __init__(self, *args, log_sigma2: float = -10.0, threshold: float = 3.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"VDConv2d supports padding_mode 'zeros' only, got {self.padding_mode!r}")
        self._init_variational(log_sigma2, threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self._conv_forward(x, self._masked_weight(), self.bias)
        mean = self._conv_forward(x, self._masked_weight(), self.bias)
        return self._sampled(mean, self._conv_forward(x * x, torch.exp(self.log_sigma2), None))


def _layer_args(module: nn.Module) -> tuple[type[nn.Module], type[nn.Module], dict]:
    """(plain class, VD class, constructor kwargs) of a Linear / Conv2d layer, VD or not."""
    factory = {"device": module.weight.device, "dtype": module.weight.dtype, "bias": module.bias is not None}
    if isinstance(module, nn.Linear):
        return (
            nn.Linear,
            _VDLinear,
            {"in_features": module.in_features, "out_features": module.out_features, **factory},
        )
    conv = {k: getattr(module, k) for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding")}
    conv.update(dilation=module.dilation, groups=module.groups, padding_mode=module.padding_mode)
    return nn.Conv2d, _VDConv2d, {**conv, **factory}


def _empty(cls: type[nn.Module], kwargs: dict) -> nn.Module:
    """``cls(**kwargs)`` with uninitialised parameters, as ``torch.nn.utils.skip_init`` builds it: no RNG drawn."""
    return cls(**{**kwargs, "device": "meta"}).to_empty(device=kwargs["device"])


def _copy_into(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` with ``old``'s weight and bias copied in (a layer's effective weight if it is masked)."""
    with torch.no_grad():
        new.weight.copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    return new


def _replace(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def _variational_layers(model: nn.Module) -> list[tuple[str, _VDLinear | _VDConv2d]]:
    """Every VD layer of ``model``.

    Args:
        model: any module.

    Returns:
        ``(name, module)`` pairs, in ``named_modules`` order.

    Example::

        >>> to_variational_(net); [name for name, _ in variational_layers(net)]   # ["1", "3", "5"]
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _Variational)]


def to_variational_(
    model: nn.Module, log_sigma2: float = -10.0, threshold: float = 3.0, filter_fn: _FilterFn | None = None
) -> nn.Module:
    """Swap ``model``'s Linear / Conv2d layers that ``filter_fn(module, fqn)`` accepts for VD layers, in place.

    Weights and biases are copied (theta starts at the trained weights), every ``log sigma^2`` starts at
    ``log_sigma2`` (-10: ``alpha = e^-10 / theta^2``, almost deterministic). Layers already VD are left alone.

    Args:
        model: any module; its class, config and other submodules are untouched.
        log_sigma2: initial ``log sigma^2`` of every weight, in [-30, 10].
        threshold: ``log alpha`` above which a weight counts as removed (eval forward, :func:`finalize_`), in
            [-10, 10].
        filter_fn: torchao-style ``(module, fqn) -> bool`` choosing among the Linear / Conv2d layers; None = all.

    Returns:
        ``model``.

    Raises:
        ValueError: a bad ``log_sigma2`` / ``threshold``, a masked layer (bake the masks in first), or no layer
            chosen; raised before any layer is swapped.

    Example::

        to_variational_(model, filter_fn=lambda mod, fqn: fqn != "fc3")
    """
    log_sigma2, threshold = _check_log_sigma2(log_sigma2), _check_threshold(threshold)
    layers = [(n, m) for n, m in prunable_layers(model, filter_fn) if not isinstance(m, _Variational)]
    if not layers:
        raise ValueError("filter_fn accepted no plain Linear / Conv2d layer of the model: nothing to convert")
    for name, module in layers:
        if prune.is_pruned(module):
            raise ValueError(f"layer {name!r} has prune masks attached; sparsity.bake_in(model) first")
    for name, module in layers:
        _, vd_cls, kwargs = _layer_args(module)
        new = _empty(vd_cls, {**kwargs, "log_sigma2": log_sigma2, "threshold": threshold})
        with torch.no_grad():
            new.log_sigma2.fill_(log_sigma2)
        _replace(model, name, _copy_into(new, module).train(module.training))
    return model


def kl(model: nn.Module) -> torch.Tensor:
    """The KL term of Sparse VD: the sum over all VD layers of ``model``.

    Args:
        model: any module.

    Returns:
        A scalar tensor with gradients (0 when there are no VD layers).

    Example::

        >>> loss = F.cross_entropy(model(x), y) + kl(model) / n_train
    """
    terms = [m.kl() for _, m in _variational_layers(model)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


@torch.no_grad()
def _log_alpha(model: nn.Module) -> dict[str, torch.Tensor]:
    """``log alpha`` of every weight of every VD layer.

    Args:
        model: any module.

    Returns:
        ``{layer name: log alpha}``, detached copies.

    Example::

        >>> {name: (la > 3).float().mean() for name, la in log_alpha(model).items()}   # the share removed
    """
    return {name: m.log_alpha().detach().clone() for name, m in _variational_layers(model)}


@torch.no_grad()
def finalize_(model: nn.Module, threshold: float | None = None) -> nn.Module:
    """Swap every VD layer back for a plain Linear / Conv2d with a prune mask keeping ``log alpha <= threshold``.

    The new layers hold ``theta`` as ``weight_orig`` and the mask as ``weight_mask``
    (``torch.nn.utils.prune.custom_from_mask``), so ``bake_in``, ``save_compact`` and the measurements work as
    after any pruning, and the model computes exactly what it computed in eval mode as a VD model.

    Args:
        model: a model with VD layers (from :func:`to_variational_`).
        threshold: overrides every layer's own threshold, in [-10, 10]; None keeps them.

    Returns:
        ``model``, with no VD layer left.

    Raises:
        ValueError: a bad ``threshold``, or a model without VD layers.

    Example::

        finalize_(model); sparsity.layer_sparsity(model)
    """
    threshold = None if threshold is None else _check_threshold(threshold)
    layers = _variational_layers(model)
    if not layers:
        raise ValueError("the model has no VD layer (VDLinear / VDConv2d) to finalise")
    for name, module in layers:
        keep = module.log_alpha() <= (module.threshold if threshold is None else threshold)
        plain_cls, _, kwargs = _layer_args(module)
        new = _copy_into(_empty(plain_cls, kwargs), module).train(module.training)
        prune.custom_from_mask(new, "weight", keep.to(new.weight.dtype))
        _replace(model, name, new)
    return model
