"""Invariants of N:M pruning (mnist_pruning.sparsity.nm).

Tiny random layers only: no MNIST, no training on real data.
"""

from __future__ import annotations

import io
import math
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from mnist_pruning.sparsity.nm import (
    NM_PATTERNS,
    NMPruning,
    _decode_nm,
    _encode_nm,
    _format_pattern,
    _index_bits,
    _nm_compact_bytes,
    _nm_mask,
    _pad_to_multiple,
    _pattern_for_ratio,
    check_nm,
    nm_unstructured,
    nm_violations,
    parse_pattern,
    semi_structured_available,
)

PATTERNS = [(2, 4), (1, 4), (2, 8), (1, 8), (1, 16), (7, 10), (3, 10), (1, 10), (1, 100)]

# (constructor, row length); several rows are not multiples of most m (25 = conv1 of LeNet-5, 150, 30, 101).
LAYERS = {
    "linear_25x7": (lambda: nn.Linear(25, 7), 25),
    "linear_101x3": (lambda: nn.Linear(101, 3), 101),
    "linear_64x5": (lambda: nn.Linear(64, 5), 64),
    "conv_1to3_k5": (lambda: nn.Conv2d(1, 3, 5), 25),
    "conv_6to4_k5": (lambda: nn.Conv2d(6, 4, 5), 150),
    "conv_2to3_k3x5": (lambda: nn.Conv2d(2, 3, (3, 5)), 30),
}


def oracle_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Straightforward per-group loop: keep the n largest |w| of each group of m along the flattened row."""
    rows = w.detach().reshape(w.shape[0], -1)
    keep = torch.zeros_like(rows, dtype=torch.bool)
    for r in range(rows.shape[0]):
        for start in range(0, rows.shape[1], m):
            group = rows[r, start : start + m].abs().tolist()
            ranked = sorted(range(len(group)), key=lambda i: -group[i])
            for i in ranked[:n]:
                keep[r, start + i] = True
    return keep.reshape(w.shape)


def group_nonzeros(w: torch.Tensor, m: int) -> torch.Tensor:
    """Non-zeros per zero-padded group, shape [out, groups]: an independent re-implementation for the tests."""
    rows = w.detach().reshape(w.shape[0], -1)
    padded = torch.zeros(rows.shape[0], math.ceil(rows.shape[1] / m) * m)
    padded[:, : rows.shape[1]] = (rows != 0).float()
    return padded.reshape(rows.shape[0], -1, m).sum(-1)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("n", "m"), PATTERNS)
def test_pattern_holds_in_every_group(layer: str, n: int, m: int) -> None:
    torch.manual_seed(0)
    module = nm_unstructured(LAYERS[layer][0](), "weight", n, m)
    assert (group_nonzeros(module.weight, m) <= n).all()
    assert check_nm(module.weight, n, m) and nm_violations(module.weight, n, m) == 0


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 8), (3, 10), (7, 10), (1, 16)])
def test_kept_weights_are_largest_of_their_group(layer: str, n: int, m: int) -> None:
    torch.manual_seed(1)
    module = LAYERS[layer][0]()
    expected = oracle_mask(module.weight, n, m)
    nm_unstructured(module, "weight", n, m)
    assert torch.equal(module.weight_mask.bool(), expected)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 10), (1, 100)])
def test_partial_tail_group_keeps_min_n_r(layer: str, n: int, m: int) -> None:
    torch.manual_seed(2)
    module = nm_unstructured(LAYERS[layer][0](), "weight", n, m)
    cols = LAYERS[layer][1]
    counts = group_nonzeros(module.weight, m)
    full, tail = divmod(cols, m)
    assert (counts[:, :full] == n).all()
    if tail:
        assert (counts[:, full] == min(n, tail)).all()


@pytest.mark.parametrize(("n", "m"), PATTERNS)
def test_exactly_n_kept_per_group_and_sparsity_is_one_minus_n_over_m(n: int, m: int) -> None:
    torch.manual_seed(3)
    module = nm_unstructured(nn.Linear(2 * m, 6), "weight", n, m)
    assert (group_nonzeros(module.weight, m) == n).all()
    sparsity = 1 - torch.count_nonzero(module.weight).item() / module.weight.numel()
    assert sparsity == pytest.approx(1 - n / m)


def test_ties_keep_lowest_positions() -> None:
    torch.manual_seed(4)
    w = torch.ones(3, 8)
    mask = NMPruning(2, 4).compute_mask(w, torch.ones_like(w))
    assert torch.equal(mask, torch.tensor([[1.0, 1, 0, 0, 1, 1, 0, 0]] * 3))


def test_importance_scores_choose_the_kept_weights() -> None:
    torch.manual_seed(5)
    module = nn.Linear(8, 2)
    scores = torch.arange(16, dtype=torch.float32).reshape(2, 8)  # the last two of each group are largest
    nm_unstructured(module, "weight", 2, 4, importance_scores=scores)
    assert torch.equal(module.weight_mask, torch.tensor([[0.0, 0, 1, 1, 0, 0, 1, 1]] * 2))


def test_prune_remove_leaves_plain_parameter_with_pattern() -> None:
    torch.manual_seed(6)
    module = nm_unstructured(nn.Conv2d(3, 4, 3), "weight", 2, 4)
    masked = module.weight.detach().clone()
    prune.remove(module, "weight")
    assert isinstance(module.weight, nn.Parameter)
    assert set(dict(module.named_parameters())) == {"weight", "bias"}
    assert not hasattr(module, "weight_orig") and not hasattr(module, "weight_mask")
    assert not module._forward_pre_hooks
    assert torch.equal(module.weight.detach(), masked)
    assert check_nm(module.weight, 2, 4)


def test_repeated_nm_pruning_is_subset_and_satisfies_stricter_pattern() -> None:
    torch.manual_seed(7)
    module = nm_unstructured(nn.Linear(32, 6), "weight", 2, 4)
    first = module.weight_mask.clone()
    nm_unstructured(module, "weight", 1, 4)
    second = module.weight_mask
    assert isinstance(next(iter(module._forward_pre_hooks.values())), prune.PruningContainer)
    assert check_nm(module.weight, 1, 4)
    assert (second <= first).all()
    assert (group_nonzeros(module.weight, 4) == 1).all()  # chosen among the 2 survivors, not among all 4
    assert torch.equal(second.bool(), oracle_mask(module.weight_orig * first, 1, 4))


def test_nm_after_l1_keeps_earlier_zeros_and_picks_among_survivors() -> None:
    torch.manual_seed(8)
    module = prune.l1_unstructured(nn.Linear(40, 8), "weight", amount=0.6)
    l1_mask = module.weight_mask.clone()
    nm_unstructured(module, "weight", 2, 4)
    final = module.weight_mask
    assert (final <= l1_mask).all()
    assert check_nm(module.weight, 2, 4)
    survivors = group_nonzeros(l1_mask, 4)
    assert torch.equal(group_nonzeros(final, 4), survivors.clamp(max=2))


@pytest.mark.parametrize("layer", ["linear_25x7", "conv_6to4_k5"])
def test_pattern_and_zero_positions_survive_sgd_momentum_weight_decay(layer: str) -> None:
    torch.manual_seed(9)
    module = nm_unstructured(LAYERS[layer][0](), "weight", 2, 4)
    zeros_before = module.weight == 0
    weight_before = module.weight.detach().clone()
    # The first optimizer built in a process lazily imports torch._dynamo (~2 s once); the steps are instant.
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    in_shape = (4, 25) if isinstance(module, nn.Linear) else (4, 6, 7, 7)
    x = torch.randn(in_shape)
    target = torch.randn_like(module(x))
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.mse_loss(module(x), target)  # the hook recomputes weight = weight_orig * mask
        loss.backward()
        opt.step()
    module(x)
    assert not torch.equal(module.weight.detach(), weight_before)  # the steps really moved the kept weights
    assert check_nm(module.weight, 2, 4)
    assert torch.equal(module.weight == 0, zeros_before)


def test_nm_mask_never_keeps_disallowed_entries() -> None:
    torch.manual_seed(22)
    scores = torch.randn(4, 12)
    keep = torch.rand(4, 12) < 0.3  # many groups have fewer than n=2 allowed entries
    chosen = _nm_mask(scores, 2, 4, keep=keep)
    assert chosen.dtype == torch.bool
    assert not (chosen & ~keep).any()
    assert torch.equal(group_nonzeros(chosen, 4), group_nonzeros(keep, 4).clamp(max=2))


def test_bias_or_1d_tensor_raises_and_leaves_module_unchanged() -> None:
    torch.manual_seed(10)
    module = nn.Linear(8, 4)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nm_unstructured(module, "bias", 2, 4)
    assert isinstance(module.bias, nn.Parameter) and not hasattr(module, "bias_orig")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        check_nm(torch.ones(8), 2, 4)


def test_nm_violations_counts_padded_groups() -> None:
    torch.manual_seed(11)
    assert nm_violations(torch.ones(2, 8), 2, 4) == 4
    assert nm_violations(torch.ones(1, 6), 2, 4) == 1  # tail group of 2 real weights is allowed both
    assert nm_violations(torch.ones(1, 7), 2, 4) == 2  # tail of 3 real non-zeros breaks 2:4 once padded
    assert not check_nm(torch.ones(1, 7), 2, 4)


def nm_weight(shape: tuple[int, ...], n: int, m: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    w = torch.randn(shape)
    return w * NMPruning(n, m).compute_mask(w, torch.ones_like(w))


@pytest.mark.parametrize("shape", [(8, 16), (7, 25), (3, 101), (4, 3, 5, 5), (5, 1, 5, 5), (2, 2, 3, 5)])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (2, 8), (1, 16), (3, 10), (7, 10), (1, 100)])
def test_encode_decode_roundtrip_is_bitwise(shape: tuple[int, ...], n: int, m: int) -> None:
    w = nm_weight(shape, n, m, seed=12)
    decoded = _decode_nm(_encode_nm(w, n, m))
    assert decoded.dtype == w.dtype and decoded.shape == w.shape
    assert torch.equal(decoded, w)
    # Bit for bit, once the -0.0 that mask * weight leaves at pruned negative weights is read as +0.0.
    assert torch.equal(decoded.view(torch.int32), (w + 0.0).view(torch.int32))


def test_encode_decode_roundtrip_with_kept_values_exactly_zero() -> None:
    w = nm_weight((6, 22), 2, 4, seed=13)
    kept = w.nonzero()
    w[tuple(kept[::3].T)] = 0.0  # as if fine-tuning drove some kept weights to exactly 0
    w[tuple(kept[1::7].T)] = -0.0
    w[1] = 0.0  # a whole row of empty groups
    decoded = _decode_nm(_encode_nm(w, 2, 4))
    assert torch.equal(decoded, w)
    assert torch.equal(decoded.view(torch.int32), (w + 0.0).view(torch.int32))
    assert not torch.signbit(decoded[decoded == 0]).any()  # every zero, pruned or kept, decodes as +0.0


def test_encode_refuses_weight_that_breaks_the_pattern() -> None:
    torch.manual_seed(14)
    with pytest.raises(ValueError, match="not 2:4 sparse: 2 groups"):
        _encode_nm(torch.randn(1, 8), 2, 4)


@pytest.mark.parametrize(
    ("n", "m", "bits"), [(2, 4, 2), (1, 4, 2), (2, 8, 3), (1, 10, 4), (1, 16, 4), (1, 100, 7)]
)
def test_metadata_is_ceil_log2_m_bits_per_kept_value(n: int, m: int, bits: int) -> None:
    w = nm_weight((8, 3 * m), n, m, seed=15)
    d = _encode_nm(w, n, m)
    kept_slots = 8 * 3 * n
    assert _index_bits(m) == bits
    assert d["values"].numel() == kept_slots and d["values"].dtype == torch.float32
    assert d["indices"].dtype == torch.uint8 and d["indices"].numel() == math.ceil(kept_slots * bits / 8)


def test_2_4_metadata_is_two_bits_per_kept_value() -> None:
    w = nm_weight((8, 16), 2, 4, seed=16)
    d = _encode_nm(w, 2, 4)
    kept = 8 * 16 // 2
    assert d["indices"].numel() * 8 == 2 * kept  # 64 kept values -> 128 bits -> 16 bytes
    assert _nm_compact_bytes(w, 2, 4) == kept * 4 + kept * 2 // 8 + d["shape"].numel() * 8 + 2 * 8


@pytest.mark.parametrize("shape", [(64, 64), (30, 25), (20, 1, 5, 5)])
def test_compact_2_4_is_smaller_than_dense(shape: tuple[int, ...]) -> None:
    w = nm_weight(shape, 2, 4, seed=17)
    assert _nm_compact_bytes(w, 2, 4) < w.numel() * 4


def test_encoded_dict_survives_safetensors_and_weights_only_torch_load() -> None:
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    w = nm_weight((5, 3, 5, 5), 2, 4, seed=18)
    d = _encode_nm(w, 2, 4)
    assert torch.equal(_decode_nm(st_load(st_save(d))), w)
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    assert torch.equal(_decode_nm(torch.load(buf, weights_only=True)), w)


def test_decode_rejects_corrupt_dict() -> None:
    d = _encode_nm(nm_weight((4, 8), 1, 10, seed=19), 1, 10)
    d["indices"] = torch.full_like(d["indices"], 0xFF)  # position 15 in a group of 10
    with pytest.raises(ValueError, match="corrupt"):
        _decode_nm(d)


@pytest.mark.parametrize(
    ("n", "m", "named"),
    [(4, 4, "n=4"), (0, 4, "n=0"), (1, 1, "m=1"), (2.0, 4, "n=2.0"), ("2", 4, "n='2'"), (True, 4, "n=True"),
     (5, 4, "n=5"), (1, 4.0, "m=4.0")],
)  # fmt: skip
def test_bad_n_m_raise_value_error_naming_the_value(n: object, m: object, named: str) -> None:
    torch.manual_seed(20)
    with pytest.raises(ValueError, match=re.escape(named)):
        NMPruning(n, m)  # type: ignore[arg-type]
    module = nn.Linear(8, 2)
    with pytest.raises(ValueError, match=re.escape(named)):
        nm_unstructured(module, "weight", n, m)  # type: ignore[arg-type]
    assert isinstance(module.weight, nn.Parameter) and not module._forward_pre_hooks


@pytest.mark.parametrize("bad", ["2-4", "0:4", "a:b", "4:4", "2:", ":4", "2:4:8", ""])
def test_parse_pattern_rejects_bad_strings(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        parse_pattern(bad)


@pytest.mark.parametrize("pattern", NM_PATTERNS + ("7:10", "3:10", "1:10", "1:100"))
def test_parse_and_format_pattern_roundtrip(pattern: str) -> None:
    n, m = parse_pattern(pattern)
    assert isinstance(n, int) and isinstance(m, int) and _format_pattern(n, m) == pattern


@pytest.mark.parametrize(
    ("ratio", "pattern"),
    [(0.3, "7:10"), (0.5, "2:4"), (0.7, "3:10"), (0.9, "1:10"), (0.99, "1:100"), (0.75, "1:4"), (0.8, "1:5")],
)
def test_pattern_for_ratio_prunes_exactly_that_ratio(ratio: float, pattern: str) -> None:
    assert _pattern_for_ratio(ratio) == pattern
    n, m = parse_pattern(pattern)
    assert 1 - n / m == pytest.approx(ratio)


@pytest.mark.parametrize("ratio", [0.123, 0.995, 0.0, 1.0, -0.5, True])
def test_pattern_for_ratio_rejects_unrepresentable_ratios(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        _pattern_for_ratio(ratio)


@pytest.mark.skipif(
    not semi_structured_available(),
    reason="needs CUDA compute capability >= 8.0 and torch.sparse.to_sparse_semi_structured",
)
def test_semi_structured_matmul_matches_dense() -> None:
    torch.manual_seed(21)
    w = nm_weight((100, 301), 2, 4, seed=21)  # non-divisible: zero padding keeps the 2:4 groups aligned
    dense = _pad_to_multiple(w, 64, 64).half().cuda()
    assert check_nm(dense, 2, 4)
    x = torch.randn(dense.shape[1], 64, dtype=torch.float16, device="cuda")
    sparse = torch.sparse.to_sparse_semi_structured(dense)
    torch.testing.assert_close(torch.mm(sparse, x), torch.mm(dense, x), rtol=1e-2, atol=1e-2)
