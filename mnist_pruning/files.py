"""Atomic writes and safe loads: the only way this package touches files it produces.

Usage::

    from mnist_pruning.files import atomic_write, save_torch, load_torch
    with atomic_write("results/x.csv") as tmp:   # write to tmp; it replaces the target only on success
        tmp.write_text("...")
    save_torch({"state_dict": sd, "config": {...}}, "runs/mlp.pt")
    obj = load_torch("runs/mlp.pt")              # CRC-checked, weights_only=True: never executes pickled code

A write goes to a temporary file in the target's own directory (so the final ``os.replace`` is a same-filesystem
atomic rename); a crash or SIGKILL leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["CorruptFileError"]


class _UnsafeFileError(ValueError):
    """A file holds something other than plain tensors and containers (e.g. a pickled object)."""


class CorruptFileError(ValueError):
    """A file this package wrote is damaged (truncated, altered) or is not the kind of file expected."""


def _check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be written in it; raise a clear ValueError if not."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"output directory {str(p)!r} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"output directory {str(p)!r} cannot be written: {e.strerror or e}") from e
    return p


@contextlib.contextmanager
def _atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same extension as the target, so tools that look at it (papermill, torch.save) treat the temp file alike.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates files readable by the owner only; give the result the usual umask-based permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save_torch(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` a tree of tensors/numbers/strings atomically; returns the path."""
    with _atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def _load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> object:
    """Load a file written by :func:`_save_torch`: integrity checked, no code executed (``weights_only=True``).

    ``torch.save`` writes a zip archive whose entries carry CRC-32s, but ``torch.load`` never checks them: a
    flipped bit loads silently as different weights, and a truncated file fails deep inside torch with
    ``OSError: [Errno 22]``. So the archive is verified with :mod:`zipfile` first, and any damage raises
    :class:`CorruptFileError` naming the file. A file that carries a pickled object (anything beyond tensors
    and plain containers) is refused with :class:`_UnsafeFileError` instead of being run.
    """
    with open(path, "rb") as f:
        if f.read(1) == b"\x80":  # the PROTO opcode: a bare pickle (or torch's legacy format), never ours
            raise _UnsafeFileError(
                f"refusing to load {str(path)!r}: it is a bare pickle, not a torch.save archive"
            )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:  # zipfile raises BadZipFile, EOFError, ValueError, ... on damaged archives
        raise CorruptFileError(
            f"{str(path)!r} is damaged (truncated or altered: {type(e).__name__}: {e}) or not a torch.save file"
        ) from e
    if bad is not None:
        raise CorruptFileError(f"{str(path)!r} is damaged: the CRC-32 of its entry {bad!r} does not match")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _UnsafeFileError(
            f"refusing to load {str(path)!r}: it holds more than tensors and plain containers "
            f"(weights_only=True rejected it: {str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CorruptFileError(f"{str(path)!r} could not be read by torch.load: {e}") from e
