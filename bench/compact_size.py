"""How small do pruned models get on disk? Dense checkpoint vs compact file vs the information limit.

Run from the repository root (takes a few seconds on CPU)::

    python bench/compact_size.py                                   # both models, random init
    python bench/compact_size.py --checkpoint runs/mlp_baseline.pt # a trained model instead (repeatable)

For each model, global magnitude pruning at 0.3 ... 0.99, then per sparsity: the dense ``torch.save`` size, the
compact file size (header included), the information limit (non-zero values at 32 bits + log2 C(n, nnz) for
their positions, summed over tensors), their ratio, and the encoding chosen per weight tensor. Each compact file
is written, reloaded and compared bitwise. A ratio above 1.15 at sparsity >= 0.5 is marked FAIL and makes the
exit status 1. Random weights are fine here: sizes depend only on the number and positions of non-zeros, and
magnitude pruning of random weights spreads them no more evenly than training does.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from mnist_pruning.models import build_model  # noqa: E402
from mnist_pruning.sparsity.compact import (  # noqa: E402
    _dense_bytes,
    compact_summary,
    load_compact,
    save_compact,
)
from mnist_pruning.sparsity.measure import _effective_state_dict, prunable_layers  # noqa: E402

SPARSITIES = (0.3, 0.5, 0.7, 0.9, 0.99)
LIMIT_RATIO = 1.15
SHORT = {"dense": "dn", "bitmask": "bm", "ef": "ef", "index": "ix"}


def _bits_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    # Integer views: torch.equal alone would call -0.0 and +0.0 equal.
    def bits(t: torch.Tensor) -> torch.Tensor:
        return t.view(torch.int32) if t.dtype == torch.float32 else t

    return list(a) == list(b) and all(torch.equal(bits(a[k]), bits(b[k])) for k in a)


def bench_model(label: str, base: nn.Module, workdir: Path) -> bool:
    """Print one table for ``base``; return False if any ratio at sparsity >= 0.5 exceeds the limit."""
    ok = True
    print(f"\n{label}: {sum(p.numel() for p in base.parameters()):,} parameters")
    print(
        f"{'sparsity':>8} {'dense B':>10} {'compact B':>10} {'limit B':>10} {'ratio':>7} {'x smaller':>9}"
        f"  {'lossless':>8}  encodings (weights)"
    )
    for s in SPARSITIES:
        model = copy.deepcopy(base)
        params = [(m, "weight") for _, m in prunable_layers(model)]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=s)
        dense = _dense_bytes(model)
        path = workdir / f"sparsity-{s}.safetensors"
        compact = save_compact(model, path)
        lossless = _bits_equal(load_compact(path), _effective_state_dict(model))
        rows = compact_summary(model)
        limit_bytes = sum(r["limit_bits"] for r in rows) / 8
        ratio = compact / limit_bytes
        encodings = " ".join(
            f"{r['name'][: -len('.weight')]}:{SHORT[r['encoding']]}" for r in rows if r["name"].endswith(".weight")
        )
        fail = (s >= 0.5 and ratio > LIMIT_RATIO) or not lossless
        ok &= not fail
        print(
            f"{s:>8.2f} {dense:>10,} {compact:>10,} {limit_bytes:>10,.0f} {ratio:>7.3f} {dense / compact:>9.1f}"
            f"  {'yes' if lossless else 'NO':>8}  {encodings}{'  FAIL' if fail else ''}"
        )
    return ok


def load_trained(path: str) -> tuple[str, nn.Module]:
    # Imported here so that the random-init default needs nothing beyond models and the sparsity core.
    from mnist_pruning.train import _load_checkpoint

    model, _ = _load_checkpoint(path, device=torch.device("cpu"))
    return f"{Path(path).name}", model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", action="append", default=[], help="trained checkpoint (repeatable); default: random init"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random init (default 0)")
    args = parser.parse_args(argv)

    if args.checkpoint:
        models = [load_trained(p) for p in args.checkpoint]
    else:
        torch.manual_seed(args.seed)
        models = [("LeNet-300-100 (mlp, random init)", build_model("mlp"))]
        models.append(("LeNet-5-Caffe (cnn, random init)", build_model("cnn")))
    print(
        "dn=dense, bm=bitmask, ef=Elias-Fano, ix=index; limit = nnz*32 bits + log2 C(n, nnz) per tensor; "
        f"FAIL = ratio > {LIMIT_RATIO} at sparsity >= 0.5, or not bitwise lossless"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ok = all([bench_model(label, model, Path(tmp)) for label, model in models])
    print("\nall within the limit" if ok else "\nFAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
