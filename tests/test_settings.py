"""settings.project_root: the package's own checkout first (Colab restarts kernels outside it), then the cwd."""

import shutil
from pathlib import Path

import pytest

from mnist_pruning import settings

ROOT = Path(__file__).resolve().parents[1]


def test_project_root_is_the_package_checkout_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Colab after a restart: /content, outside the clone
    assert settings._project_root() == ROOT


def test_project_root_falls_back_to_the_cwd_outside_a_checkout(tmp_path, monkeypatch):
    # an installed (not editable) package: no pyproject.toml above it
    monkeypatch.setattr(settings, "__file__", str(tmp_path / "site-packages" / "mnist_pruning" / "settings.py"))
    monkeypatch.chdir(ROOT / "notebooks")
    assert settings._project_root() == ROOT
    monkeypatch.chdir(tmp_path)
    assert settings._project_root() == tmp_path


def test_project_root_with_start_searches_from_start(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "notebooks").mkdir()
    assert settings._project_root(tmp_path / "notebooks") == tmp_path


@pytest.mark.parametrize(("env", "shown"), [(None, True), ("1", False), ("0", True), ("true", False)])
def test_progress_bars_follow_tqdm_disable(monkeypatch, env, shown):
    from mnist_pruning.settings import _show_progress

    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    assert _show_progress(True) is shown
    assert _show_progress(False) is False
