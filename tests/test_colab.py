"""The repository URL is declared once (pyproject.toml's [project.urls] Repository) and every badge, install cell
and the book config agree with it; scripts/refresh_notebooks.py --urls-only writes it everywhere."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import nbformat
import pytest

from mnist_pruning import book

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def _load_script():
    spec = importlib.util.spec_from_file_location("refresh_notebooks", ROOT / "scripts" / "refresh_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


refresh = _load_script()
URL = refresh.repository_url(ROOT)


# ------------------------------------------------------------------------------------ one repository URL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_opens_the_chapter_from_the_pyproject_repository(path):
    owner_name = URL.removeprefix("https://github.com/")
    link = f"https://colab.research.google.com/github/{owner_name}/blob/{refresh.REF}/notebooks/{path.name}"
    first = nbformat.read(path, as_version=4).cells[0].source
    assert f"[![Open In Colab]({book.COLAB_BADGE_URL})]({link})" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_is_the_template_for_the_pyproject_repository(path):
    cell = nbformat.read(path, as_version=4).cells[1]
    assert cell.source == refresh.install_cell(URL)
    assert f'"MNIST_PRUNING_REPO", "{URL}"' in cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_is_hidden_in_the_book(path):
    tags = nbformat.read(path, as_version=4).cells[1].metadata.get("tags", [])
    assert book._HIDDEN_TAGS & set(tags)


def test_book_config_names_the_pyproject_repository():
    import yaml

    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert config["repository"] == {"url": URL, "path_to_book": "book", "branch": refresh.REF}


def test_no_file_is_out_of_step_with_pyproject():
    stale = [str(p.relative_to(ROOT)) for p, text in refresh.synced(ROOT).items() if p.read_text() != text]
    assert not stale, "run: python scripts/refresh_notebooks.py --urls-only"


def _project_copy(tmp_path: Path) -> Path:
    out = tmp_path / "fork"
    shutil.copytree(ROOT / "notebooks", out / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (out / "book").mkdir()
    shutil.copy(ROOT / "book" / "_config.yml", out / "book")
    shutil.copy(ROOT / "pyproject.toml", out)
    return out


def test_a_fork_changes_one_line_and_the_script_writes_it_everywhere(tmp_path):
    fork = _project_copy(tmp_path)
    toml = fork / "pyproject.toml"
    toml.write_text(toml.read_text().replace(f'Repository = "{URL}"', 'Repository = "https://github.com/me/fork"'))

    changed = refresh.sync_urls(fork)

    assert len(changed) == len(NOTEBOOKS) + 1
    for path in NOTEBOOKS:
        before = nbformat.read(path, as_version=4)
        after = nbformat.read(fork / "notebooks" / path.name, as_version=4)
        assert (
            f"colab.research.google.com/github/me/fork/blob/main/notebooks/{path.name})" in after.cells[0].source
        )
        assert after.cells[0].source.replace("me/fork", URL.removeprefix("https://github.com/")) == (
            before.cells[0].source
        )
        assert after.cells[1].source == refresh.install_cell("https://github.com/me/fork")
        assert after.cells[2:] == before.cells[2:]  # the chapter itself is untouched
    config = (fork / "book" / "_config.yml").read_text()
    assert "  url: https://github.com/me/fork\n" in config
    assert config.replace("https://github.com/me/fork", URL) == (ROOT / "book" / "_config.yml").read_text()


def test_the_script_is_idempotent(tmp_path):
    fork = _project_copy(tmp_path)
    assert refresh.sync_urls(fork) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", r"declares no Repository in \[project.urls\]"),
        (
            'Repository = "https://gitlab.com/me/fork"',
            "'https://gitlab.com/me/fork' in .* is not a https://github",
        ),
    ],
)
def test_repository_url_must_be_a_github_repository(tmp_path, line, message):
    fork = _project_copy(tmp_path)
    toml = fork / "pyproject.toml"
    toml.write_text(toml.read_text().replace(f'Repository = "{URL}"', line))
    with pytest.raises(ValueError, match=message):
        refresh.repository_url(fork)
