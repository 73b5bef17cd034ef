"""Weight sharing, centroid fine-tuning and the entropy-coded file format (mnist_pruning.compress)."""

import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny import tiny_model
from torch.nn.utils import parametrize

from mnist_pruning import compress as C
from mnist_pruning import frontier
from mnist_pruning.compress.coder import _encode_indices
from mnist_pruning.compress.fileformat import _load_coded
from mnist_pruning.files import CorruptFileError
from mnist_pruning.models import ModelConfig, build_model
from mnist_pruning.sparsity.measure import prunable_layers
from mnist_pruning.sparsity.unstructured import bake_in, sparsify_
from mnist_pruning.train import TrainConfig

SMALL_CNN = ModelConfig("cnn", (4, 6, 12))


def _pruned(model: torch.nn.Module, ratio: float = 0.8) -> torch.nn.Module:
    sparsify_(model, "global", ratio)
    return bake_in(model)


def _coded(model=None, bits_fc: int = 3, bits_conv: int = 4) -> C.coded._CodedModel:
    model = _pruned(model if model is not None else tiny_model())
    C.share_weights(model, C.layer_bits(model, bits_conv=bits_conv, bits_fc=bits_fc))
    return C.unshare(model)


def _shared(module: torch.nn.Module) -> C.sharing._SharedWeight:
    return module.parametrizations.weight[0]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("coding", [None, "mask", "gap"])
@pytest.mark.parametrize("spec", ["tiny-mlp", "small-cnn"])
def test_encode_decode_is_bit_exact(spec, coding):
    torch.manual_seed(0)
    model = tiny_model() if spec == "tiny-mlp" else build_model(SMALL_CNN)
    coded = _coded(model)
    back = C.decode(C.encode(coded, coding))
    assert back.config == coded.config
    assert list(back.layers) == list(coded.layers)
    for name, layer in coded.layers.items():
        got = back.layers[name]
        assert _same_bits(got.positions, layer.positions), name
        assert _same_bits(got.indices, layer.indices), name
        assert _same_bits(got.codebook, layer.codebook), name
        assert got.shape == layer.shape and got.bits == layer.bits
    for name, t in coded.tensors.items():
        assert back.tensors[name].dtype == t.dtype and torch.equal(back.tensors[name], t)
    # ... and the decoded state_dict is exactly the in-memory quantized model's
    for name, t in back.state_dict().items():
        assert torch.equal(t, model.state_dict()[name].float()), name


def test_f16_codebook_round_trips_exactly():
    model = _pruned(tiny_model())
    C.share_weights(model, C.layer_bits(model, bits_fc=4), codebook_dtype="F16")
    coded = C.unshare(model)
    back = C.decode(C.encode(coded))
    for name, layer in coded.layers.items():
        assert layer.codebook.dtype == np.float16 and _same_bits(back.layers[name].codebook, layer.codebook)


@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_kmeans_gives_at_most_2_pow_bits_distinct_values_per_layer(bits):
    model = _pruned(tiny_model())
    C.share_weights(model, C.layer_bits(model, bits_fc=bits))
    C.unshare(model)
    for name, module in prunable_layers(model):
        values = module.weight.detach()
        assert len(torch.unique(values[values != 0])) <= 2**bits, name


def test_kmeans_keeps_the_zeros_and_the_pruned_positions():
    model = _pruned(tiny_model())
    kept = {name: m.weight.detach() != 0 for name, m in prunable_layers(model)}
    C.share_weights(model, C.layer_bits(model, bits_fc=2))
    C.unshare(model)
    for name, m in prunable_layers(model):
        assert torch.equal(m.weight.detach() != 0, kept[name]), name


def test_layer_with_fewer_distinct_values_than_clusters_keeps_them_exactly():
    model = tiny_model()
    with torch.no_grad():
        for _, m in prunable_layers(model):
            m.weight.copy_(torch.randint(-2, 3, m.weight.shape).float() * 0.25)
    before = {name: m.weight.detach().clone() for name, m in prunable_layers(model)}
    C.share_weights(model, C.layer_bits(model, bits_fc=8))
    coded = C.unshare(model)
    for name, m in prunable_layers(model):
        assert torch.equal(m.weight.detach(), before[name]), name
        assert len(coded.layers[f"{name}.weight"].codebook) == 4  # -0.5, -0.25, 0.25, 0.5


def test_mask_holds_through_centroid_fine_tuning(mnist_small):
    model = _pruned(tiny_model(), 0.7)
    zeros = {name: m.weight.detach() == 0 for name, m in prunable_layers(model)}
    C.share_weights(model, C.layer_bits(model, bits_fc=3))
    codebooks = {name: _shared(m).codebook.detach().clone() for name, m in prunable_layers(model)}
    C.fine_tune_centroids(model, mnist_small, TrainConfig(epochs=1, batch_size=256, lr=0.05), progress=False)
    changed = False
    for name, m in prunable_layers(model):
        assert torch.all(m.weight.detach()[zeros[name]] == 0), name
        changed |= not torch.equal(_shared(m).codebook.detach(), codebooks[name])
    assert changed  # the centroids did train
    C.unshare(model)
    for name, m in prunable_layers(model):
        assert torch.all(m.weight.detach()[zeros[name]] == 0), name


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    torch.manual_seed(0)
    model = _pruned(tiny_model(), 0.5)
    C.share_weights(model, C.layer_bits(model, bits_fc=2))
    x = torch.randn(8, 1, 28, 28)
    model(x).pow(2).sum().backward()
    layer, shared = model.fc2, _shared(model.fc2)
    got = shared.codebook.grad.clone()
    # the same loss through an ordinary weight tensor
    w = (shared.codebook[shared.index] * shared.keep).detach().requires_grad_(True)
    h = torch.relu(torch.nn.functional.linear(torch.relu(model.fc1(torch.flatten(x, 1))), w, layer.bias))
    model.fc3(h).pow(2).sum().backward()
    keep = shared.keep.bool()
    expected = torch.zeros_like(shared.codebook).index_add_(0, shared.index[keep], w.grad[keep])
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_sharing_is_a_torch_parametrization_that_unshare_removes():
    model = _pruned(tiny_model())
    keys = sorted(model.state_dict())
    C.share_weights(model, C.layer_bits(model, bits_fc=3))
    for name, m in prunable_layers(model):
        shared = _shared(m)
        assert parametrize.is_parametrized(m, "weight") and isinstance(shared, C.sharing._SharedWeight), name
        assert torch.equal(m.weight, shared.codebook[shared.index] * shared.keep), name
    C.unshare(model)
    assert not any(parametrize.is_parametrized(m) for _, m in prunable_layers(model))
    assert sorted(model.state_dict()) == keys


def test_centroid_sgd_step_is_lr_times_k_over_kept_times_its_gradient():
    torch.manual_seed(0)
    model = _pruned(tiny_model(), 0.5)
    C.share_weights(model, C.layer_bits(model, bits_fc=2))
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    layers = prunable_layers(model)
    before = {name: _shared(m).codebook.detach().clone() for name, m in layers}
    grads = {name: _shared(m).codebook.grad.clone() for name, m in layers}
    model.zero_grad()
    data = SimpleNamespace(train_x=x, train_y=y, test_x=x, test_y=y)
    config = TrainConfig(epochs=1, batch_size=32, lr=0.1, momentum=0.0, weight_decay=0.0)
    C.fine_tune_centroids(model, data, config, progress=False)  # one plain SGD step on the one batch
    for name, m in layers:
        shared = _shared(m)
        step = 0.1 * len(shared.codebook) / float(shared.keep.sum())
        assert torch.allclose(shared.codebook.detach(), before[name] - step * grads[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k", [4, 32, 256])
def test_coded_index_stream_is_within_2_percent_of_its_empirical_entropy(k):
    rng = np.random.default_rng(k)
    p = rng.dirichlet(np.ones(k) * 0.5)
    indices = rng.choice(k, size=20000, p=p)
    indices = np.unique(indices, return_inverse=True)[1].astype(np.int64)  # every entry used
    _, stream = _encode_indices(indices, int(indices.max()) + 1)
    entropy_bytes = C.limits._empirical_entropy_bits(indices) / 8
    assert len(stream) <= 1.02 * entropy_bytes + 8


def test_size_breakdown_adds_up_to_the_file():
    data = C.encode(_coded())
    parts = C.size_breakdown(data)
    assert sum(parts.values()) == len(data)
    assert set(parts) == {"header", "codebooks", "values", "positions", "biases"}


def test_information_limit_is_near_the_coded_payload():
    coded = _coded()
    data = C.encode(coded)
    parts = C.size_breakdown(data)
    limit = C.limits._information_limit(coded)
    payload = len(data) - parts["header"]
    assert limit["total"] * 0.9 < payload < limit["total"] * 1.25 + 64


def _sample_bits(n_bits: int, rng: np.random.Generator) -> list[int]:
    """Every bit of the first 16 and last 8 bytes (fixed fields, header start, CRC) plus 400 others."""
    edges = list(range(min(128, n_bits))) + list(range(max(0, n_bits - 64), n_bits))
    return sorted(set(edges) | set(rng.choice(n_bits, size=min(400, n_bits), replace=False).tolist()))


def test_every_sampled_single_bit_flip_is_refused(tmp_path):
    data = bytearray(C.encode(_coded()))
    path = tmp_path / "m.mnpz"
    rng = np.random.default_rng(0)
    for bit in _sample_bits(8 * len(data), rng):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptFileError, match="m.mnpz"):
            _load_coded(path)


def test_truncated_file_is_refused(tmp_path):
    data = C.encode(_coded())
    path = tmp_path / "cut.mnpz"
    for length in sorted({0, 1, 4, 7, 8, 11, 100, len(data) // 2, len(data) - 4, len(data) - 1}):
        path.write_bytes(data[:length])
        with pytest.raises(CorruptFileError, match="cut.mnpz"):
            _load_coded(path)


def _with_header(data: bytes, edit) -> bytes:
    """The file with its header text edited and the CRC recomputed: only the consistency checks can object."""
    magic, version, n = struct.unpack_from("<4sBH", data)
    header = edit(data[7 : 7 + n].decode())
    body = struct.pack("<4sBH", magic, version, len(header)) + header.encode() + data[7 + n : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_wrong_section_lengths_are_refused_even_with_a_valid_crc():
    data = C.encode(_coded())
    assert C.decode(_with_header(data, lambda h: h))  # the helper itself keeps a valid file valid
    record = next(r for r in C.fileformat._decode_header(data) if r.startswith("shared"))
    *head, lengths = record.split(" ")
    sizes = [int(x) for x in lengths.split(",")]
    sizes[2] += 4  # the index stream claims one word more
    bad = " ".join([*head, ",".join(map(str, sizes))])
    with pytest.raises(CorruptFileError, match="not a valid"):
        C.decode(_with_header(data, lambda h: h.replace(record, bad)))


def test_a_file_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "x.mnpz"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(CorruptFileError, match="x.mnpz"):
        _load_coded(path)


@pytest.mark.parametrize("bits", [0, 17, -1, 2.5, True])
def test_bad_bits_raise_before_any_work(bits):
    with pytest.raises(ValueError, match="1..16"):
        C.layer_bits("mlp", bits_fc=bits)
    with pytest.raises(ValueError, match="1..16"):
        C.CompressConfig(models=("cnn",), bits=((bits, 5),))


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, float("nan")])
def test_bad_sparsity_raises_before_any_work(sparsity):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        C.CompressConfig(models=("mlp",), sparsities={"mlp": (sparsity,)})


def test_unknown_layer_raises_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"'conv1'.*fc1.*fc2.*fc3"):
        C.layer_bits("mlp", per_layer={"conv1": 4})
    with pytest.raises(ValueError, match="'fc9'"):
        C.CompressConfig(models=("cnn",), per_layer={"fc9": 3})


def test_per_layer_bits_override_the_kind_defaults():
    assert C.layer_bits("cnn", bits_conv=6, bits_fc=4, per_layer={"fc2": 2}) == {
        "conv1": 6,
        "conv2": 6,
        "fc1": 4,
        "fc2": 2,
    }
    assert C.sharing._bits_text({"fc1": 5, "fc2": 3}) == "fc1=5;fc2=3"


def test_cli_compress_smoke(tmp_path, capsys):
    from mnist_pruning.cli import main
    from mnist_pruning.results import load_compression_results

    out, results = tmp_path / "runs", tmp_path / "results"
    args = ["compress", "--model", "mlp", "--sparsity", "0.9", "--bits-fc", "4", "--subset", "1000"]
    args += ["--test-subset", "500", "--baseline-epochs", "1", "--prune-epochs", "1", "--centroid-epochs", "1"]
    args += ["--out-dir", str(out), "--results-dir", str(results), "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "entropy coding" in printed and "zstd" in printed
    df = load_compression_results(results)
    row = df.iloc[0]
    assert len(df) == 1 and row["bits"] == "fc1=4;fc2=4;fc3=4"
    coded = sorted((out / "compress").glob("*.mnpz"))
    assert len(coded) == 1 and coded[0].stat().st_size == row["size_coded_bytes"]
    assert row["size_coded_bytes"] < row["size_compact_bytes"] < row["size_dense_bytes"]
    assert abs(row["sparsity"] - 0.9) < 0.01
    # a second run finds the row and adds nothing
    assert main(args) == 0
    assert len(load_compression_results(results, dedupe=False)) == 1


def test_cli_rejects_bad_bits_before_loading_data(tmp_path):
    from mnist_pruning.cli import main

    with pytest.raises(SystemExit) as e:
        main(["compress", "--bits-fc", "0", "--out-dir", str(tmp_path), "--data-dir", str(tmp_path / "none")])
    assert e.value.code == 2


def _comp_rows():
    import pandas as pd

    rows = []
    for model, base in (("mlp", 0.984), ("cnn", 0.992)):
        for i, (s, bits) in enumerate([(0.95, "fc1=5;fc2=5"), (0.95, "fc1=3;fc2=3"), (0.99, "fc1=3;fc2=3")]):
            coded = 20_000 - 5_000 * i
            rows.append(
                {
                    "model": model,
                    "sparsity_target": s,
                    "sparsity": s,
                    "bits": bits,
                    "acc_baseline": base,
                    "acc_pruned": base - 0.001,
                    "acc_shared": base - 0.002,
                    "acc_test": base - 0.003 * i,
                    "size_coded_bytes": coded,
                    "limit_bytes": coded * 0.97,
                    "bytes_values": coded * 0.4,
                    "bytes_positions": coded * 0.4,
                    "bytes_codebooks": coded * 0.05,
                    "bytes_biases": coded * 0.1,
                    "bytes_header": coded * 0.05,
                    "compact_lzma_bytes": coded * 4,
                }
            )
    return pd.DataFrame(rows)


def test_compression_frontier_draws_coded_files_limits_and_the_references(fixture_results):
    from mnist_pruning import plots
    from mnist_pruning.references import _SIZE_ANCHORS
    from mnist_pruning.results import load_results

    df = load_results(fixture_results)
    fig = plots.compression_frontier(df, _comp_rows(), "cnn")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    for anchor in (a for a in _SIZE_ANCHORS if a.model == "cnn"):
        assert any(anchor.source in label for label in labels), anchor.source
    assert "information limit of that file" in labels and "dense baseline" in labels
    coded = next(line for line in ax.get_lines() if line.get_label().startswith("coded: 95 %"))
    assert sorted(coded.get_xdata()) == [15_000, 20_000]


def test_compression_breakdown_stacks_the_parts_to_the_file_size():
    from mnist_pruning import plots

    fig = plots.compression_breakdown(_comp_rows(), "mlp")
    (ax,) = fig.axes
    tops = {}
    for patch in ax.patches:
        x = round(patch.get_x() + patch.get_width() / 2, 3)
        tops[x] = max(tops.get(x, 0), patch.get_y() + patch.get_height())
    assert sorted(round(v * 1000) for v in tops.values()) == [10_000, 15_000, 20_000]


def test_goals_table_finds_the_smallest_file_within_each_error_bound():
    table = C.goals_table(_comp_rows())
    mlp = table[table["model"] == "mlp"].reset_index(drop=True)
    # mlp errors 1.6 / 1.9 / 2.2 % at 20 / 15 / 10 kB: nothing <= 1.58 %; <= 2.0 % -> the 15 kB file
    assert not mlp.loc[0, "reached"]
    assert mlp.loc[1, "reached"] and mlp.loc[1, "smallest file within the error (bytes)"] == 15_000


def test_compression_rows_are_averaged_over_seeds_per_point(tmp_path):
    import statistics

    from mnist_pruning.results import COMPRESSION, append_row, load_compression_results

    for seed, acc, size in [(0, 0.98, 1000), (1, 0.97, 1100), (2, 0.975, 1050)]:
        row = dict.fromkeys(COMPRESSION.columns, 1)
        row.update(model="mlp", sparsity_target=0.95, bits="fc1=5;fc2=5;fc3=5", prune_epochs=20, centroid_epochs=2)
        row.update(seed=seed, config_hash=f"h{seed}", acc_test=acc, size_coded_bytes=size, version="x")
        row.update(codebook_entries="fc1=32", position_coding="fc1=gap")
        append_row(COMPRESSION.csv(tmp_path), row, COMPRESSION)
    mean = load_compression_results(tmp_path)
    assert len(mean) == 1 and mean["n_seeds"].iloc[0] == 3 and mean["seeds"].iloc[0] == "0 1 2"
    assert mean["acc_test"].iloc[0] == pytest.approx(statistics.mean([0.98, 0.97, 0.975]))
    assert mean["acc_test_std"].iloc[0] == pytest.approx(statistics.stdev([0.98, 0.97, 0.975]))
    assert mean["size_coded_bytes"].iloc[0] == pytest.approx(1050)
    assert len(load_compression_results(tmp_path, per_seed=True)) == 3


def test_compression_frontier_draws_the_seed_spread_as_error_bars(fixture_results):
    from matplotlib.container import ErrorbarContainer

    from mnist_pruning import plots
    from mnist_pruning.results import load_results

    comp = _comp_rows().assign(acc_test_std=0.001)  # seed means, as load_compression_results gives them
    fig = plots.compression_frontier(load_results(fixture_results), comp, "cnn")
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert bars and all(c.has_yerr for c in bars)


def test_a_frontier_recipe_prunes_the_grid_and_names_another_configuration():
    plain = C.CompressConfig(models=("cnn",))
    recipe = C.CompressConfig(models=("cnn",), recipes={"cnn": "long+kd+floor"})
    assert recipe.prune_config("cnn").epochs == frontier.RECIPES["cnn"]["long+kd+floor"].epochs
    assert recipe.recipe("cnn").floors == (("conv1", 0.5),) and plain.recipe("cnn") is None
    assert recipe.hash("cnn") != plain.hash("cnn")
    with pytest.raises(ValueError, match="unknown recipe 'best' for 'cnn'"):
        C.CompressConfig(models=("cnn",), recipes={"cnn": "best"})
