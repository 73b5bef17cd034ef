"""Training a pruned model at a dense model's speed: its ``torch.nn.utils.prune`` masks held aside while it trains.

Usage::

    from mnist_pruning.sparsity import MaskedTraining
    with MaskedTraining(model) as masked:      # prune.remove: plain weights holding the zeros; masks kept here
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        masked.watch(optimizer)                # pruned weights zeroed again after every optimizer.step()
        ...                                    # train as usual: no weight_orig * weight_mask at any forward
        with masked.pruning():                 # the masks attached again, to prune further through torch's API
            prune.l1_unstructured(model.fc, "weight", 0.5)
    # on exit prune.custom_from_mask attaches every mask again: weight_orig, weight_mask and a pruning hook

Why: while torch's masks are attached, a forward pre-hook recomputes ``weight = weight_orig * weight_mask`` at
every forward and the backward multiplies the gradient by the mask again. Here a pruned weight is a plain
parameter holding exact zeros; its gradient is masked as soon as backward has accumulated it (what the hooks'
multiplication does, so gradient clipping or a penalty sees the same gradients), and the weights are masked after
every optimizer step (which keeps them exactly zero under weight decay and momentum, also when a mask gained zeros
while the optimizer's momentum there was not zero).

What it equals: the weights the model computes with are bitwise those of training with the masks attached (a
kept entry gets the same gradient, times 1, and the optimizer updates entries element-wise; a pruned one is zero
either way, up to the sign of the zero), in the same memory format. The weight keeps ``weight_orig``'s layout,
where the hooks' ``orig * mask`` can lose it (channels_last with one input channel is ambiguous, so a convolution
on an MNIST image ran NCHW and reordered its output): there float32 convolutions round differently. Only
``weight_orig``'s pruned entries differ: with the hooks the optimizer moves them (weight decay, momentum) where no
forward ever reads them; here they are zero. So a mask may only gain zeros while training: a pruned weight's old
value is gone, :meth:`MaskedTraining.pruning` raises if a mask lost a zero. After the exit the pruning hook is a
``CustomFromMask`` whatever method computed the mask (torch keeps no method once a mask is removed); the mask is
what counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = ["MaskedTraining"]


def _pruned_tensors(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, tensor name)`` of every ``torch.nn.utils.prune`` reparametrisation attached in ``model``.

    Example::

        prune.l1_unstructured(net[0], "weight", 0.5)
        pruned_tensors(net)          # [(net[0], "weight")]
    """
    return [
        (module, hook._tensor_name)
        for module in model.modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    ]


def _check_only_gains_zeros(before: torch.Tensor, after: torch.Tensor, where: str) -> None:
    revived = int(((before == 0) & (after != 0)).sum())
    if revived:
        raise ValueError(
            f"the mask of {where} un-pruned {revived} weight(s) while training through MaskedTraining; "
            "masks may only gain zeros there (a pruned weight's old value is gone: it trains as an exact zero)"
        )


class MaskedTraining:
    """Context manager training ``model``'s pruned tensors as plain parameters, the masks held aside.

    Args:
        model: a model with ``torch.nn.utils.prune`` masks attached (any tensors, any modules); one without
            masks trains unchanged.

    Raises:
        RuntimeError: on entering it while it is already entered.

    Example::

        with MaskedTraining(model) as masked:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            masked.watch(optimizer)
            train(model, optimizer)
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.masks: dict[tuple[nn.Module, str], torch.Tensor] = {}  # (module, name) -> mask, while inside
        self._handles: list[torch.utils.hooks.RemovableHandle] = []  # optimizer hooks, until the exit
        self._grad_handles: list[torch.utils.hooks.RemovableHandle] = []  # gradient hooks, while detached
        self._active = False

    def __enter__(self) -> MaskedTraining:
        if self._active:
            raise RuntimeError("this MaskedTraining is already in use; enter it once at a time")
        self._detach()
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._attach()
        self._active = False

    def watch(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero the pruned weights after every ``optimizer.step()`` until the ``with`` block ends. The optimizer
        must hold the model's parameters (built inside the block or before it: ``prune.remove`` keeps each
        parameter object, only its name changes)."""
        self._handles.append(optimizer.register_step_post_hook(self._mask_weights))

    @contextlib.contextmanager
    def pruning(self) -> Iterator[None]:
        """The masks attached as ``torch.nn.utils.prune`` masks for the duration (to prune further, or to read
        the model as a masked one); on leaving, the new masks (tensors newly pruned too) are held aside again.
        Outside the ``with`` block the masks are attached anyway and this does nothing.

        Raises:
            ValueError: a mask un-pruned a weight (masks may only gain zeros while training).
        """
        if not self._active:
            yield
            return
        before = self.masks
        self._attach()
        try:
            yield
        finally:
            self._detach()
        for key, mask in before.items():
            module, name = key
            _check_only_gains_zeros(mask, self.masks[key], f"{type(module).__name__}.{name}")

    def _detach(self) -> None:
        self.masks = {}
        for module, name in _pruned_tensors(self.model):
            mask = self.masks[(module, name)] = getattr(module, f"{name}_mask").detach()
            layout = torch.empty_like(getattr(module, f"{name}_orig"))  # the strides it had (channels_last...)
            prune.remove(module, name)  # the same Parameter object, now `name`, holding orig * mask
            param = getattr(module, name)
            if param.stride() != layout.stride():
                # orig * mask can come out NCHW where a size-1 dim makes the layout ambiguous (conv1's one input
                # channel): convolution would then run NCHW and reorder its output; keep the parameter's layout.
                param.data = layout.copy_(param.data)
            hook = param.register_post_accumulate_grad_hook(self._masking(mask))
            self._grad_handles.append(hook)

    def _attach(self) -> None:
        for handle in self._grad_handles:
            handle.remove()
        self._grad_handles.clear()
        for (module, name), mask in self.masks.items():
            prune.custom_from_mask(module, name, mask)
        self.masks = {}

    @staticmethod
    def _masking(mask: torch.Tensor):
        @torch.no_grad()
        def mask_gradient(param: torch.Tensor) -> None:
            param.grad.mul_(mask)

        return mask_gradient

    @torch.no_grad()
    def _mask_weights(self, optimizer, args, kwargs) -> None:
        for (module, name), mask in self.masks.items():
            getattr(module, name).mul_(mask)
