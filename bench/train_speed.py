"""How fast does the package train on CPU? Preloaded tensors vs a DataLoader, and the CNN's FLOP rate.

Run from the repository root (a few minutes on a 2-core CPU)::

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

(c) Precision: LeNet-5 training steps in float32 against bfloat16 autocast (fp32 master weights, as
``TrainConfig(precision="bf16")``), both channels_last. GOAL: bf16 >= 2x faster per epoch. Measured only where the
CPU runs bf16 natively (AVX-512 BF16 or AMX, ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``); elsewhere bf16 is
emulated and much slower, ``precision="auto"`` trains fp32, and the goal is reported as not measurable here.

(d) Against a peer: the package's pipeline (``train`` + global pruning + ``fine_tune``, validation after every
epoch) against a hand-written one (torchvision MNIST, ``DataLoader`` with ``ToTensor``/``Normalize``, Adam at
lr 1e-3, ``prune.global_unstructured``, test-set evaluation through a ``DataLoader`` after every epoch), each
doing 5 baseline epochs then, at ratios 0.5, 0.9 and 0.99, pruning and one fine-tuning epoch. ``--peer-batches N``
trains N batches per epoch on both sides (evaluation whole) and reports the ratio of the totals. GOALS: the
package >= 8x faster for the MLP, >= 2.5x for the CNN. Both train on the same 55,000 images (the validation
hold-out excluded).

(e) Masked training: LeNet-5 training steps without masks, with pruning masks (global 0.9) through
``sparsity.MaskedTraining`` (plain weights, masks held aside: what ``fine_tune`` does) and, for reference, through
the prune hooks (``weight_orig * weight_mask`` recomputed at every forward, as ``fine_tune`` trained before), in
the precision ``fine_tune`` picks (bf16 autocast where the CPU runs bf16 natively, else fp32; the output says
which), plus the validation pass and a whole ``fine_tune`` epoch as the sweep calls it (its training steps scaled
to an epoch, its validation pass not). GOALS: masked epoch <= 1.15x the unmasked one; the ``fine_tune`` epoch
<= 1.2x the unmasked training steps.

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
from mnist_pruning.data import _VAL_SIZE as VAL_SIZE
from mnist_pruning.data import MEAN, STD, _data_root, _validation_indices, load_mnist  # noqa: E402
from mnist_pruning.models import build_model  # noqa: E402
from mnist_pruning.sparsity.measure import _torch_benchmark  # noqa: E402
from mnist_pruning.train import TrainConfig, _bf16_supported, _train_one_epoch  # noqa: E402

BATCH_SIZE = 128
TRAIN_SIZE = 60_000 - VAL_SIZE  # the training split: the validation hold-out is never trained on
STEPS_PER_EPOCH = math.ceil(TRAIN_SIZE / BATCH_SIZE)  # 430, the last batch holds 88 images
GOAL_DATA_SPEEDUP = 8.0
GOAL_FLOP_FRACTION = 0.40
GOAL_BF16_SPEEDUP = 2.0
GOAL_PEER = {"mlp": 8.0, "cnn": 2.5}
GOAL_MASKED_RATIO = 1.15  # a masked fine-tuning epoch at most this much slower than an unmasked one
GOAL_SWEEP_RATIO = 1.2  # fine_tune's whole epoch (validation included) against the unmasked training steps
PEER_RATIOS = (0.5, 0.9, 0.99)
PEER_BASELINE_EPOCHS = 5
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
    held = torch.zeros(len(dataset), dtype=torch.bool)
    held[_validation_indices(dataset.targets)] = True
    dataset = torch.utils.data.Subset(dataset, torch.nonzero(~held).flatten().tolist())  # the same 55,000 images
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
    _train_one_epoch(pre_model, x[:warm], y[:warm], pre_opt, BATCH_SIZE, generator)
    _train_loader(dl_model, dl_opt, loader, WARMUP_BATCHES)

    pre_runs, dl_runs = [], []
    for _ in range(rounds):
        pre_runs.append(_wall(lambda: _train_one_epoch(pre_model, xs, ys, pre_opt, BATCH_SIZE, generator)))
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
    _train_one_epoch(model, x[:warm], y[:warm], optimizer, BATCH_SIZE, generator)

    a, b = torch.randn(mm_size, mm_size), torch.randn(mm_size, mm_size)
    mm_timer = _torch_benchmark().Timer(
        stmt="torch.mm(a, b)", globals={"torch": torch, "a": a, "b": b}, num_threads=threads, label="mm"
    )
    mm_timer.timeit(3)  # warm-up
    cnn_runs, mm_runs = [], []
    for _ in range(rounds):  # alternate so contention from other jobs hits both alike
        cnn_runs.append(_wall(lambda: _train_one_epoch(model, xs, ys, optimizer, BATCH_SIZE, generator)))
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


def bench_precision(x: torch.Tensor, y: torch.Tensor, n_batches: int, rounds: int) -> float | None:
    """Part (c). Returns the fp32 / bf16 epoch-time ratio of LeNet-5, or None where bf16 is not native."""
    print("\n(c) CNN (LeNet-5) training, fp32 against bf16 autocast (fp32 master weights), channels_last")
    if not _bf16_supported(torch.device("cpu")):
        capability = torch.backends.cpu.get_cpu_capability()
        print(
            f"  not measurable here: this CPU has no native bf16 (capability {capability}"
            "; bf16 would be emulated, many times slower), so precision='auto' trains fp32. "
            f"GOAL >= {GOAL_BF16_SPEEDUP:g}x: NOT MEASURED"
        )
        return None
    n = min(n_batches, STEPS_PER_EPOCH) if n_batches > 0 else STEPS_PER_EPOCH
    xs, ys = x[: n * BATCH_SIZE], y[: n * BATCH_SIZE]
    times = {}
    models = {p: _fresh("cnn") for p in ("fp32", "bf16")}
    generator = torch.Generator().manual_seed(0)
    for p, (model, opt) in models.items():
        warm = WARMUP_BATCHES * BATCH_SIZE
        _train_one_epoch(model, x[:warm], y[:warm], opt, BATCH_SIZE, generator, precision=p)
    for _ in range(rounds):
        for p, (model, opt) in models.items():
            t = _wall(
                lambda m=model, o=opt, p=p: _train_one_epoch(m, xs, ys, o, BATCH_SIZE, generator, precision=p)
            )
            times[p] = min(times.get(p, math.inf), t)
    ratio = times["fp32"] / times["bf16"]
    for p in ("fp32", "bf16"):
        print(f"  {p}: {times[p] * STEPS_PER_EPOCH / n:.2f} s/epoch ({1e3 * times[p] / n:.1f} ms/step)")
    verdict = "PASS" if ratio >= GOAL_BF16_SPEEDUP else "FAIL"
    print(f"  speedup (fp32 / bf16): {ratio:.2f}x   GOAL >= {GOAL_BF16_SPEEDUP:g}x: {verdict}")
    return ratio


def _peer(arch: str, root: Path, test_loader, n_batches: int) -> float:
    """The hand-written pipeline of part (d); returns its wall time."""
    from torch.nn.utils import prune

    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(arch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = _dataloader_pipeline(root, seed=0)

    def epoch() -> None:
        _train_loader(model, optimizer, loader, n_batches)
        model.eval()
        with torch.no_grad():
            sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in test_loader)

    for _ in range(PEER_BASELINE_EPOCHS):
        epoch()
    for ratio in PEER_RATIOS:
        layers = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=ratio)
        epoch()
        for m, name in layers:
            prune.remove(m, name)
    return time.perf_counter() - start


def _ours(arch: str, mnist, n_batches: int, n_eval: int) -> float:
    """The package's pipeline of part (d); returns its wall time."""
    from mnist_pruning.data import MNISTData
    from mnist_pruning.sparsity.unstructured import bake_in, sparsify_
    from mnist_pruning.train import fine_tune, train

    start = time.perf_counter()
    n = n_batches * BATCH_SIZE
    val_x, val_y = mnist.val_x[:n_eval], mnist.val_y[:n_eval]
    data = MNISTData(mnist.train_x[:n], mnist.train_y[:n], mnist.test_x, mnist.test_y, val_x, val_y)
    model, _ = train(arch, data, TrainConfig.for_model(arch, epochs=PEER_BASELINE_EPOCHS), progress=False)
    for ratio in PEER_RATIOS:
        sparsify_(model, "global", ratio)
        fine_tune(model, data, TrainConfig(epochs=1, lr=0.01), progress=False)
        bake_in(model)
    return time.perf_counter() - start


def bench_peer(mnist, root: Path, n_batches: int, n_eval: int = 0) -> dict[str, float]:
    """Part (d). Returns {arch: peer seconds / package seconds}."""
    n = min(n_batches, STEPS_PER_EPOCH) if n_batches > 0 else STEPS_PER_EPOCH
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    test = datasets.MNIST(root=str(root), train=False, transform=transform, download=False)
    n_eval = n_eval or len(test)  # images evaluated after every epoch (0: all; a smoke test takes a few)
    test = torch.utils.data.Subset(test, range(min(n_eval, len(test))))
    test_loader = torch.utils.data.DataLoader(test, batch_size=1000, num_workers=0)
    print(
        f"\n(d) the package against a hand-written DataLoader + Adam pipeline: {PEER_BASELINE_EPOCHS} baseline "
        f"epochs, then prune to {', '.join(map(str, PEER_RATIOS))} with 1 fine-tune epoch each; "
        f"{n} batches per epoch, evaluation after every epoch"
    )
    ratios = {}
    for arch in ("mlp", "cnn"):
        ours = _ours(arch, mnist, n, n_eval)
        peer = _peer(arch, root, test_loader, n)
        ratios[arch] = peer / ours
        verdict = "PASS" if ratios[arch] >= GOAL_PEER[arch] else "FAIL"
        print(
            f"  {arch}: package {ours:.1f} s, hand-written {peer:.1f} s: {ratios[arch]:.1f}x   "
            f"GOAL >= {GOAL_PEER[arch]:g}x: {verdict}"
        )
    return ratios


def bench_epoch_parts(mnist, n_batches: int, rounds: int) -> tuple[float, float]:
    """Part (e). Returns (masked / unmasked epoch time, the sweep's fine_tune epoch / unmasked epoch time)."""
    from mnist_pruning.data import MNISTData
    from mnist_pruning.sparsity import MaskedTraining
    from mnist_pruning.sparsity.unstructured import sparsify_
    from mnist_pruning.train import evaluate, fine_tune

    n = min(n_batches, STEPS_PER_EPOCH) if n_batches > 0 else STEPS_PER_EPOCH
    scale = STEPS_PER_EPOCH / n
    xs, ys = mnist.train_x[: n * BATCH_SIZE], mnist.train_y[: n * BATCH_SIZE]
    precision = TrainConfig().precision  # what fine_tune trains in by default: bf16 where the CPU runs it natively
    print(
        f"\n(e) a CNN fine-tuning epoch, masked and not ({torch.get_num_threads()} thread(s), channels_last, "
        f"batch {BATCH_SIZE}, precision {precision} (CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16 {_bf16_supported(torch.device('cpu'))}); {n} steps timed, scaled to {STEPS_PER_EPOCH})"
    )

    def pruned() -> nn.Module:
        model, _ = _fresh("cnn")
        sparsify_(model.to(memory_format=torch.contiguous_format), "global", 0.9)  # as the sweep: masks attached
        return model.to(memory_format=torch.channels_last)

    dense, dense_opt = _fresh("cnn")
    fast, hooks, sweep = pruned(), pruned(), pruned()
    hooks_opt = _optimizer(hooks, "cnn")  # over weight_orig: fine_tune's optimizer before MaskedTraining
    data = MNISTData(xs, ys, mnist.test_x, mnist.test_y, mnist.val_x, mnist.val_y)
    sweep_config = TrainConfig(epochs=1, lr=0.01, precision=precision)
    generator = torch.Generator().manual_seed(0)
    names = {
        "dense": "unmasked",
        "fast": "masked, MaskedTraining (fine_tune)",
        "hooks": "masked, prune hooks (before)",
        "val": f"validation pass ({mnist.val_y.shape[0]:,} images)",
        "sweep": "fine_tune epoch, as the sweep calls it",
    }
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, math.inf), seconds)

    with MaskedTraining(fast) as masked:
        fast_opt = _optimizer(fast, "cnn")
        masked.watch(fast_opt)
        steps = {"dense": (dense, dense_opt), "fast": (fast, fast_opt), "hooks": (hooks, hooks_opt)}
        warm = WARMUP_BATCHES * BATCH_SIZE
        for model, opt in steps.values():  # warm-up: oneDNN primitives, allocator
            _train_one_epoch(model, xs[:warm], ys[:warm], opt, BATCH_SIZE, generator, precision=precision)
        for _ in range(rounds):
            for name, (model, opt) in steps.items():
                t = _wall(
                    lambda m=model, o=opt: _train_one_epoch(
                        m, xs, ys, o, BATCH_SIZE, generator, precision=precision
                    )
                )
                keep(name, t * scale)
            val = _wall(lambda: evaluate(fast, mnist.val_x, mnist.val_y))
            keep("val", val)
            # fine_tune's epoch: its validation pass counted once, the rest (set-up included: errs slow) scaled
            keep(
                "sweep", (_wall(lambda: fine_tune(sweep, data, sweep_config, progress=False)) - val) * scale + val
            )
    for key, seconds in best.items():
        print(f"  {names[key]:<40} {seconds:6.2f} s/epoch")
    masked_ratio = best["fast"] / best["dense"]
    sweep_ratio = best["sweep"] / best["dense"]
    verdict = "PASS" if masked_ratio <= GOAL_MASKED_RATIO else "FAIL"
    print(
        f"  masked / unmasked epoch: {masked_ratio:.2f}x   GOAL <= {GOAL_MASKED_RATIO:g}x: {verdict}"
        f"   (prune hooks / unmasked: {best['hooks'] / best['dense']:.2f}x, no goal)"
    )
    verdict = "PASS" if sweep_ratio <= GOAL_SWEEP_RATIO else "FAIL"
    print(
        f"  fine_tune epoch (validation included) / unmasked training steps: {sweep_ratio:.2f}x   "
        f"GOAL <= {GOAL_SWEEP_RATIO:g}x: {verdict}"
    )
    return masked_ratio, sweep_ratio


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
    parser.add_argument(
        "--peer-batches",
        type=int,
        default=0,
        help=f"batches per epoch in part (d) (default 0 = whole epochs of {STEPS_PER_EPOCH})",
    )
    parser.add_argument(
        "--peer-eval",
        type=int,
        default=0,
        help="images evaluated after every epoch in part (d), each side (default 0 = all; smoke tests)",
    )
    parser.add_argument("--skip-peer", action="store_true", help="leave out part (d), the slowest")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a goal FAILs (default: report only)")
    args = parser.parse_args(argv)
    for flag in ("batches", "peer_batches", "peer_eval"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
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
            mnist.train_x, mnist.train_y, _data_root(args.data_dir), args.batches, args.rounds, load_s
        )
        print(f"  (for reference: preloaded MLP training runs at {mlp_rate / 1e9:.1f} GFLOP/s; no goal)")
        fraction = bench_flops(
            mnist.train_x, mnist.train_y, args.batches, args.rounds, threads, args.min_run_time, args.mm_size
        )
        bf16 = bench_precision(mnist.train_x, mnist.train_y, args.batches, args.rounds)
        masked_ratio, sweep_ratio = bench_epoch_parts(mnist, args.batches, args.rounds)
        root = _data_root(args.data_dir)
        peer = {} if args.skip_peer else bench_peer(mnist, root, args.peer_batches, args.peer_eval)
    finally:
        torch.set_num_threads(previous_threads)
    ok = ratio >= GOAL_DATA_SPEEDUP and fraction >= GOAL_FLOP_FRACTION
    ok &= bf16 is None or bf16 >= GOAL_BF16_SPEEDUP
    ok &= all(v >= GOAL_PEER[arch] for arch, v in peer.items())
    ok &= masked_ratio <= GOAL_MASKED_RATIO and sweep_ratio <= GOAL_SWEEP_RATIO
    print("\nall goals met" if ok else "\nsome goal FAILed (see above)")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
