"""Pruning for any PyTorch model: magnitude and N:M masks, structured surgery, compact files, honest measurements.

Usage::

    import torch
    from torch import nn
    from mnist_pruning import sparsity as sp

    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                        nn.Linear(256, 10))

    sp.sparsify_(net, "global", 0.9)                    # torch.nn.utils.prune masks, one threshold for all layers
    sp.sparsify_(net, "nm", pattern="2:4", filter_fn=lambda mod, fqn: fqn != "5")   # or N:M, layers chosen
    with sp.MaskedTraining(net) as masked:              # fine-tune: masks held aside, pruned weights stay 0
        ...                                             # (masked.watch(optimizer); see .masked)
    sp.bake_in(net)                                     # prune.remove: dense tensors with the zeros in them
    sp.sparsity(net), sp.count_nonzero_parameters(net)  # counted in the weights, never taken from the request
    sp.save_compact(net, "net.safetensors")             # non-zeros + positions (+ a CRC); ~9x smaller at 90 %
    net.load_state_dict(sp.load_compact("net.safetensors"))

    small = sp.shrink(dense_net, 0.5)                   # structured: half the hidden units cut out, a new model
    sp.flops(small, (1, 28, 28)), sp.latency_ms(small, 256, (1, 28, 28))
    fast = sp.to_sparse_inference(net, (1, 28, 28))     # CSR kernels where they measure faster (CPU inference)

What is here (each module's docstring has the details):

- :mod:`.unstructured` - :func:`sparsify_` (``l1`` per layer, ``global``, ``nm``) with torchao's ``filter_fn``
  convention, and :func:`bake_in`.
- :mod:`.masked` - :class:`MaskedTraining`: a masked model trains as plain weights, masks held aside and put back,
  with the same weights as training through the prune hooks.
- :mod:`.nm` - :class:`NMPruning`, a ``torch.nn.utils.prune.BasePruningMethod``; pattern checks and the N:M format.
- :mod:`.structured` - units chosen by L2 norm (``ln_structured``) and surgery on any chain of Linear / Conv2d
  layers (:class:`Link`, traced from an ``nn.Sequential`` or named), biases folded so outputs stay equal.
- :mod:`.compact` - the compact sparse file format and the information limit it is measured against.
- :mod:`.measure` - the one definition of the weights a model computes with, and sparsity, parameters, FLOPs,
  latency (:func:`time_models`: alternating rounds, best median and noise band).
- :mod:`.kernels` - :class:`SparseLinear` / :class:`SparseConv2d`, Linear and Conv2d as CSR products.
- :mod:`.variational` - Sparse Variational Dropout (Molchanov et al. 2017): VD Linear / Conv2d layers, the KL
  term, and :func:`~.variational.finalize_` back to plain layers with prune masks where ``log alpha > 3``.
- :mod:`.inference` - :func:`to_sparse_inference`: a baked-in pruned model whose Linear / Conv2d layers run as
  torch.sparse CSR products where, per layer and batch size, that measured faster than dense.

This sub-package depends on torch, numpy and safetensors only, never on the MNIST experiment code around it
(models, data, training, sweep, settings, pandas); ``tests/test_sparsity_reuse.py`` holds it to that.
"""

from .compact import compact_ratio, load_compact, save_compact, save_dense
from .inference import apply_sparse_plan, plan_sparse_inference, to_sparse_inference
from .kernels import SparseConv2d, SparseLinear
from .masked import MaskedTraining
from .measure import (
    Timing,
    count_nonzero_parameters,
    count_parameters,
    effective_flops,
    effective_weight,
    flops,
    latency_ms,
    layer_sparsity,
    prunable_layers,
    sparsity,
    time_models,
)
from .nm import NMPruning, check_nm, nm_unstructured, parse_pattern
from .structured import Link, apply_structured_masks, apply_surgery, shrink
from .unstructured import METHODS, bake_in, sparsify_

__all__ = [
    "METHODS",
    "sparsify_",
    "bake_in",
    "MaskedTraining",
    "NMPruning",
    "nm_unstructured",
    "check_nm",
    "parse_pattern",
    "Link",
    "apply_structured_masks",
    "apply_surgery",
    "shrink",
    "save_compact",
    "load_compact",
    "save_dense",
    "compact_ratio",
    "prunable_layers",
    "effective_weight",
    "sparsity",
    "layer_sparsity",
    "count_parameters",
    "count_nonzero_parameters",
    "flops",
    "effective_flops",
    "latency_ms",
    "Timing",
    "time_models",
    "to_sparse_inference",
    "plan_sparse_inference",
    "apply_sparse_plan",
    "SparseLinear",
    "SparseConv2d",
]
