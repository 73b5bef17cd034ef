"""Every kind of file the package writes and reads back, damaged on purpose: truncated at several points, and a
single bit flipped in every part of it (header / metadata, values, positions, a zip archive's local headers and
central directory). A damaged file must give a clear error - a ValueError (CorruptFileError) naming the file - or,
where the flipped bit does not carry content (zip timestamps, alignment padding), exactly what was saved. Never
something different, silently.

About 30 sampled flip positions per kind keep this at a few seconds; the sample always covers each part of the
file, found from the format itself (safetensors header + the compact layout; the zip structure of torch.save).
"""

from __future__ import annotations

import csv
import math
import random
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from mnist_pruning import sparsity as sp
from mnist_pruning.files import CorruptFileError, _load_torch
from mnist_pruning.models import ModelConfig, build_model
from mnist_pruning.results import append_row, read_results
from mnist_pruning.sparsity.compact import _position_bytes
from mnist_pruning.train import TrainConfig, _load_checkpoint, _save_checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FLIPS = 30  # sampled bit flips per file kind, on top of one in each named part of the file


def mlp_90() -> nn.Module:
    """784-512-256-10 MLP, 90 % global sparsity, masks attached: a 250 kB compact file, a 2 MB dense one."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    return sp.sparsify_(model, "global", 0.9)


def bits_equal(a: object, b: object) -> bool:
    """Deep equality; tensors compared bit for bit (dtype, shape and every bit of every value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        view = {torch.float32: torch.int32, torch.float64: torch.int64}.get(a.dtype)
        return torch.equal(a.view(view), b.view(view)) if view else torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(bits_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(bits_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


# ----------------------------------------------------------------------------------- where the parts of a file are


def compact_parts(data: bytes) -> dict[str, int]:
    """Offsets of the parts of a compact file, from its documented format: the safetensors header (length,
    JSON, metadata), then the blob with each tensor's value section and position section, in layout order."""
    import json

    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    meta = header["__metadata__"]
    parts = {
        "header length": 2,
        "header JSON start": 9,
        "format tag": data.index(b"mnist-pruning-compact/2") + 21,
        "layout": data.index(meta["layout"][:20].encode()) + 5,
        "crc32": data.index(meta["crc32"].encode()) + 3,
        "header padding / end": 8 + header_len - 1,
    }
    offset = 8 + header_len + header["data"]["data_offsets"][0]
    for record in meta["layout"].split(";"):
        name, dtype, shape, encoding, nnz = record.split(" ")
        n = math.prod(int(s) for s in shape.split(",")) if shape != "-" else 1
        itemsize = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2}.get(dtype, 4)
        values = (n if encoding == "dense" else int(nnz)) * itemsize
        positions = _position_bytes(encoding, n, int(nnz))
        parts[f"{name} values ({encoding})"] = offset + values // 2
        if positions:
            parts[f"{name} positions ({encoding})"] = offset + values + positions // 2
        offset += values + positions
    parts["last byte"] = len(data) - 1
    assert offset == len(data)
    return parts


def zip_parts(data: bytes, path: Path) -> dict[str, int]:
    """Offsets of the parts of a torch.save zip archive: per entry its local header (signature, time, CRC,
    name, alignment padding) and its data, then the central directory and the end records."""
    parts = {}
    with zipfile.ZipFile(path) as archive:
        infos, start_dir = archive.infolist(), archive.start_dir
    for info in infos:
        at = info.header_offset
        name_len, extra_len = struct.unpack("<HH", data[at + 26 : at + 30])
        short = info.filename.split("/", 1)[-1]
        parts[f"{short}: local signature"] = at + 1
        parts[f"{short}: local time"] = at + 10
        parts[f"{short}: local CRC"] = at + 14
        parts[f"{short}: local name"] = at + 30 + name_len // 2
        if extra_len:
            parts[f"{short}: local padding"] = at + 30 + name_len + extra_len // 2
        if info.compress_size:
            parts[f"{short}: data"] = at + 30 + name_len + extra_len + info.compress_size // 2
    parts["central directory start"] = start_dir + 1
    parts["central directory: first CRC"] = start_dir + 16
    parts["central directory middle"] = (start_dir + len(data)) // 2
    parts["end of central directory"] = len(data) - 10
    parts["last byte"] = len(data) - 1
    return parts


# -------------------------------------------------------------------------------------------- the file kinds


@dataclass
class Kind:
    """A file kind: ``write(path)`` saves it and returns the content that was saved; ``read(path)`` loads it;
    ``parts(data, path)`` names offsets inside it."""

    write: Callable[[Path], object]
    read: Callable[[Path], object]
    parts: Callable[[bytes, Path], dict[str, int]]


def _write_compact(path: Path) -> object:
    model = mlp_90()
    sp.save_compact(model, path)
    return sp.measure._effective_state_dict(model)


def _write_dense(path: Path) -> object:
    model = mlp_90()
    sp.save_dense(model, path)
    return sp.measure._effective_state_dict(model)


def _checkpoint_content(model: nn.Module, payload: dict) -> object:
    return {"state_dict": model.state_dict(), **{k: v for k, v in payload.items() if k != "state_dict"}}


def _write_checkpoint(path: Path) -> object:
    torch.manual_seed(0)
    model = build_model(ModelConfig("cnn", (6, 10, 30)))
    history = [{"epoch": 1, "train_loss": 0.5, "test_loss": 0.4, "test_accuracy": 0.9, "seconds": 1.5}]
    _save_checkpoint(path, model, TrainConfig(epochs=1), history, metrics={"accuracy": 0.9})
    return _checkpoint_content(model, _load_torch(path))


def _write_structured_checkpoint(path: Path) -> object:
    torch.manual_seed(0)
    small = sp.shrink(build_model("mlp"), 0.9)  # surgered: widths (30, 10), saved like any model
    assert small.config == ModelConfig("mlp", (30, 10))
    _save_checkpoint(path, small, ratio=0.9)
    return _checkpoint_content(small, _load_torch(path))


def _read_checkpoint(path: Path) -> object:
    model, payload = _load_checkpoint(path, device=torch.device("cpu"))
    return _checkpoint_content(model, payload)


KINDS = {
    "compact": Kind(_write_compact, sp.load_compact, lambda data, path: compact_parts(data)),
    "dense state_dict": Kind(_write_dense, _load_torch, zip_parts),
    "checkpoint": Kind(_write_checkpoint, _read_checkpoint, zip_parts),
    "structured checkpoint": Kind(_write_structured_checkpoint, _read_checkpoint, zip_parts),
}


def assert_error_or_identical(kind: Kind, path: Path, saved: object, what: str) -> str:
    """Load the damaged ``path``: a ValueError naming it, or exactly ``saved``. Returns which it was."""
    try:
        got = kind.read(path)
    except ValueError as e:  # CorruptFileError (and UnsafeFileError) are ValueErrors
        assert str(path) in str(e), f"{what}: the error does not name the file: {type(e).__name__}: {e}"
        return "error"
    assert bits_equal(got, saved), f"{what}: loaded silently as something different"
    return "identical"


@pytest.fixture(scope="module", params=list(KINDS))
def saved_file(request, tmp_path_factory):
    """(kind name, the file's bytes, the content saved), written once per kind."""
    path = tmp_path_factory.mktemp("saved") / "file.bin"
    kind = KINDS[request.param]
    saved = kind.write(path)
    data = path.read_bytes()
    assert bits_equal(kind.read(path), saved)  # undamaged, it loads as saved
    return request.param, path, data, saved


@pytest.mark.parametrize("cut", ["0 bytes", "8 bytes", "a quarter", "half", "all but 64", "all but 1"])
def test_a_truncated_file_raises_a_clear_error_naming_it(saved_file, tmp_path, cut):
    name, _, data, saved = saved_file
    keep = {
        "0 bytes": 0,
        "8 bytes": 8,
        "a quarter": len(data) // 4,
        "half": len(data) // 2,
        "all but 64": len(data) - 64,
        "all but 1": len(data) - 1,
    }[cut]
    path = tmp_path / f"cut-{keep}.bin"
    path.write_bytes(data[:keep])
    outcome = assert_error_or_identical(KINDS[name], path, saved, f"{name} cut to {keep} of {len(data)} bytes")
    assert outcome == "error", f"{name} cut to {keep} bytes loaded"  # every byte of these formats counts


def test_a_single_flipped_bit_anywhere_gives_an_error_or_the_saved_content(saved_file, tmp_path):
    name, path, data, saved = saved_file
    kind = KINDS[name]
    parts = kind.parts(data, path)
    rng = random.Random(f"{name}-{len(data)}")
    sampled = {f"sampled #{i}": rng.randrange(len(data)) for i in range(FLIPS)}
    outcomes: dict[str, list[str]] = {"error": [], "identical": []}
    for where, offset in {**parts, **sampled}.items():
        bit = rng.randrange(8)
        damaged = bytearray(data)
        damaged[offset] ^= 1 << bit
        target = tmp_path / f"flip-{offset}-{bit}.bin"
        target.write_bytes(bytes(damaged))
        what = f"{name}: bit {bit} of byte {offset} ({where}) of {len(data)}"
        outcomes[assert_error_or_identical(kind, target, saved, what)].append(where)
        target.unlink()
    print(f"{name}: identical after the flip: {outcomes['identical']}")
    # Content bytes are always covered by a checksum: the flips there must be errors, not just harmless.
    content = [w for w in parts if "values" in w or "positions" in w or w.endswith(": data")]
    assert content and not set(content) & set(outcomes["identical"]), outcomes["identical"]


# ------------------------------------------------------------------------------------------- the baseline cache


def test_a_damaged_baseline_cache_is_reported_and_retrained(tmp_path, mnist_small):
    from mnist_pruning.runner import baseline

    config = TrainConfig(epochs=1, batch_size=256)
    model, _ = baseline("mlp", mnist_small, config, tmp_path, progress=False)
    path = tmp_path / "mlp_baseline.pt"
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10  # inside fc1's weights
    damages = {
        "truncated to half": good[: len(good) // 2],
        "truncated to 0 bytes": b"",
        "a flipped bit": bytes(flipped),
        "a compact file under its name": None,
    }
    for what, damaged in damages.items():
        if damaged is None:
            sp.save_compact(model, path)
        else:
            path.write_bytes(damaged)
        with pytest.warns(UserWarning, match="training the mlp baseline again") as record:
            again, _ = baseline("mlp", mnist_small, config, tmp_path, progress=False)
        assert any(str(path) in str(w.message) for w in record), f"{what}: the warning does not name the file"
        reloaded, saved = _load_checkpoint(path, device=torch.device("cpu"))  # replaced by a whole checkpoint
        assert saved["train_config"] == config.to_dict()
        assert bits_equal(reloaded.state_dict(), {k: v.cpu() for k, v in again.state_dict().items()}), what
        # Same seed, same data: retraining reproduces the baseline exactly.
        assert bits_equal(reloaded.state_dict(), {k: v.cpu() for k, v in model.state_dict().items()}), what
    inode = path.stat().st_ino
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the repaired cache is used as is: no warning ...
        cached, cached_payload = baseline("mlp", mnist_small, config, tmp_path, progress=False)
    assert path.stat().st_ino == inode  # ... and no retraining (a save would have replaced the file)
    assert cached_payload["history"] == saved["history"]  # the last retraining's own record


# ----------------------------------------------------------------------------------------------- results CSV


@pytest.fixture
def results_file(tmp_path) -> tuple[Path, list[dict[str, str]]]:
    """A results CSV written by append_row (three rows of the mlp fixture), and the rows as read back."""
    with open(FIXTURES / "mlp_pruning_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:3]
    path = tmp_path / "mlp_pruning_results.csv"
    for row in rows:
        assert append_row(path, row)
    assert read_results(path) == rows
    return path, rows


@pytest.mark.parametrize(
    "damage",
    ["empty", "8 bytes", "header cut short", "a column renamed", "a column missing", "header only, cut"],
)
def test_a_results_csv_with_a_damaged_header_raises_naming_the_file(results_file, damage):
    path, _ = results_file
    text = path.read_text()
    header, body = text.split("\n", 1)
    damaged = {
        "empty": "",
        "8 bytes": text[:8],
        "header cut short": text[: len(header) // 2],
        "a column renamed": text.replace("acc_finetuned", "acc_finetuneb", 1),
        "a column missing": header.replace(",sparsity", "") + "\n" + body,
        "header only, cut": header[:-3] + "\n",
    }[damage]
    path.write_text(damaged)
    with pytest.raises(ValueError, match="unexpected columns") as info:
        read_results(path)
    assert str(path) in str(info.value)


def test_a_results_csv_without_its_final_newline_is_refused_since_the_last_row_may_be_cut(results_file):
    path, _ = results_file
    path.write_text(path.read_text()[:-1])  # a cut here cannot be told from a cut inside the last number
    with pytest.raises(ValueError, match="cut short") as info:
        read_results(path)
    assert str(path) in str(info.value)


def test_a_results_csv_cut_at_a_line_end_reads_as_the_rows_before_it(results_file):
    path, rows = results_file
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1])  # the last row lost whole
    assert read_results(path) == rows[:2]  # indistinguishable from a CSV of two rows: the rows it has are right


def test_a_results_csv_cut_inside_its_last_row_raises_naming_the_file(results_file):
    path, _ = results_file
    text = path.read_text()
    last_line_start = text.rindex("\n", 0, len(text) - 1) + 1
    for cut in (last_line_start + 5, (last_line_start + len(text)) // 2, len(text) - 3):
        path.write_text(text[:cut])
        with pytest.raises(CorruptFileError, match="cut short") as info:
            read_results(path)
        assert str(path) in str(info.value), f"cut at {cut} of {len(text)}"
