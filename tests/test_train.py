import copy

import pytest
import torch

from mnist_pruning.files import _load_torch, _UnsafeFileError
from mnist_pruning.train import TrainConfig, _load_checkpoint, _save_checkpoint, evaluate, train


def test_short_training_on_a_subset_lifts_accuracy_far_above_chance(mnist_small):
    model, history = train("mlp", mnist_small, TrainConfig(epochs=2, batch_size=64, lr=0.05), progress=False)
    assert evaluate(model, mnist_small.test_x, mnist_small.test_y)["accuracy"] > 0.85
    assert len(history) == 2 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_cnn_trains_on_a_subset(mnist_small):
    model, _ = train("cnn", mnist_small, TrainConfig(epochs=1, batch_size=64, lr=0.05), progress=False)
    assert evaluate(model, mnist_small.test_x, mnist_small.test_y)["accuracy"] > 0.8


def test_same_seed_gives_identical_weights(mnist_small):
    cfg = TrainConfig(epochs=1, batch_size=256, seed=3)
    a, _ = train("mlp", mnist_small, cfg, progress=False)
    b, _ = train("mlp", mnist_small, cfg, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, mnist_small):
    model, history = train("cnn", mnist_small, TrainConfig(epochs=1, batch_size=256), progress=False)
    _save_checkpoint(tmp_path / "m.pt", model, TrainConfig(epochs=1), history)
    loaded, payload = _load_checkpoint(tmp_path / "m.pt")
    x = mnist_small.test_x[:64]
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert payload["train_config"]["epochs"] == 1 and payload["model_config"]["arch"] == "cnn"


def test_checkpoint_loads_with_weights_only(tmp_path):
    from mnist_pruning.models import build_model

    _save_checkpoint(tmp_path / "m.pt", build_model("mlp"))
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(payload) >= {"model_config", "state_dict"}


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_carrying_a_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "model_config": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(_UnsafeFileError, match="refusing to load"):
        _load_torch(tmp_path / "evil.pt")
    with pytest.raises(_UnsafeFileError):
        _load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_interrupted_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    from mnist_pruning.models import build_model

    path = tmp_path / "m.pt"
    _save_checkpoint(path, build_model("mlp"))
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        _save_checkpoint(path, build_model("mlp"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("epochs", -1), ("epochs", 1.5), ("batch_size", 0), ("lr", -0.1), ("lr", float("nan"))],
)
def test_bad_train_config_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_fine_tune_does_not_touch_the_original_when_given_a_copy(mnist_small):
    from mnist_pruning.models import build_model
    from mnist_pruning.train import fine_tune

    m = build_model("mlp")
    ref = copy.deepcopy(m)
    fine_tune(copy.deepcopy(m), mnist_small, TrainConfig(epochs=1, batch_size=512), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), ref.parameters(), strict=True))


def test_history_logs_the_validation_split_not_the_test_set(mnist_small):
    model, history = train("mlp", mnist_small, TrainConfig(epochs=1, batch_size=256), progress=False)
    assert "test_accuracy" not in history[-1] and "test_loss" not in history[-1]
    assert history[-1]["val_accuracy"] == evaluate(model, mnist_small.val_x, mnist_small.val_y)["accuracy"]


def test_auto_precision_resolves_to_what_the_device_supports():
    from mnist_pruning.train import _bf16_supported

    assert TrainConfig().precision == ("bf16" if _bf16_supported() else "fp32")
    assert TrainConfig(precision="fp32").to_dict()["precision"] == "fp32"


@pytest.mark.parametrize("bad", ["fp16", "", None])
def test_unknown_precision_raises_naming_it(bad):
    with pytest.raises(ValueError, match=repr(bad)):
        TrainConfig(precision=bad)


def test_bf16_training_keeps_float32_weights_and_tracks_fp32_training(mnist_small):
    from mnist_pruning.data import MNISTData

    # 4 steps: bf16 is emulated (slow) on CPUs without AVX-512 BF16 / AMX; the point is the numbers, not speed
    d = mnist_small
    small = MNISTData(d.train_x[:256], d.train_y[:256], d.test_x[:64], d.test_y[:64], d.val_x[:64], d.val_y[:64])
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model, history = train(
            "mlp", small, TrainConfig(epochs=1, batch_size=64, precision=precision), progress=False
        )
        assert all(p.dtype == torch.float32 for p in model.parameters())
        losses[precision] = history[-1]["train_loss"]
    # bf16 keeps ~3 significant digits: the mean loss over the same batches agrees to about 1 %
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    assert losses["bf16"] != losses["fp32"]  # it really ran in another precision


def test_sgd_config_dict_is_the_one_from_before_the_optimizer_field():
    # Sweep caches and result rows are keyed on TrainConfig.to_dict(): an SGD config serialises as it always did.
    keys = ["epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup", "seed", "precision"]
    assert list(TrainConfig().to_dict()) == keys
    assert TrainConfig(optimizer="adam").to_dict()["optimizer"] == "adam"


@pytest.mark.parametrize("bad", ["Adam", "rmsprop", None])
def test_unknown_optimizer_raises_naming_it(bad):
    with pytest.raises(ValueError, match=f"optimizer {bad!r}"):
        TrainConfig(optimizer=bad)


@pytest.mark.parametrize(("name", "cls"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_fine_tune_steps_with_the_configured_optimizer(name, cls, monkeypatch):
    from mnist_pruning import train as train_module
    from mnist_pruning.models import build_model

    used = []
    monkeypatch.setattr(cls, "step", lambda self, *a, **k: used.append(type(self)))
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    config = TrainConfig(epochs=1, batch_size=4, optimizer=name)
    optimizer, _ = train_module._optimizer(build_model("mlp"), config, 2)
    assert type(optimizer) is cls
    gen = torch.Generator().manual_seed(0)
    train_module._train_one_epoch(build_model("mlp"), x, y, optimizer, 4, gen)
    assert used == [cls, cls]


def test_penalty_is_added_to_every_steps_loss():
    from mnist_pruning.models import build_model
    from mnist_pruning.train import _train_one_epoch

    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    losses = {}
    for penalty in (None, lambda: torch.tensor(2.5)):
        torch.manual_seed(0)
        model = build_model("mlp")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(0)
        losses[penalty is None] = _train_one_epoch(model, x, y, optimizer, 4, gen, penalty=penalty)
    assert losses[False] == pytest.approx(losses[True] + 2.5, abs=1e-5)
