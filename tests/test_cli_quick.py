"""The quick main job takes its budget as defaults only: what the user passes wins."""

import pytest

from mnist_pruning.cli import _QUICK, _build_parser, _sweep_config
from mnist_pruning.fullrun import _execute_chapters


def config_for(*argv):
    args = _build_parser().parse_args(["run", *argv])
    args.schedules = ["oneshot"]
    return _sweep_config(args, quick=True)


def test_quick_run_uses_its_budget_when_nothing_is_given():
    config = config_for()
    assert config.ratios == _QUICK["ratios"]
    assert config.patterns == _QUICK["patterns"]
    assert config.finetune_epochs == _QUICK["finetune_epochs"]
    assert config.baseline_epochs == _QUICK["baseline_epochs"]


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["--ratios", "0.7", "0.8"], "ratios", (0.7, 0.8)),
        (["--patterns", "1:4"], "patterns", ("1:4",)),
        (["--finetune-epochs", "3"], "finetune_epochs", 3),
        (["--baseline-epochs", "2"], "baseline_epochs", {"mlp": 2, "cnn": 2}),
        (["--subset", "500"], "subset", 500),
    ],
)
def test_quick_run_keeps_what_the_user_passed(argv, field, expected):
    assert getattr(config_for(*argv), field) == expected


def test_the_quick_run_is_one_seed_and_the_full_run_three_unless_told_otherwise():
    assert config_for().seeds == (0,)
    assert config_for("--seeds", "3", "4").seeds == (3, 4)
    full = _build_parser().parse_args(["run", "--full"])
    full.schedules = ["oneshot"]
    assert _sweep_config(full).seeds == (0, 1, 2)
    one = _build_parser().parse_args(["run", "--full", "--seed", "5"])
    one.schedules = ["oneshot"]
    assert _sweep_config(one).seeds == (5,)


def test_quick_run_writes_under_its_own_folder_unless_told_otherwise(tmp_path):
    assert config_for().results_dir == "runs/quick/results"
    assert config_for("--out-dir", str(tmp_path)).results_dir == str(tmp_path / "results")
    assert config_for("--results-dir", str(tmp_path)).results_dir == str(tmp_path)


def test_executing_chapters_leaves_the_users_tqdm_setting_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "0")
    _execute_chapters(tmp_path / "out", tmp_path, chapters={})
    import os

    assert os.environ["TQDM_DISABLE"] == "0"
