"""Measurements (mnist_pruning.sparsity.measure): sparsity counts zeros exactly, FLOPs match hand formulas,
latency is a real number taken without side effects on the model."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from mnist_pruning.models import SAMPLE_SHAPE, ModelConfig, build_model
from mnist_pruning.sparsity.measure import (
    Timing,
    _effective_state_dict,
    _layer_flops,
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
from mnist_pruning.sparsity.unstructured import sparsify_

MLP_FLOPS = 2 * (784 * 300 + 300 * 100 + 100 * 10)
CNN_FLOPS = 2 * (24 * 24 * 20 * 25 + 8 * 8 * 50 * 20 * 25 + 800 * 500 + 500 * 10)


def hand_zeroed_mlp() -> torch.nn.Module:
    """MLP with known zeros: 1000 in fc1.weight, 50 in fc3.weight, and zeroed biases that must not count."""
    torch.manual_seed(0)
    model = build_model("mlp")
    with torch.no_grad():
        for _, m in prunable_layers(model):  # random init has no exact zeros, but make sure
            m.weight.add_(torch.where(m.weight == 0, 1.0, 0.0))
        model.fc1.weight.view(-1)[:1000] = 0.0
        model.fc3.weight.view(-1)[-50:] = 0.0
        model.fc2.bias.zero_()
    return model


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_sparsity_is_exact_on_hand_zeroed_model_and_excludes_biases() -> None:
    model = hand_zeroed_mlp()
    assert sparsity(model) == pytest.approx(1050 / (784 * 300 + 300 * 100 + 100 * 10), abs=1e-15)


def test_layer_sparsity_has_one_exact_record_per_prunable_layer() -> None:
    table = layer_sparsity(hand_zeroed_mlp())
    assert all(list(row) == ["layer", "shape", "params", "nonzero", "sparsity"] for row in table)
    assert [r["layer"] for r in table] == ["fc1", "fc2", "fc3"]
    assert [r["shape"] for r in table] == [(300, 784), (100, 300), (10, 100)]
    assert [r["params"] for r in table] == [235200, 30000, 1000]
    assert [r["nonzero"] for r in table] == [235200 - 1000, 30000, 1000 - 50]
    assert [r["sparsity"] for r in table] == pytest.approx([1000 / 235200, 0.0, 0.05])


def test_filter_fn_restricts_what_sparsity_counts() -> None:
    model = hand_zeroed_mlp()
    assert sparsity(model, filter_fn=lambda m, fqn: fqn == "fc3") == pytest.approx(0.05)
    assert [r["layer"] for r in layer_sparsity(model, lambda m, fqn: fqn != "fc2")] == ["fc1", "fc3"]


def test_sparsity_reads_masks_even_when_weight_attribute_is_stale() -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    prune.l1_unstructured(model.fc2, "weight", amount=0.5)
    with torch.no_grad():
        model.fc2.weight_mask.zero_()  # no forward since: model.fc2.weight still shows the old mask
    assert bool((model.fc2.weight != 0).any())
    assert {r["layer"]: r["nonzero"] for r in layer_sparsity(model)}["fc2"] == 0
    assert torch.equal(effective_weight(model.fc2), torch.zeros(100, 300))
    assert count_nonzero_parameters(model) == 266_610 - 30_000


def test_effective_state_dict_folds_masks_and_writes_zeros_as_positive_zero() -> None:
    torch.manual_seed(0)
    model = sparsify_(build_model("mlp"), "global", 0.9)
    sd = _effective_state_dict(model)
    assert sorted(sd) == sorted(build_model("mlp").state_dict())  # no _orig / _mask keys: a plain state_dict
    for name, module in prunable_layers(model):
        assert torch.equal(sd[f"{name}.weight"], module.weight_orig * module.weight_mask)
        assert not torch.signbit(sd[f"{name}.weight"][sd[f"{name}.weight"] == 0]).any()  # never -0.0


def test_counts_of_a_half_pruned_fc1() -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    assert count_parameters(model) == 266_610  # the architecture: masks are buffers, weight_orig counts once
    assert count_nonzero_parameters(model) == 266_610 - 117_600
    assert sparsity(model) == pytest.approx(117_600 / 266_200)
    assert flops(model, SAMPLE_SHAPE) == MLP_FLOPS
    assert effective_flops(model, SAMPLE_SHAPE) == MLP_FLOPS - 2 * 117_600


def test_dense_mlp_flops_match_hand_formula() -> None:
    assert flops(build_model("mlp"), SAMPLE_SHAPE) == MLP_FLOPS == 2 * 266200


def test_dense_cnn_flops_match_hand_formula() -> None:
    assert flops(build_model("cnn"), SAMPLE_SHAPE) == CNN_FLOPS


def test_flops_count_one_sample_whatever_batch_the_model_sees_later() -> None:
    model = build_model("mlp")
    x = torch.zeros(4, *SAMPLE_SHAPE)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert counter.get_total_flops() == 4 * flops(model, SAMPLE_SHAPE)


def test_layer_flops_sum_to_total() -> None:
    model = build_model("cnn")
    per_layer = _layer_flops(model, SAMPLE_SHAPE)
    assert per_layer == {
        "conv1": 2 * 24 * 24 * 20 * 25,
        "conv2": 2 * 8 * 8 * 50 * 20 * 25,
        "fc1": 2 * 800 * 500,
        "fc2": 2 * 500 * 10,
    }
    assert sum(per_layer.values()) == flops(model, SAMPLE_SHAPE)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_dense_flops_ignore_zeros_and_effective_flops_scale_with_layer_density(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch)
    dense = flops(model, SAMPLE_SHAPE)
    assert effective_flops(model, SAMPLE_SHAPE) == dense
    for i, (_, m) in enumerate(prunable_layers(model)):
        prune.l1_unstructured(m, "weight", amount=[0.5, 0.9, 0.0, 0.75][i])
    per_layer = _layer_flops(model, SAMPLE_SHAPE)
    density = {r["layer"]: r["nonzero"] / r["params"] for r in layer_sparsity(model)}
    assert flops(model, SAMPLE_SHAPE) == dense
    assert effective_flops(model, SAMPLE_SHAPE) == round(sum(per_layer[k] * density[k] for k in per_layer))
    assert effective_flops(model, SAMPLE_SHAPE) < dense


def test_flops_of_narrower_models_fall_accordingly() -> None:
    assert flops(build_model(ModelConfig("mlp", (120, 40))), SAMPLE_SHAPE) == 2 * (784 * 120 + 120 * 40 + 40 * 10)
    assert flops(build_model(ModelConfig("cnn", (10, 25, 200))), SAMPLE_SHAPE) == 2 * (
        24 * 24 * 10 * 25 + 8 * 8 * 25 * 10 * 25 + 400 * 200 + 200 * 10
    )


def test_flops_leave_a_train_mode_model_with_batchnorm_unchanged() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(2704, 10))
    before = state(model)
    flops(model, SAMPLE_SHAPE)
    effective_flops(model, SAMPLE_SHAPE)
    assert model.training
    assert same_state(model, before)


# ---------------------------------------------------------------------------------------------------- latency


@pytest.mark.parametrize("training", [True, False])
def test_latency_leaves_mode_weights_and_threads_alone(training: bool) -> None:
    torch.manual_seed(0)
    model = build_model("mlp").train(training)
    before, threads = state(model), torch.get_num_threads()
    ms = latency_ms(model, 8, SAMPLE_SHAPE, min_run_time=0.01)
    assert math.isfinite(ms) and ms > 0
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert same_state(model, before)
    assert torch.get_num_threads() == threads


def test_latency_on_an_explicit_device_leaves_the_model_where_it_is() -> None:
    model = build_model("mlp")
    assert latency_ms(model, 2, SAMPLE_SHAPE, device="cpu", min_run_time=0.01) > 0
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_latency_on_cuda_times_a_copy_and_leaves_the_cpu_model_on_the_cpu() -> None:
    model = build_model("cnn")
    before = state(model)
    assert math.isfinite(latency_ms(model, 16, SAMPLE_SHAPE, device="cuda", min_run_time=0.01))
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert same_state(model, before)


def test_masked_model_is_timed_with_its_masks_and_keeps_them() -> None:
    torch.manual_seed(0)
    model = sparsify_(build_model("mlp"), "global", 0.9).train()
    masks = {n: m.weight_mask.clone() for n, m in prunable_layers(model)}
    before = state(model)
    seen = []
    # What the forward computes with: the prune hook sets .weight = weight_orig * weight_mask before each call.
    hook = model.fc1.register_forward_hook(lambda mod, inp, out: seen.append(bool((mod.weight == 0).any())))
    try:
        ms = latency_ms(model, 4, SAMPLE_SHAPE, min_run_time=0.01)
    finally:
        hook.remove()
    assert math.isfinite(ms) and ms > 0
    assert seen and all(seen)  # every timed forward used the masked weight
    assert all(prune.is_pruned(m) for _, m in prunable_layers(model))
    assert all(torch.equal(m.weight_mask, masks[n]) for n, m in prunable_layers(model))
    assert same_state(model, before) and model.training
    copy.deepcopy(model)  # a timed model can still be copied (the sweep copies models after timing them)
    # ... and it still trains through the masks afterwards (the timing ran under inference_mode).
    model(torch.randn(3, *SAMPLE_SHAPE)).sum().backward()
    grad = model.fc1.weight_orig.grad
    assert grad is not None and bool(grad[masks["fc1"] == 1].ne(0).any())
    assert bool((grad[masks["fc1"] == 0] == 0).all())


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8", None])
def test_bad_batch_size_raises_naming_it(bad: object) -> None:
    model = build_model("mlp")
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer, got " + re.escape(repr(bad))):
        latency_ms(model, bad, SAMPLE_SHAPE, min_run_time=0.01)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [(1, 0, 28), (1, 28, -28), (1.5, 28, 28), (1, 28, True), ("1", 28, 28)])
def test_bad_sample_shape_raises_naming_it(bad: tuple) -> None:
    model = build_model("mlp")
    message = re.escape(f"sample_shape {bad!r}")
    with pytest.raises(ValueError, match=message):
        latency_ms(model, 2, bad, min_run_time=0.01)
    with pytest.raises(ValueError, match=message):
        flops(model, bad)
    with pytest.raises(ValueError, match=message):
        effective_flops(model, bad)


def test_a_bare_int_sample_shape_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="sample_shape"):
        latency_ms(build_model("mlp"), 2, 784, min_run_time=0.01)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ time_models

QUICK = Timing(rounds=2, min_run_time=0.002, batches=(1, 4))


def _recorder(name: str, calls: list):
    """A callable that notes (its name, the batch it was given) at every call."""

    def call(x):
        calls.append((name, x.shape[0]))
        return x

    return call


def test_time_models_alternates_the_models_round_by_round_and_batch_by_batch():
    calls: list = []
    time_models({"a": _recorder("a", calls), "b": _recorder("b", calls)}, QUICK, SAMPLE_SHAPE)
    runs = [c for i, c in enumerate(calls) if i == 0 or calls[i - 1] != c]  # each median's calls as one run
    assert runs == [("a", 1), ("b", 1), ("a", 4), ("b", 4)] * QUICK.rounds


def test_time_models_returns_every_model_at_every_batch_with_one_median_per_round():
    torch.manual_seed(0)
    models = {"mlp": build_model("mlp"), "small": build_model(ModelConfig("mlp", (16, 8))), "f": torch.relu}
    timed = time_models(models, QUICK, SAMPLE_SHAPE)
    assert list(timed) == list(models)
    for name, per_b in timed.items():
        assert list(per_b) == list(QUICK.batches), name
        assert all(len(t.rounds_ms) == QUICK.rounds for t in per_b.values()), name


def test_the_noise_band_holds_the_best_and_the_median_of_the_rounds():
    timed = time_models({"relu": torch.relu}, Timing(rounds=3, min_run_time=0.002, batches=(8,)), SAMPLE_SHAPE)
    latency = timed["relu"][8]
    assert latency.best_ms == min(latency.rounds_ms)
    assert latency.low_ms <= latency.best_ms <= latency.median_ms <= latency.high_ms == max(latency.rounds_ms)


def test_time_models_times_any_callable_on_the_inputs_given():
    seen = []
    feed = {"x": [1, 2, 3]}
    timed = time_models({"session": lambda f: seen.append(f is feed)}, QUICK, inputs=lambda name, b: feed)
    assert all(seen) and seen
    assert set(timed["session"]) == set(QUICK.batches)


def test_time_models_leaves_modes_and_the_global_rng_alone():
    torch.manual_seed(0)
    model = build_model("cnn").train()
    model.fc1.eval()  # a mixed state, restored layer by layer
    rng = torch.get_rng_state()
    time_models({"cnn": model}, QUICK, SAMPLE_SHAPE)
    assert model.training and not model.fc1.training and model.conv1.training
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: time_models({}, QUICK, SAMPLE_SHAPE), "models must be a non-empty mapping"),
        (lambda: time_models({"x": 3}, QUICK, SAMPLE_SHAPE), "model 'x' is a int"),
        (lambda: time_models({"f": torch.relu}, QUICK), "give sample_shape"),
        (lambda: time_models({"f": torch.relu}, QUICK, (1, 0)), "sample_shape (1, 0)"),
        (lambda: Timing(rounds=0), "rounds must be a positive integer, got 0"),
        (lambda: Timing(min_run_time=-1), "min_run_time must be a number of seconds > 0, got -1"),
        (lambda: Timing(batches=()), "batches must name at least one batch size, got ()"),
        (lambda: Timing(batches=(1, 0)), "every batch size of (1, 0)"),
        (lambda: Timing(threads=0), "threads must be a positive integer, got 0"),
    ],
)
def test_bad_timing_arguments_raise_naming_the_value(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
