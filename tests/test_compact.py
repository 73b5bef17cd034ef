"""Compact files (mnist_pruning.sparsity.compact): lossless round trip, each position encoding, real size savings,
and safe, checksummed loading."""

from __future__ import annotations

import math
import os
import pickle
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from mnist_pruning.files import CorruptFileError, _UnsafeFileError
from mnist_pruning.models import build_model
from mnist_pruning.sparsity._binary import _log2_binomial, _parse_shape, _shape_text
from mnist_pruning.sparsity.compact import (
    _ENCODINGS,
    _FORMAT,
    _compact_bytes,
    _decode_positions,
    _dense_bytes,
    _encode_compact,
    _encode_positions,
    _information_limit_bits,
    _position_bytes,
    compact_ratio,
    compact_summary,
    load_compact,
    save_compact,
    save_dense,
)
from mnist_pruning.sparsity.measure import _effective_state_dict, prunable_layers

ARCHS = ("mlp", "cnn")


def pruned(arch: str, amount: float, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised model, global magnitude pruning with masks attached."""
    torch.manual_seed(seed)
    model = build_model(arch)
    params = [(m, "weight") for _, m in prunable_layers(model)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    return model


def bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view, so -0.0 vs 0.0 and NaN payloads count as different."""
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(bits(a[k]), bits(b[k])), k


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9, 0.99, 0.999])
def test_compact_round_trip_is_bitwise_with_masks_attached(tmp_path: Path, arch: str, amount: float) -> None:
    model = pruned(arch, amount)
    n_bytes = save_compact(model, tmp_path / "m.safetensors")
    assert n_bytes == (tmp_path / "m.safetensors").stat().st_size
    loaded = load_compact(tmp_path / "m.safetensors")
    assert not any(k.endswith(("_orig", "_mask")) for k in loaded)
    assert_bitwise_equal(loaded, _effective_state_dict(model))
    # And the values are the ones the masked model computes with.
    for name, module in prunable_layers(model):
        assert torch.equal(loaded[f"{name}.weight"], module.weight_orig * module.weight_mask)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9, 0.99, 0.999])
def test_compact_round_trip_after_prune_remove_loads_into_fresh_model(
    tmp_path: Path, arch: str, amount: float
) -> None:
    model = pruned(arch, amount)
    for _, module in prunable_layers(model):
        prune.remove(module, "weight")
    save_compact(model, tmp_path / "m.safetensors")
    loaded = load_compact(tmp_path / "m.safetensors")
    assert_bitwise_equal(loaded, _effective_state_dict(model))
    reference = model.state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)  # -0.0 == +0.0 here
    fresh = build_model(arch)
    fresh.load_state_dict(loaded)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(fresh(x), model(x))


def test_negative_zero_is_stored_as_positive_zero_and_other_values_bitwise(tmp_path: Path) -> None:
    t = torch.tensor([-0.0, 0.0, 1.5, -2.0, float("nan"), -0.0, float("inf"), 0.0])
    save_compact({"t": t}, tmp_path / "z.safetensors")
    out = load_compact(tmp_path / "z.safetensors")["t"]
    expected = torch.tensor([0.0, 0.0, 1.5, -2.0, float("nan"), 0.0, float("inf"), 0.0])
    assert torch.equal(out.view(torch.int32), expected.view(torch.int32))


def test_other_dtypes_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sd = {
        "h": torch.randn(40).half() * (torch.rand(40) > 0.8),
        "b": torch.randn(3, 7).bfloat16() * (torch.rand(3, 7) > 0.5),
        "i": torch.tensor([0, 0, 7, 0, -3], dtype=torch.int64),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    save_compact(sd, tmp_path / "d.safetensors")
    out = load_compact(tmp_path / "d.safetensors")
    for k, v in sd.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape and torch.equal(out[k], v), k


EDGE_CASES = {
    "all_zero": np.zeros(37, dtype=bool),
    "no_zero": np.ones(37, dtype=bool),
    "first_only": np.eye(1, 1000, 0, dtype=bool).ravel(),
    "last_only": np.eye(1, 1000, 999, dtype=bool).ravel(),
    "all_but_one": ~np.eye(1, 1000, 500, dtype=bool).ravel(),
    "single_element_zero": np.zeros(1, dtype=bool),
    "single_element_nonzero": np.ones(1, dtype=bool),
    "two_elements": np.array([False, True]),
    "n_300_random": np.random.default_rng(0).random(300) < 0.1,
    "n_70000_sparse": np.random.default_rng(1).random(70000) < 0.003,
}


@pytest.mark.parametrize("encoding", _ENCODINGS)
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_each_position_encoding_round_trips_edge_cases(encoding: str, case: str) -> None:
    mask = EDGE_CASES[case]
    n, idx = mask.size, np.flatnonzero(mask).astype(np.int64)
    data = _encode_positions(encoding, idx, n)
    assert len(data) == _position_bytes(encoding, n, len(idx))
    decoded = _decode_positions(encoding, np.frombuffer(data, dtype=np.uint8), n, len(idx))
    expected = np.arange(n) if encoding == "dense" else idx
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("shape", [(1,), (5,), (1, 1, 1, 1), (3, 2, 5, 5), (0,), ()])
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_compact_round_trips_1d_4d_tiny_and_empty_shapes(tmp_path: Path, shape: tuple, density: float) -> None:
    torch.manual_seed(0)
    t = torch.randn(shape) * (torch.rand(shape) < density)
    save_compact({"w": t}, tmp_path / "s.safetensors")
    assert_bitwise_equal(load_compact(tmp_path / "s.safetensors"), _effective_state_dict({"w": t}))


def test_elias_fano_is_chosen_and_near_the_limit_at_high_sparsity() -> None:
    idx = np.sort(np.random.default_rng(0).choice(1_000_000, size=1000, replace=False)).astype(np.int64)
    ef_bits = 8 * _position_bytes("ef", 1_000_000, 1000)
    limit = _information_limit_bits(1_000_000, 1000, value_bits=0)
    assert ef_bits <= 1.05 * limit
    assert ef_bits < 8 * min(_position_bytes(e, 1_000_000, 1000) for e in ("bitmask", "index"))
    assert len(_encode_positions("ef", idx, 1_000_000)) * 8 == ef_bits


@pytest.mark.parametrize("arch", ARCHS)
def test_compact_size_strictly_falls_as_sparsity_rises(arch: str) -> None:
    sizes = [_compact_bytes(pruned(arch, s)) for s in (0.3, 0.5, 0.7, 0.9, 0.99)]
    assert sizes == sorted(set(sizes), reverse=True), sizes  # strictly: no two equal


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("amount", [0.5, 0.7, 0.9, 0.99, 0.999])
def test_compact_size_within_15_percent_of_information_limit(arch: str, amount: float) -> None:
    model = pruned(arch, amount)
    limit_bits = sum(r["limit_bits"] for r in compact_summary(model))
    assert _compact_bytes(model) * 8 <= 1.15 * limit_bits
    assert compact_ratio(model) == pytest.approx(_compact_bytes(model) * 8 / limit_bits)


@pytest.mark.parametrize("arch", ARCHS)
def test_compact_smaller_than_dense_at_half_sparsity(tmp_path: Path, arch: str) -> None:
    model = pruned(arch, 0.5)
    assert save_compact(model, tmp_path / "c.safetensors") < 0.6 * save_dense(model, tmp_path / "d.pt")


@pytest.mark.parametrize("arch", ARCHS)
def test_dense_file_size_does_not_fall_with_sparsity(tmp_path: Path, arch: str) -> None:
    sizes = [_dense_bytes(pruned(arch, s), tmp_path / f"{s}.pt") for s in (0.0, 0.5, 0.9, 0.99)]
    assert sizes == sorted(sizes), sizes
    assert _dense_bytes(pruned(arch, 0.9)) == sizes[2]  # in-memory measure matches the file on disk


def test_information_limit_matches_exact_binomial() -> None:
    assert _information_limit_bits(100, 100) == pytest.approx(3200)
    assert _information_limit_bits(100, 0) == pytest.approx(0, abs=1e-9)
    assert _information_limit_bits(1000, 10, value_bits=8) == pytest.approx(80 + math.log2(math.comb(1000, 10)))
    with pytest.raises(ValueError):
        _information_limit_bits(10, 11)


class _Marker:
    """Unpickling this would create a directory: evidence that loading ran code from the file."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):  # type: ignore[override]
        return (os.mkdir, (self.target,))


def test_loading_torch_save_with_pickled_object_raises_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"fc1.weight": torch.ones(2), "evil": _Marker(marker)}, tmp_path / "evil.safetensors")
    with pytest.raises(_UnsafeFileError, match="never unpickles"):
        load_compact(tmp_path / "evil.safetensors")
    assert not marker.exists()


def test_loading_plain_pickle_raises_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(ValueError, match="pickle"):
        load_compact(tmp_path / "evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0, 5, 9, 60, -1])
def test_loading_truncated_compact_file_raises_clearly(tmp_path: Path, cut: int) -> None:
    save_compact(pruned("mlp", 0.9), tmp_path / "ok.safetensors")
    raw = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:cut] if cut >= 0 else raw[:-1])
    with pytest.raises(CorruptFileError, match="not a valid mnist-pruning-compact/2") as info:
        load_compact(tmp_path / "cut.safetensors")
    assert str(tmp_path / "cut.safetensors") in str(info.value)


def test_loading_foreign_safetensors_file_raises(tmp_path: Path) -> None:
    import safetensors.torch

    safetensors.torch.save_file({"w": torch.ones(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CorruptFileError, match="format tag"):
        load_compact(tmp_path / "foreign.safetensors")


def _parts(path: Path) -> tuple[dict[str, str], torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), f.get_tensor("data")


def _rewrite(path: Path, meta: dict[str, str], blob: torch.Tensor) -> None:
    import safetensors.torch

    safetensors.torch.save_file({"data": blob}, str(path), metadata=meta)


def _documented_crc(layout: str, blob: torch.Tensor) -> str:
    """The module docstring's definition: CRC-32 of the layout's UTF-8 bytes followed by the blob, 8 hex digits."""
    return f"{zlib.crc32(layout.encode() + blob.numpy().tobytes()):08x}"


def test_the_checksum_is_the_documented_crc32_of_layout_and_blob(tmp_path: Path) -> None:
    save_compact(pruned("mlp", 0.9), tmp_path / "m.safetensors")
    meta, blob = _parts(tmp_path / "m.safetensors")
    assert meta["format"] == _FORMAT == "mnist-pruning-compact/2"
    assert re.fullmatch(r"[0-9a-f]{8}", meta["crc32"])
    assert meta["crc32"] == _documented_crc(meta["layout"], blob)


def test_an_altered_value_or_layout_fails_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_compact({"w": torch.tensor([0.0, 1.0, 0.0, 2.0])}, path)
    meta, blob = _parts(path)
    altered = blob.clone()
    altered[0] ^= 1  # one bit of the first stored value
    _rewrite(path, meta, altered)
    with pytest.raises(CorruptFileError, match="CRC-32 does not match"):
        load_compact(path)
    _rewrite(path, {**meta, "layout": meta["layout"].replace("w F32", "v F32")}, blob)  # a renamed tensor
    with pytest.raises(CorruptFileError, match="CRC-32 does not match"):
        load_compact(path)
    _rewrite(path, {k: v for k, v in meta.items() if k != "crc32"}, blob)
    with pytest.raises(CorruptFileError, match="CRC-32 does not match"):
        load_compact(path)


def test_layout_that_disagrees_with_data_is_refused_even_with_a_valid_checksum(tmp_path: Path) -> None:
    save_compact({"w": torch.tensor([0.0, 1.0, 0.0, 2.0])}, tmp_path / "ok.safetensors")
    meta, blob = _parts(tmp_path / "ok.safetensors")
    layout = meta["layout"].replace(" 2", " 3")  # claim one more non-zero than stored
    assert layout != meta["layout"]
    forged = {**meta, "layout": layout, "crc32": _documented_crc(layout, blob)}
    _rewrite(tmp_path / "bad.safetensors", forged, blob)
    with pytest.raises(CorruptFileError, match="not a valid mnist-pruning-compact"):
        load_compact(tmp_path / "bad.safetensors")


def test_version_1_files_are_refused_with_a_hint_to_export_again(tmp_path: Path) -> None:
    save_compact(pruned("mlp", 0.9), tmp_path / "m.safetensors")
    meta, blob = _parts(tmp_path / "m.safetensors")
    _rewrite(tmp_path / "v1.safetensors", {"format": "mnist-pruning-compact/1", "layout": meta["layout"]}, blob)
    with pytest.raises(CorruptFileError, match="export the model again"):
        load_compact(tmp_path / "v1.safetensors")


def test_encode_compact_is_the_file_save_compact_writes(tmp_path: Path) -> None:
    # Not byte for byte: safetensors writes the metadata keys in hash-map (random) order. Same size and content.
    model = pruned("cnn", 0.9)
    n = save_compact(model, tmp_path / "m.safetensors")
    (tmp_path / "e.safetensors").write_bytes(_encode_compact(model))
    assert n == (tmp_path / "m.safetensors").stat().st_size == (tmp_path / "e.safetensors").stat().st_size
    assert n == _compact_bytes(model)
    assert_bitwise_equal(load_compact(tmp_path / "e.safetensors"), load_compact(tmp_path / "m.safetensors"))


@pytest.mark.parametrize(("n", "k"), [(1, 0), (10, 3), (784, 40), (300 * 784, 11_760)])
def test_log2_binomial_is_log2_of_math_comb(n, k):
    assert _log2_binomial(n, k) == pytest.approx(math.log2(math.comb(n, k)), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("shape", [(), (0,), (7,), (300, 784), (20, 1, 5, 5)])
def test_shape_text_round_trips_through_parse_shape(shape):
    assert _parse_shape(_shape_text(shape)) == shape
