"""Does N:M (2:4) sparsity make a layer faster? Measured, not assumed.

Usage::

    python bench/nm_speed.py                    # CPU part ~15 s; GPU part only on CUDA compute capability >= 8.0
    python bench/nm_speed.py --threads 2 --min-run-time 1.0 --gpu-size 4096

CPU: times ``F.linear`` with a dense weight against the same weight after 2:4 masking. The masked weight is
still a dense tensor with half of its entries zero, and PyTorch has no CPU N:M kernel
(``to_sparse_semi_structured`` accepts only CUDA tensors, which the script shows), so the expected ratio is
~1.0: masking saves no CPU time.

GPU (Ampere or newer): times a 2:4-pruned fp16 ``[size, size] @ [size, size]`` matmul dense against
``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt/CUTLASS sparse tensor cores) and prints the speedup.
Otherwise it prints a "skipped" line.

``--threads`` defaults to 1 because the development machine is shared; timings use
``torch.utils.benchmark.Timer``; each CPU number is the best of ``--rounds`` alternating dense/masked medians.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

# Running as `python bench/nm_speed.py` puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_pruning.sparsity.measure import Timing, time_models  # noqa: E402
from mnist_pruning.sparsity.nm import _nm_mask, _pad_to_multiple, check_nm, semi_structured_available  # noqa: E402

# (name, out_features, in_features): the two large LeNet layers plus a square layer big enough to be compute-bound.
CPU_SHAPES = [("mlp.fc1 300x784", 300, 784), ("cnn.fc1 500x800", 500, 800), ("square 2048x2048", 2048, 2048)]
CPU_BATCH = 256


def prune_2_4(w: torch.Tensor) -> torch.Tensor:
    return w * _nm_mask(w, 2, 4).to(w.dtype)


def best_ms(calls: dict, x: torch.Tensor, threads: int, min_run_time: float, rounds: int) -> dict[str, float]:
    """Best of ``rounds`` alternating Timer medians of each ``call(x)`` (``sparsity.measure.time_models``)."""
    timing = Timing(rounds=rounds, min_run_time=min_run_time, batches=(x.shape[0],), threads=threads)
    timed = time_models(calls, timing, inputs=lambda _name, _batch: x)
    return {name: per_b[x.shape[0]].best_ms for name, per_b in timed.items()}


def bench_cpu(threads: int, min_run_time: float, batch: int, rounds: int) -> None:
    print(
        f"CPU: F.linear, batch {batch}, {threads} thread(s), fp32; "
        f"best of {rounds} alternating torch.utils.benchmark.Timer medians"
    )
    print(f"{'layer':<20} {'dense ms':>10} {'2:4-masked ms':>14} {'masked/dense':>13}")
    for name, out_f, in_f in CPU_SHAPES:
        torch.manual_seed(0)
        w = torch.randn(out_f, in_f)
        w_nm = prune_2_4(w)
        assert check_nm(w_nm, 2, 4)
        # Dense and masked alternate over the rounds, so drift from other jobs on a shared CPU hits both alike.
        calls = {"dense": lambda x, w=w: F.linear(x, w), "masked": lambda x, w=w_nm: F.linear(x, w)}
        ms = best_ms(calls, torch.randn(batch, in_f), threads, min_run_time, rounds)
        dense, masked = ms["dense"], ms["masked"]
        print(f"{name:<20} {dense:>10.3f} {masked:>14.3f} {masked / dense:>13.2f}")
    try:
        torch.sparse.to_sparse_semi_structured(torch.zeros(64, 64, dtype=torch.float16))
        cpu_kernel = "to_sparse_semi_structured accepted a CPU tensor (unexpected with this PyTorch)"
    except RuntimeError as e:
        cpu_kernel = f"to_sparse_semi_structured on CPU -> RuntimeError: {e}"
    print(
        "No CPU N:M kernel: a 2:4-masked weight is a dense tensor with zeros, so the CPU does the same work.\n"
        f"  ({cpu_kernel})"
    )


def bench_gpu(size: int, min_run_time: float) -> None:
    if not semi_structured_available():
        print("GPU semi-structured 2:4 matmul: skipped: needs CUDA compute capability >= 8.0 (none here)")
        return
    torch.manual_seed(0)
    # Zero padding keeps groups aligned (they start at column 0) and satisfies the kernels' shape multiples.
    w = _pad_to_multiple(prune_2_4(torch.randn(size, size, device="cuda", dtype=torch.float16)), 64, 64)
    x = torch.randn(w.shape[1], size, device="cuda", dtype=torch.float16)
    w_sparse = torch.sparse.to_sparse_semi_structured(w)
    torch.testing.assert_close(torch.mm(w_sparse, x), torch.mm(w, x), rtol=1e-2, atol=1e-1)
    label = f"fp16 {tuple(w.shape)} @ {tuple(x.shape)}"
    calls = {"dense": lambda x: torch.mm(w, x), "sparse": lambda x: torch.mm(w_sparse, x)}
    ms = best_ms(calls, x, 1, min_run_time, 1)  # the Timer synchronises CUDA itself
    dense, sparse = ms["dense"], ms["sparse"]
    print(f"GPU {torch.cuda.get_device_name()} ({type(w_sparse).__name__}), {label}:")
    print(f"  dense {dense:.3f} ms, 2:4 semi-structured {sparse:.3f} ms, speedup {dense / sparse:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the CPU timings (default 1)")
    parser.add_argument("--batch", type=int, default=CPU_BATCH, help=f"CPU batch size (default {CPU_BATCH})")
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds per measurement (default 0.3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating CPU rounds per layer (default 3)")
    parser.add_argument("--gpu-size", type=int, default=4096, help="GPU matmul size (default 4096)")
    args = parser.parse_args(argv)
    for flag in ("threads", "batch", "rounds", "gpu_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.min_run_time <= 0:
        parser.error(f"--min-run-time must be > 0, got {args.min_run_time}")
    print(f"torch {torch.__version__}")
    bench_cpu(args.threads, args.min_run_time, args.batch, args.rounds)
    bench_gpu(args.gpu_size, args.min_run_time)


if __name__ == "__main__":
    main()
