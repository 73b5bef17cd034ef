"""Maintainers: keep the chapters' Colab cells in step with pyproject.toml, and re-execute chapters in smoke mode.

Usage::

    .venv/bin/python scripts/refresh_notebooks.py --urls-only      # badges, install cells, book/_config.yml
    MNIST_PRUNING_SMOKE=1 .venv/bin/python scripts/refresh_notebooks.py notebooks/02_prune.ipynb ...

Where the project lives is declared once: ``Repository`` in pyproject.toml's ``[project.urls]``. This script writes
it into every chapter's "Open in Colab" badge (the first cell's badge line), its install cell (the second cell,
rendered from :data:`INSTALL_CELL` and tagged ``remove-cell`` so the book hides it) and ``repository.url`` of
book/_config.yml; nothing else in those cells or files changes. A fork changes that one line and reruns
``--urls-only``; tests/test_colab.py fails while any of them disagrees with pyproject.toml.

Re-executing (paths given, ``MNIST_PRUNING_SMOKE=1``) first does the same, then keeps only the outputs nbval
checks: the committed notebooks carry no outputs (readers run them, the book shows the full run's executed
copies), except cells marked ``# NBVAL_CHECK_OUTPUT``: nbval compares their output with the stored one, so it must
be stored, and it must not depend on the smoke configuration (counts, shapes, exact sparsities).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10; pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
REF = "main"  # the branch the badges open and the install cell clones
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
HIDE_IN_BOOK = "remove-cell"  # a tag the book honours (mnist_pruning.book._HIDDEN_TAGS)

# The install cell of every chapter. It detects Colab by its runtime's google.colab package, not by whether
# mnist_pruning is importable: after "Restart session" the package is installed but the kernel is back in
# /content, so the cell must change into the clone again. <REPO> and <REF> are filled in by install_cell().
INSTALL_CELL = """\
# Colab only (a no-op elsewhere, where the README's set-up installed the package): clone the project, install it
# and work inside the clone. It does all of this on every run, so it also works after "Restart session". To use
# another copy, set MNIST_PRUNING_REPO (URL), MNIST_PRUNING_REF (branch or tag) or MNIST_PRUNING_CLONE (folder).
import importlib.util
import os
import shutil
import subprocess
import sys

if importlib.util.find_spec("google") and importlib.util.find_spec("google.colab"):
    repo = os.environ.get("MNIST_PRUNING_REPO", "<REPO>")
    ref = os.environ.get("MNIST_PRUNING_REF", "<REF>")
    clone = os.path.abspath(os.environ.get("MNIST_PRUNING_CLONE", "/content/mnist-pruning"))
    if not os.path.isdir(clone):
        # Cloned beside it and renamed: a failed clone leaves nothing a rerun would take for a good one.
        partial = clone + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        git = subprocess.run(
            ["git", "clone", "-q", "--depth", "1", "--branch", ref, repo, partial], capture_output=True, text=True
        )
        if git.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(
                f"could not clone {repo!r} at {ref!r}: {git.stderr.strip()}\\n"
                "Set MNIST_PRUNING_REPO to the project's repository URL (and MNIST_PRUNING_REF to one of its "
                "branches or tags), e.g. with %env, then run this cell again."
            )
        os.rename(partial, clone)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", clone], check=True)
    os.chdir(clone)
    sys.path.insert(0, clone)  # the editable install is only seen by kernels started after it"""

_BADGE = re.compile(
    r"\[!\[Open In Colab\]\([^)\s]*\)\]\(https://colab\.research\.google\.com/github/[^)\s]*\)", re.IGNORECASE
)
_GITHUB = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")
# `url:` and `branch:` inside the top-level `repository:` block of book/_config.yml (edited as text, so the
# file's comments stay)
_CONFIG_KEY = r"(?m)^(repository:\n(?:[ \t]+.*\n|[ \t]*\n)*?[ \t]+{key}:[ \t]*)(\S.*)$"


def repository_url(root: str | os.PathLike = ROOT) -> str:
    """``Repository`` of ``[project.urls]`` in ``<root>/pyproject.toml``; ValueError if absent or not GitHub's."""
    toml = Path(root) / "pyproject.toml"
    url = tomllib.loads(toml.read_text()).get("project", {}).get("urls", {}).get("Repository", "")
    if not url:
        raise ValueError(f"{str(toml)!r} declares no Repository in [project.urls]")
    if not _GITHUB.match(url):
        # Colab opens notebooks only from GitHub (colab.research.google.com/github/<owner>/<name>/...)
        raise ValueError(f"Repository {url!r} in {str(toml)!r} is not a https://github.com/<owner>/<name> URL")
    return url


def badge(url: str, notebook: str, ref: str = REF) -> str:
    """The Markdown "Open in Colab" badge of ``notebooks/<notebook>`` in the repository ``url`` at ``ref``."""
    match = _GITHUB.match(url)
    if not match:
        raise ValueError(f"{url!r} is not a https://github.com/<owner>/<name> URL")
    owner, name = match.groups()
    link = f"https://colab.research.google.com/github/{owner}/{name}/blob/{ref}/notebooks/{notebook}"
    return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({link})"


def install_cell(url: str, ref: str = REF) -> str:
    """The install cell's source for the repository ``url`` at ``ref``."""
    return INSTALL_CELL.replace("<REPO>", url).replace("<REF>", ref)


def sync_notebook(nb: nbformat.NotebookNode, name: str, url: str, ref: str = REF) -> None:
    """Rewrite the badge line of cell 0 and all of cell 1 (source, ``remove-cell`` tag) of the chapter ``name``."""
    if len(nb.cells) < 2 or nb.cells[0].cell_type != "markdown" or not _BADGE.search(nb.cells[0].source):
        raise ValueError(f"{name!r}: cell 0 must be Markdown holding the Open In Colab badge")
    if nb.cells[1].cell_type != "code":
        raise ValueError(f"{name!r}: cell 1 must be the install cell (a code cell), found {nb.cells[1].cell_type}")
    nb.cells[0].source = _BADGE.sub(lambda _: badge(url, name, ref), nb.cells[0].source)
    nb.cells[1].source = install_cell(url, ref)
    tags = nb.cells[1].metadata.get("tags", [])
    if HIDE_IN_BOOK not in tags:
        nb.cells[1].metadata["tags"] = [*tags, HIDE_IN_BOOK]


def sync_config(text: str, url: str, ref: str = REF) -> str:
    """book/_config.yml's text with ``repository.url`` and ``repository.branch`` set."""
    for key, value in (("url", url), ("branch", ref)):
        text, found = re.subn(_CONFIG_KEY.format(key=key), lambda m, v=value: m.group(1) + v, text, count=1)
        if not found:
            raise ValueError(f"book/_config.yml has no repository.{key} to set")
    return text


def synced(root: str | os.PathLike = ROOT) -> dict[Path, str]:
    """What every file carrying the repository URL should hold: {path: text} for the chapters and the book
    config under ``root``, built from ``root``'s pyproject.toml."""
    root = Path(root)
    url = repository_url(root)
    out = {}
    for path in sorted((root / "notebooks").glob("0*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        sync_notebook(nb, path.name, url)
        out[path] = nbformat.writes(nb) + "\n"  # what nbformat.write puts on disk
    config = root / "book" / "_config.yml"
    out[config] = sync_config(config.read_text(), url)
    return out


def sync_urls(root: str | os.PathLike = ROOT) -> list[Path]:
    """Write the repository URL of ``root``'s pyproject.toml everywhere; returns the files that changed."""
    changed = []
    for path, text in synced(root).items():
        if path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def refresh(path: str) -> None:
    import papermill as pm  # only re-executing needs it

    if os.environ.get("MNIST_PRUNING_SMOKE") != "1":
        raise SystemExit("run with MNIST_PRUNING_SMOKE=1")
    executed = pm.execute_notebook(path, None, progress_bar=False, cwd=os.path.dirname(path) or ".")
    nb = nbformat.read(path, as_version=4)
    for cell, ran in zip(nb.cells, executed.cells, strict=True):
        if cell.cell_type != "code":
            continue
        keep = cell.source.lstrip().startswith("# NBVAL_CHECK_OUTPUT")
        # nbval refuses stored outputs without an execution count ("unrun reference cell has outputs")
        cell.execution_count = ran.execution_count if keep else None
        cell.outputs = [o for o in ran.outputs if o.get("name") != "stderr"] if keep else []
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="chapters to re-execute in smoke mode")
    parser.add_argument("--urls-only", action="store_true", help="only write the repository URL; execute nothing")
    args = parser.parse_args(argv)
    if not args.urls_only and not args.notebooks:
        parser.error("give notebooks to re-execute, or --urls-only")
    for path in sync_urls():
        print("repository URL written into", path.relative_to(ROOT))
    if not args.urls_only:
        for p in args.notebooks:
            refresh(p)
            print("refreshed", p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
