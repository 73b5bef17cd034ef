"""How fast does the package train on CPU? Preloaded tensors vs a DataLoader, and the CNN's FLOP rate.

Run from the repository root (about half a minute on a 2-core CPU)::

    python bench/train_speed.py                         # 150 batches per timing, 3 alternating rounds
    python bench/train_speed.py --batches 0             # whole epochs instead of extrapolating (slower)
    python bench/train_speed.py --threads 1 --rounds 5 --data-dir /path/to/data

(a) LeNet-300-100 (``mlp``) training, batch 128, the package's SGD recipe: the package's way (``load_mnist()``
tensors, ``train_one_epoch`` slicing them with ``batches``) against the textbook pipeline
(``torchvision.datasets.MNIST`` with a per-sample ``ToTensor``/``Normalize`` transform and a
``DataLoader(batch_size=128, shuffle=True, num_workers=0)``), same model and optimizer. ``--batches N`` times N
batches and extrapolates to the 469 batches of an epoch. GOAL: preloaded >= 8x faster per epoch.

(b) LeNet-5 (``cnn``) training FLOP rate: FLOPs of one forward+backward at batch 128 (counted by
``torch.utils.flop_counter.FlopCounterMode``) times training steps per second (``train_one_epoch`` on
channels_last, as ``fine_tune`` trains on CPU), as a fraction of the same run's ``torch.mm`` rate (1024x1024
fp32, ``torch.utils.benchmark.Timer``). GOAL: >= 40 % of the matmul rate.

The CPU is shared, so the two sides of each comparison are timed alternately, ``--rounds`` times, and the best
of each is kept (interference only ever adds time). Whole training loops are timed with ``time.perf_counter``
(one run per round: ``Timer.timeit`` would add its own warm-up runs of a multi-second loop); single ops use
``torch.utils.benchmark.Timer``. Goals are reported as PASS/FAIL; the exit status is 0 unless ``--strict``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

# Running as `python bench/train_speed.py` puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import check_timing_args  # noqa: E402
from mnist_pruning.data import MEAN, STD, data_root, load_mnist  # noqa: E402
from mnist_pruning.models import build_model  # noqa: E402
from mnist_pruning.sparsity.measure import torch_benchmark  # noqa: E402
from mnist_pruning.train import TrainConfig, train_one_epoch  # noqa: E402

BATCH_SIZE = 128
TRAIN_SIZE = 60_000
STEPS_PER_EPOCH = math.ceil(TRAIN_SIZE / BATCH_SIZE)  # 469, the last batch holds 96 images
GOAL_DATA_SPEEDUP = 8.0
GOAL_FLOP_FRACTION = 0.40
WARMUP_BATCHES = 3


def _optimizer(model: nn.Module, arch: str) -> torch.optim.Optimizer:
    # The optimizer fine_tune builds (SGD, Nesterov momentum, weight decay); the LR schedule costs nothing here.
    config = TrainConfig.for_model(arch)
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def _fresh(arch: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)  # both pipelines train identical models, so only the data path differs
    model = build_model(arch)
    if arch == "cnn":
        model.to(memory_format=torch.channels_last)  # as fine_tune trains Conv models on CPU
    return model, _optimizer(model, arch)


def _wall(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _train_step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(forward, forward+backward) FLOPs of one training step on ``(x, y)``; matmul/conv only, as measure.flops."""
    model.train()
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        model(x)
    with FlopCounterMode(display=False) as step:
        nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return fwd.get_total_flops(), step.get_total_flops()


def _dataloader_pipeline(root: Path, seed: int):
    """The textbook MNIST pipeline: per-sample PIL -> ToTensor -> Normalize, batched by a DataLoader."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    dataset = datasets.MNIST(root=str(root), train=True, transform=transform, download=False)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=0, generator=generator
    )


def _train_loader(model: nn.Module, optimizer: torch.optim.Optimizer, loader, n_batches: int) -> float:
    """``n_batches`` steps from ``loader``, the same step as ``train_one_epoch`` (loss.item() included)."""
    model.train()
    total = 0.0
    for i, (xb, yb) in enumerate(loader):
        if i == n_batches:
            break
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += loss.item() * yb.shape[0]
    return total


def bench_data(
    x: torch.Tensor, y: torch.Tensor, root: Path, n_batches: int, rounds: int, load_s: float
) -> tuple[float, float]:
    """Part (a). Returns (DataLoader/preloaded epoch-time ratio, preloaded MLP training FLOP rate)."""
    extrapolate = n_batches < STEPS_PER_EPOCH
    n = n_batches if extrapolate else STEPS_PER_EPOCH
    start = time.perf_counter()
    loader = _dataloader_pipeline(root, seed=0)
    dataset_s = time.perf_counter() - start

    # Slicing the first n*128 images keeps train_one_epoch (the package's own loop) at exactly n steps.
    xs, ys = x[: n * BATCH_SIZE], y[: n * BATCH_SIZE]
    pre_model, pre_opt = _fresh("mlp")
    dl_model, dl_opt = _fresh("mlp")
    generator = torch.Generator().manual_seed(0)
    # Warm-up (allocator, oneDNN primitive caches, the dataset's first page-ins) before anything is timed.
    warm = WARMUP_BATCHES * BATCH_SIZE
    train_one_epoch(pre_model, x[:warm], y[:warm], pre_opt, BATCH_SIZE, generator)
    _train_loader(dl_model, dl_opt, loader, WARMUP_BATCHES)

    pre_runs, dl_runs = [], []
    for _ in range(rounds):
        pre_runs.append(_wall(lambda: train_one_epoch(pre_model, xs, ys, pre_opt, BATCH_SIZE, generator)))
        dl_runs.append(_wall(lambda: _train_loader(dl_model, dl_opt, loader, n)))
    pre, dl = min(pre_runs), min(dl_runs)  # interference from other jobs only ever adds time
    scale = STEPS_PER_EPOCH / n
    ratio = dl / pre
    _, step_flops = _train_step_flops(pre_model, x[:BATCH_SIZE], y[:BATCH_SIZE])

    how = f"{n} batches timed, extrapolated to {STEPS_PER_EPOCH}" if extrapolate else "whole epochs"
    print(f"\n(a) MLP (LeNet-300-100) training, batch {BATCH_SIZE}, SGD Nesterov; {how}; best of {rounds} rounds")
    print(f"{'pipeline':<52} {'s/epoch':>8} {'steps/s':>8} {'setup s':>8}")
    rows = (
        ("preloaded tensors (load_mnist + train_one_epoch)", pre, load_s),
        ("torchvision MNIST + ToTensor/Normalize + DataLoader", dl, dataset_s),
    )
    for name, seconds, setup in rows:
        print(f"{name:<52} {seconds * scale:>8.2f} {n / seconds:>8.0f} {setup:>8.2f}")
    verdict = "PASS" if ratio >= GOAL_DATA_SPEEDUP else "FAIL"
    print(f"speedup (DataLoader / preloaded epoch time): {ratio:.1f}x   GOAL >= {GOAL_DATA_SPEEDUP:g}x: {verdict}")
    print("  (setup = one-time load of the files into memory, not part of the epoch time)")
    return ratio, step_flops * n / pre


def bench_flops(
    x: torch.Tensor, y: torch.Tensor, n_batches: int, rounds: int, threads: int, min_run_time: float, mm_size: int
) -> float:
    """Part (b). Returns the CNN's training FLOP rate as a fraction of the torch.mm rate."""
    n = min(n_batches, STEPS_PER_EPOCH) if n_batches > 0 else STEPS_PER_EPOCH
    model, optimizer = _fresh("cnn")
    fwd_flops, step_flops = _train_step_flops(model, x[:BATCH_SIZE], y[:BATCH_SIZE])
    xs, ys = x[: n * BATCH_SIZE], y[: n * BATCH_SIZE]
    generator = torch.Generator().manual_seed(0)
    warm = WARMUP_BATCHES * BATCH_SIZE
    train_one_epoch(model, x[:warm], y[:warm], optimizer, BATCH_SIZE, generator)

    a, b = torch.randn(mm_size, mm_size), torch.randn(mm_size, mm_size)
    mm_timer = torch_benchmark().Timer(
        stmt="torch.mm(a, b)", globals={"torch": torch, "a": a, "b": b}, num_threads=threads, label="mm"
    )
    mm_timer.timeit(3)  # warm-up
    cnn_runs, mm_runs = [], []
    for _ in range(rounds):  # alternate so contention from other jobs hits both alike
        cnn_runs.append(_wall(lambda: train_one_epoch(model, xs, ys, optimizer, BATCH_SIZE, generator)))
        mm_runs.append(mm_timer.blocked_autorange(min_run_time=min_run_time).median)
    steps_per_s = n / min(cnn_runs)
    cnn_rate = step_flops * steps_per_s
    mm_rate = 2 * mm_size**3 / min(mm_runs)
    fraction = cnn_rate / mm_rate

    print(
        f"\n(b) CNN (LeNet-5) training FLOP rate, batch {BATCH_SIZE}, channels_last; "
        f"{n} steps timed; best of {rounds} alternating rounds"
    )
    print(
        f"FLOPs per step (FlopCounterMode, matmul/conv only): forward {fwd_flops / 1e6:,.1f} M, "
        f"forward+backward {step_flops / 1e6:,.1f} M"
    )
    print(f"{'measurement':<44} {'GFLOP/s':>8}")
    print(f"{f'CNN training ({steps_per_s:.1f} steps/s)':<44} {cnn_rate / 1e9:>8.1f}")
    print(f"{f'torch.mm {mm_size}x{mm_size} fp32 ({min(mm_runs) * 1e3:.2f} ms)':<44} {mm_rate / 1e9:>8.1f}")
    verdict = "PASS" if fraction >= GOAL_FLOP_FRACTION else "FAIL"
    print(f"fraction (CNN training / torch.mm): {fraction:.1%}   GOAL >= {GOAL_FLOP_FRACTION:.0%}: {verdict}")
    return fraction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batches",
        type=int,
        default=150,
        help=f"batches per timing, extrapolated to an epoch (default 150; 0 = whole epochs of {STEPS_PER_EPOCH})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (default 3)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch.get_num_threads())"
    )
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds per mm timing (default 0.3)")
    parser.add_argument("--mm-size", type=int, default=1024, help="square matmul size for the peak (default 1024)")
    parser.add_argument("--data-dir", default=None, help="data root holding MNIST/raw (default: as load_mnist)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a goal FAILs (default: report only)")
    args = parser.parse_args(argv)
    if args.batches < 0:
        parser.error(f"--batches must be >= 0, got {args.batches}")
    check_timing_args(parser, args, ("rounds", "mm_size"))

    previous_threads = torch.get_num_threads()
    threads = args.threads or previous_threads
    torch.set_num_threads(threads)  # global, so the perf_counter-timed loops use it too; restored below
    try:
        print(
            f"torch {torch.__version__}; {torch.get_num_threads()} torch thread(s) "
            f"(interop {torch.get_num_interop_threads()}); oneDNN {torch.backends.mkldnn.is_available()}"
        )
        start = time.perf_counter()
        mnist = load_mnist(args.data_dir)
        load_s = time.perf_counter() - start
        ratio, mlp_rate = bench_data(
            mnist.train_x, mnist.train_y, data_root(args.data_dir), args.batches, args.rounds, load_s
        )
        print(f"  (for reference: preloaded MLP training runs at {mlp_rate / 1e9:.1f} GFLOP/s; no goal)")
        fraction = bench_flops(
            mnist.train_x, mnist.train_y, args.batches, args.rounds, threads, args.min_run_time, args.mm_size
        )
    finally:
        torch.set_num_threads(previous_threads)
    ok = ratio >= GOAL_DATA_SPEEDUP and fraction >= GOAL_FLOP_FRACTION
    print("\nall goals met" if ok else "\nsome goal FAILed (see above)")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
