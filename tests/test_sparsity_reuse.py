"""mnist_pruning.sparsity is reusable: it imports none of the MNIST experiment code, and every method works on
models that are not the LeNets, through the public API alone (``from mnist_pruning import sparsity as sp``).

The models here are defined in this file: an MLP and a three-convolution CNN as ``nn.Sequential`` (links traced),
and a CNN with a functional ``forward`` whose links are named. Random weights, random inputs: no MNIST.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tomllib
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from mnist_pruning import sparsity as sp

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------- the import rule

# What ``import mnist_pruning.sparsity`` must never pull in: the experiment code around the core, and the heavy
# libraries only that code needs.
FORBIDDEN = (
    "mnist_pruning.models",
    "mnist_pruning.data",
    "mnist_pruning.train",
    "mnist_pruning.sweep",
    "mnist_pruning.settings",
    "mnist_pruning.results",
    "mnist_pruning.compare",
    "mnist_pruning.notebook",
    "mnist_pruning.plots",
    "pandas",
    "matplotlib",
    "tqdm",
)
# The only package modules outside mnist_pruning.sparsity it may use, and the third-party packages it may import.
ALLOWED = ("mnist_pruning", "mnist_pruning.checks", "mnist_pruning.files")
THIRD_PARTY = ("torch", "numpy", "safetensors")

# Prints the modules that `import torch, numpy, safetensors` loads by itself (torch.hub imports tqdm, so "tqdm is
# not in sys.modules" cannot hold for any torch code), then those that importing the sparsity package adds.
_PROBE = """
import json, sys
import numpy, safetensors.torch, torch
print(json.dumps(sorted(sys.modules)))
import mnist_pruning.sparsity
print(json.dumps(sorted(sys.modules)))
"""


def runtime_violations(package_parent: Path) -> list[str]:
    """Forbidden or unexpected modules in ``sys.modules`` after ``import mnist_pruning.sparsity`` in a fresh
    interpreter started in ``package_parent`` (so the ``mnist_pruning`` folder there is the one imported); a
    failing import is a violation too."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=package_parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        return [f"import failed: {result.stderr.strip().splitlines()[-1]}"]
    baseline, loaded = (set(json.loads(line)) for line in result.stdout.splitlines()[-2:])
    assert "mnist_pruning.sparsity.structured" in loaded  # the probe imported the real thing
    forbidden = {m for m in loaded - baseline if m in FORBIDDEN or m.split(".")[0] in FORBIDDEN}
    package = {
        m for m in loaded if m.split(".")[0] == "mnist_pruning" and not m.startswith("mnist_pruning.sparsity")
    }
    return sorted(forbidden | (package - set(ALLOWED)))


def static_violations(package_dir: Path) -> list[str]:
    """Every import statement in the sparsity sources (module level or inside functions, where a lazy import
    would escape the runtime check) that reaches outside the sparsity package, checks, files, torch, numpy,
    safetensors and the standard library."""
    found = []
    for path in sorted((package_dir / "sparsity").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                targets = [node.module or ""]
            elif isinstance(node, ast.ImportFrom):
                base = {1: "mnist_pruning.sparsity", 2: "mnist_pruning"}.get(node.level, "(outside the package)")
                targets = [f"{base}.{node.module}"] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                root = target.split(".")[0]
                if target.startswith("mnist_pruning."):
                    ok = target.startswith("mnist_pruning.sparsity") or target in ALLOWED
                else:
                    ok = root in THIRD_PARTY or root in sys.stdlib_module_names
                if not ok:
                    found.append(f"{path.name}:{node.lineno} imports {target}")
    return found


def test_importing_sparsity_loads_none_of_the_experiment_code():
    assert runtime_violations(ROOT) == []


def test_no_sparsity_module_imports_anything_but_torch_numpy_safetensors_checks_and_files():
    assert static_violations(ROOT / "mnist_pruning") == []


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("compact.py", "from ..models import SAMPLE_SHAPE"),
        ("measure.py", "from ..models import SAMPLE_SHAPE"),  # a circular import: fails outright
        ("structured.py", "import pandas"),
        ("nm.py", "import tqdm"),  # torch loads tqdm anyway: only the static check can see this one
        ("unstructured.py", "from .. import results"),
    ],
)
def test_the_import_rule_checks_catch_a_sparsity_module_that_breaks_it(tmp_path, module, line):
    # The checks above must fail when the rule is broken: run them on a copy of the package with one bad import.
    shutil.copytree(
        ROOT / "mnist_pruning", tmp_path / "mnist_pruning", ignore=shutil.ignore_patterns("__pycache__")
    )
    path = tmp_path / "mnist_pruning" / "sparsity" / module
    text = path.read_text()
    anchor = "\nfrom torch import nn\n" if "\nfrom torch import nn\n" in text else "\nimport torch\n"
    assert anchor in text
    path.write_text(text.replace(anchor, f"{anchor}{line}\n", 1))
    assert static_violations(tmp_path / "mnist_pruning") != []
    if module != "nm.py":
        assert runtime_violations(tmp_path) != []


def test_every_sub_package_is_shipped():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mnist_pruning").rglob("__init__.py")}
    assert "mnist_pruning.sparsity" in packages
    listed = config.get("packages")
    if isinstance(listed, list):  # an explicit list must name every package; a find directive discovers them
        assert packages <= set(listed)


# -------------------------------------------------------------------------------------------------- models


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def cnn() -> nn.Module:
    # 20x20 input: 20 (padded) -> 18 -> pool 9 -> 7 -> adaptive average pool 3: flatten of 32 x 3 x 3.
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(),
        nn.Linear(32 * 3 * 3, 10),
    )


class FunctionalCNN(nn.Module):
    """Not a Sequential: functional ReLU / max-pool in forward, and one layer nested ("stem.0")."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 5))  # 32 -> 28 -> pool 14
        self.conv = nn.Conv2d(6, 12, 3)  # 14 -> 12 -> pool 6
        self.head = nn.Linear(12 * 6 * 6, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 2)
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        x = F.relu(self.head(torch.flatten(x, 1)))
        return self.out(x)


FUNCTIONAL_LINKS = [
    sp.Link("stem.0", "conv", torch.relu),
    sp.Link("conv", "head", torch.relu),
    sp.Link("head", "out", torch.relu),
]


# name -> (constructor, sample shape, links (None: traced from the Sequential), hand-counted forward FLOPs)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], list | None, int]] = {
    "mlp": (mlp, (1, 28, 28), None, 2 * (784 * 512 + 512 * 256 + 256 * 10)),
    "cnn": (
        cnn,
        (1, 20, 20),
        None,
        2 * (8 * 20 * 20 * 1 * 9 + 16 * 18 * 18 * 8 * 9 + 32 * 7 * 7 * 16 * 9 + 288 * 10),
    ),
    "functional": (
        FunctionalCNN,
        (3, 32, 32),
        FUNCTIONAL_LINKS,
        2 * (6 * 28 * 28 * 3 * 25 + 12 * 12 * 12 * 6 * 9 + 432 * 32 + 32 * 10),
    ),
}
NAMES = list(MODELS)


def build(name: str, seed: int = 0) -> nn.Module:
    """A random model whose biases are N(0, 1), so removed units feed clearly non-zero constants forward."""
    torch.manual_seed(seed)
    model = MODELS[name][0]()
    with torch.no_grad():
        for _, module in sp.prunable_layers(model):
            module.bias.copy_(torch.randn_like(module.bias))
    return model.eval()


def inputs(name: str, batch: int = 6, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(batch, *MODELS[name][1])


def weighted(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Linear / Conv2d, found here independently of sp.prunable_layers."""
    return [(n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]


def zeros(module: nn.Module) -> int:
    return int((sp.effective_weight(module) == 0).sum())


# -------------------------------------------------------------------------------------- unstructured methods


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ratio", [0.3, 0.9])
def test_l1_removes_round_ratio_n_in_every_layer(name, ratio):
    model = sp.sparsify_(build(name), "l1", ratio)
    layers = weighted(model)
    assert [n for n, _ in sp.prunable_layers(model)] == [n for n, _ in layers]
    for layer, module in layers:
        assert zeros(module) == round(ratio * module.weight.numel()), layer


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_global_removes_round_ratio_n_overall_with_torchs_masks(name, ratio):
    model = build(name)
    oracle = copy.deepcopy(model)
    sp.sparsify_(model, "global", ratio)
    prune.global_unstructured(
        [(m, "weight") for _, m in weighted(oracle)], pruning_method=prune.L1Unstructured, amount=ratio
    )
    total = sum(m.weight.numel() for _, m in weighted(model))
    assert sum(zeros(m) for _, m in weighted(model)) == round(ratio * total)
    for (layer, ours), (_, theirs) in zip(weighted(model), weighted(oracle), strict=True):
        assert torch.equal(ours.weight_mask, theirs.weight_mask), layer
    assert sp.sparsity(model) == pytest.approx(round(ratio * total) / total)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pattern", ["2:4", "1:8"])
def test_nm_holds_the_pattern_in_every_group_with_torch_applied_masks(name, pattern):
    n, m = sp.parse_pattern(pattern)
    model = build(name)
    oracle = copy.deepcopy(model)
    sp.sparsify_(model, "nm", pattern=pattern)
    for _, module in weighted(oracle):
        sp.NMPruning.apply(module, "weight", n=n, m=m)
    for (layer, ours), (_, theirs) in zip(weighted(model), weighted(oracle), strict=True):
        assert sp.check_nm(sp.effective_weight(ours), n, m), layer
        assert torch.equal(ours.weight_mask, theirs.weight_mask), layer
        assert 0 < zeros(ours) < ours.weight.numel()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("method", sp.METHODS)
def test_a_layer_filtered_out_keeps_all_its_weights(name, method):
    model = build(name)
    first, *_, last = [n for n, _ in weighted(model)]
    before = copy.deepcopy(model)
    kwargs = {"pattern": "2:4"} if method == "nm" else {"ratio": 0.9}
    sp.sparsify_(model, method, filter_fn=lambda module, fqn: fqn != first, **kwargs)
    kept = model.get_submodule(first)
    assert not prune.is_pruned(kept) and torch.equal(kept.weight, before.get_submodule(first).weight)
    assert zeros(kept) == 0
    assert prune.is_pruned(model.get_submodule(last)) and zeros(model.get_submodule(last)) > 0
    if method == "global":  # the threshold is over the accepted layers only
        accepted = [m for n, m in weighted(model) if n != first]
        assert sum(zeros(m) for m in accepted) == round(0.9 * sum(m.weight.numel() for m in accepted))
    assert sp.sparsity(model, filter_fn=lambda module, fqn: fqn == first) == 0.0


# ----------------------------------------------------------------------------------------- structured surgery


def links_of(name: str, model: nn.Module) -> list:
    links = MODELS[name][2]
    return sp.structured._trace_links(model) if links is None else links


def test_traced_links_follow_the_sequential():
    trace = sp.structured._trace_links
    assert [(link.producer, link.consumer) for link in trace(mlp())] == [("1", "3"), ("3", "5")]
    assert [(link.producer, link.consumer) for link in trace(cnn())] == [
        ("0", "2"),
        ("2", "5"),
        ("5", "9"),
    ]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_surgery_gives_a_smaller_model_with_the_masked_models_outputs(name, ratio):
    masked = build(name)
    dense_params = sp.count_parameters(masked)
    links = links_of(name, masked)
    units = {link.producer: masked.get_submodule(link.producer).weight.shape[0] for link in links}
    kept = sp.apply_structured_masks(masked, ratio, links=MODELS[name][2])
    # Folding matters: some removed unit feeds a non-zero constant (activation of its bias) forward.
    constants = []
    for link in links:
        removed = sorted(set(range(units[link.producer])) - set(kept[link.producer].tolist()))
        bias = masked.get_submodule(link.producer).bias.detach()[removed]
        constants.append(link.activation(bias) if link.activation is not None else bias)
    assert any(bool(c.ne(0).any()) for c in constants)

    small = sp.apply_surgery(masked, links=MODELS[name][2])
    assert type(small) is type(masked) and not any(prune.is_pruned(m) for m in small.modules())
    for producer, count in units.items():
        expected = count - sp.structured._units_removed(count, ratio)
        assert small.get_submodule(producer).weight.shape[0] == expected == kept[producer].numel(), producer
    assert sp.count_parameters(small) < dense_params
    x = inputs(name)
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), masked(x), atol=1e-5, rtol=1e-5)
    widths, state_dict = sp.structured._surgery(masked, links=MODELS[name][2])
    assert widths == {p: kept[p].numel() for p in units}
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in state_dict.items())


@pytest.mark.parametrize("name", NAMES)
def test_shrink_leaves_the_model_alone_and_equals_mask_then_surgery(name):
    model = build(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = sp.shrink(model, 0.5, links=MODELS[name][2])
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert not any(prune.is_pruned(m) for m in model.modules())
    masked = copy.deepcopy(model)
    sp.apply_structured_masks(masked, 0.5, links=MODELS[name][2])
    x = inputs(name)
    with torch.no_grad():
        assert torch.equal(small.eval()(x), sp.apply_surgery(masked, links=MODELS[name][2]).eval()(x))
    assert sp.flops(small, MODELS[name][1]) < sp.flops(model, MODELS[name][1])


# ----------------------------------------------------------------------------------------------- compact files


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


@pytest.mark.parametrize("name", NAMES)
def test_compact_round_trip_into_a_fresh_unmasked_copy(tmp_path, name):
    model = sp.sparsify_(build(name), "global", 0.9)
    n_bytes = sp.save_compact(model, tmp_path / "m.safetensors")
    assert n_bytes == (tmp_path / "m.safetensors").stat().st_size == sp.compact._compact_bytes(model)
    loaded = sp.load_compact(tmp_path / "m.safetensors")
    fresh = MODELS[name][0]()  # another random init, no masks
    fresh.load_state_dict(loaded, strict=True)
    for key, value in fresh.state_dict().items():
        assert value.dtype == loaded[key].dtype and torch.equal(bits(value), bits(loaded[key])), key
    for layer, module in weighted(model):  # the values the masked model computes with (zeros as +0.0)
        expected = module.weight_orig * module.weight_mask + 0.0
        assert torch.equal(bits(loaded[f"{layer}.weight"]), bits(expected)), layer
    x = inputs(name)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))
    assert n_bytes < sp.save_dense(model, tmp_path / "m.pt") / 4


# -------------------------------------------------------------------------------------------- measurements


@pytest.mark.parametrize("name", NAMES)
def test_flops_match_the_hand_count_and_effective_flops_follow_density(name):
    model = build(name)
    shape, expected = MODELS[name][1], MODELS[name][3]
    assert sp.flops(model, shape) == expected == sp.effective_flops(model, shape)
    per_layer = sp.measure._layer_flops(model, shape)
    assert list(per_layer) == [n for n, _ in weighted(model)] and sum(per_layer.values()) == expected
    sp.sparsify_(model, "l1", 0.75)
    density = {n: 1 - round(0.75 * m.weight.numel()) / m.weight.numel() for n, m in weighted(model)}
    assert sp.flops(model, shape) == expected
    assert sp.effective_flops(model, shape) == round(sum(f * density[n] for n, f in per_layer.items()))
    total = sum(m.weight.numel() for _, m in weighted(model))
    assert sp.sparsity(model) == pytest.approx(
        sum(round(0.75 * m.weight.numel()) for _, m in weighted(model)) / total
    )
    biases = sum(m.bias.numel() for _, m in weighted(model))
    assert sp.count_parameters(model) == total + biases
    assert sp.count_nonzero_parameters(model) == total + biases - sum(zeros(m) for _, m in weighted(model))


@pytest.mark.parametrize("name", NAMES)
def test_latency_with_the_models_own_sample_shape(name):
    model = sp.sparsify_(build(name), "global", 0.5)
    ms = sp.latency_ms(model, 8, MODELS[name][1], min_run_time=0.01)
    assert math.isfinite(ms) and ms > 0
    assert all(prune.is_pruned(m) for _, m in weighted(model))


# ------------------------------------------------------------------------------------------------ bad input


def test_trace_links_refuses_a_batchnorm_between_convolutions_and_says_to_fuse_it():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3))
    with pytest.raises(ValueError, match=r"BatchNorm2d.*fuse") as info:
        sp.structured._trace_links(model)
    assert "'1'" in str(info.value)  # names the module
    with pytest.raises(ValueError, match="BatchNorm2d"):
        sp.shrink(model, 0.5)


@pytest.mark.parametrize(
    ("method", "kwargs", "named"),
    [
        ("l1", {"ratio": 1.5}, "got 1.5"),
        ("global", {"ratio": 1.5}, "got 1.5"),
        ("magnitude", {"ratio": 0.5}, "'magnitude'"),
        ("nm", {"ratio": 0.5}, "ratio=0.5"),
    ],
)
def test_bad_sparsify_arguments_raise_naming_the_value(method, kwargs, named):
    model = build("mlp")
    with pytest.raises(ValueError, match=re.escape(named)):
        sp.sparsify_(model, method, **kwargs)
    assert not any(prune.is_pruned(m) for m in model.modules())
