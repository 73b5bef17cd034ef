"""Every bad command-line value is refused with a message naming it, before any data is loaded or model trained."""

import pytest

from mnist_pruning.cli import main


@pytest.fixture
def blocker(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a directory")
    return f


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "--ratios", "1.5"], r"ratio must be in [0, 1) (the fraction of weights removed), got 1.5"),
        (["sweep", "--ratios", "-0.1"], "got -0.1"),
        (["sweep", "--models", "resnet"], "unknown model 'resnet'; allowed: 'mlp', 'cnn'"),
        (["sweep", "--methods", "random"], "unknown method 'random'; allowed: 'l1', 'global', 'nm', 'structured'"),
        (["sweep", "--patterns", "4:4"], "4:4"),
        (["sweep", "--patterns", "2-4"], "2-4"),
        (["sweep", "--finetune-epochs", "0"], "epochs must be a positive integer, got 0"),
        (["sweep", "--baseline-epochs", "-3"], "baseline epochs of 'mlp' must be a positive integer, got -3"),
        (["sweep", "--schedules", "slow"], "unknown schedule 'slow'"),
        (["run", "--frontier-ratios", "1.0"], "ratio must be in [0, 1)"),
        (["sweep", "--seeds", "-1"], "seed must be an integer >= 0, got -1"),
        (["sweep", "--seeds", "0", "2", "0"], "seeds must be distinct, got [0, 2, 0] (repeated: [0])"),
        (["sweep", "--seeds"], "--seeds: expected at least one argument"),
        (["run", "--full", "--seeds", "1", "1"], "seeds must be distinct"),
        (["sweep", "--seed", "1", "--seeds", "2"], "give --seed (1) or --seeds (2), not both"),
        (["sweep", "--workers", "0"], "workers must be a positive integer, got 0"),
        (["run", "--workers", "-2"], "workers must be a positive integer, got -2"),
        (["sweep", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "give one of them"),
        (["baseline", "--models", "vgg"], "unknown model 'vgg'"),
        (["baseline", "--epochs", "0"], "epochs must be a positive integer, got 0"),
    ],
)
def test_bad_value_exits_2_with_a_message_naming_it(argv, message, capsys, tmp_path):
    # Outputs go to tmp_path, so even a validation bug could not touch the project's runs/ or results/.
    argv = [*argv, "--out-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    if argv[0] != "baseline":
        argv += ["--results-dir", str(tmp_path / "results")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_results_dir_that_is_a_file_is_refused(blocker, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--models", "mlp", "--results-dir", str(blocker), "--out-dir", str(blocker.parent)])
    assert "exists and is not a directory" in capsys.readouterr().err


def test_data_dir_that_is_a_file_is_refused(blocker, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["baseline", "--models", "mlp", "--data-dir", str(blocker), "--out-dir", str(tmp_path / "runs")])
    assert "is not a directory" in capsys.readouterr().err
