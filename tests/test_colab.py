"""Colab: one repository URL (pyproject.toml) in every badge, install cell and the book config, and the install
cell in a simulated Colab session.

The simulation (marked ``colab``, ~30 s): a fresh virtual environment without mnist_pruning, a bare clone of this
working tree standing in for GitHub, and Jupyter kernels started by papermill from that environment.

- Colab is what the install cell detects: a ``google.colab`` package. A stub one is put on the kernel's
  PYTHONPATH (through its kernelspec, so only that kernel sees it).
- Nothing is downloaded: the fresh environment sees the project .venv's packages (torch ...) through symlinks
  listed in a .pth file, all except mnist_pruning itself (its files, its metadata and its editable-install hook),
  and pip runs with ``PIP_NO_INDEX`` (any download fails) and ``PIP_NO_DEPS`` (the dependencies are there).
- "Restart session" is a second kernel, started in the same start folder (Colab's ``/content``) after the first
  one installed the package; it runs a whole chapter (05, smoke mode) from there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

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
    assert f"[![Open In Colab]({book._COLAB_BADGE_URL})]({link})" in first


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


# ---------------------------------------------------------------------------------- a simulated Colab session


def _snapshot_remote(tmp: Path) -> Path:
    """A bare repository whose main branch holds this working tree (tracked and untracked, not ignored, files),
    so that uncommitted changes are tested too."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    src = tmp / "snapshot"
    for name in filter(None, listed):
        if (ROOT / name).is_file():  # skips files deleted but not yet committed
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {**os.environ, **{f"GIT_{who}_{key}": value for who in ("AUTHOR", "COMMITTER")
                            for key, value in (("NAME", "test"), ("EMAIL", "test@localhost"))}}  # fmt: skip
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(["git", *cmd], cwd=src, env=env, check=True, capture_output=True)
    remote = tmp / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(remote)], check=True, capture_output=True)
    return remote


def _fresh_venv(tmp: Path) -> Path:
    """A new virtual environment that sees this environment's packages, except mnist_pruning."""
    venv = tmp / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    shared = tmp / "shared-site-packages"
    shared.mkdir()
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(site).iterdir():
            # .pth files would only run from a site folder, and the editable-install hook must not run at all
            if entry.name.startswith(("mnist_pruning", "__editable__")) or entry.suffix == ".pth":
                continue
            if not (shared / entry.name).exists():
                (shared / entry.name).symlink_to(entry)
    fresh_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(fresh_site) / "project-packages.pth").write_text(f"{shared}\n")
    return python


def _kernelspec(jupyter: Path, name: str, python: Path, colab: bool) -> None:
    env = {}
    if colab:
        stub = jupyter.parent / "colab-stub" / "google" / "colab"
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "__init__.py").write_text('"""Stands in for Colab\'s google.colab."""\n')
        env["PYTHONPATH"] = str(stub.parent.parent)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name,
        "language": "python",
        "env": env,
    }
    (jupyter / "kernels" / name).mkdir(parents=True)
    (jupyter / "kernels" / name / "kernel.json").write_text(json.dumps(spec))


class Session:
    """papermill runs in kernels of the fresh environment, all started in the same folder (Colab's /content)."""

    def __init__(self, tmp: Path, remote: Path, python: Path) -> None:
        self.tmp, self.remote, self.python = tmp, remote, python
        self.start = tmp / "content"
        self.start.mkdir()
        self.clone = self.start / "mnist-pruning"
        self.jupyter = tmp / "jupyter"
        self.runs = 0
        _kernelspec(self.jupyter, "colab-sim", python, colab=True)
        _kernelspec(self.jupyter, "not-colab-sim", python, colab=False)

    def env(self, **overrides: str) -> dict[str, str]:
        env = book._offline_env()  # nothing may come from the network
        env.pop("PYTHONPATH", None)  # the package under test must come from the clone, not from this checkout
        env.update(
            JUPYTER_PATH=str(self.jupyter),
            MNIST_PRUNING_REPO=self.remote.as_uri(),  # file://, so that git clones it like a remote (shallow)
            MNIST_PRUNING_CLONE=str(self.clone),
            PIP_NO_INDEX="1",
            PIP_NO_DEPS="1",
            # pip's inverted spelling: "0" turns build isolation off, so setuptools comes from the environment
            # instead of a download
            PIP_NO_BUILD_ISOLATION="0",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            OMP_NUM_THREADS="1",
        )
        env.update(overrides)
        return env

    def run(self, notebook: Path, kernel: str = "colab-sim", params: tuple[str, ...] = (), **env: str):
        """One kernel: papermill executes ``notebook`` in it; returns (returncode, executed notebook, stderr)."""
        self.runs += 1
        out = self.tmp / f"out-{self.runs}-{notebook.stem}.ipynb"
        cmd = [sys.executable, "-m", "papermill", str(notebook), str(out), "-k", kernel, "--cwd", str(self.start),
               "--no-progress-bar", *params]  # fmt: skip
        proc = subprocess.run(cmd, env=self.env(**env), capture_output=True, text=True, timeout=300)
        return proc.returncode, nbformat.read(out, as_version=4), proc.stderr


def _install_then(tmp: Path, code: str) -> Path:
    """Chapter 05's badge and install cells, then ``code``: what a reader runs first."""
    nb = nbformat.read(ROOT / "notebooks" / "05_compare.ipynb", as_version=4)
    nb.cells = [*nb.cells[:2], new_code_cell(code)]
    path = tmp / f"install-{len(list(tmp.glob('install-*')))}.ipynb"
    nbformat.write(nb, path)
    return path


def _stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    tmp = tmp_path_factory.mktemp("colab")
    session = Session(tmp, _snapshot_remote(tmp), _fresh_venv(tmp))
    probe = subprocess.run(
        [session.python, "-c", "import mnist_pruning"], cwd=session.start, env=session.env(), capture_output=True
    )
    assert probe.returncode != 0, "the fresh environment must not see mnist_pruning before the install cell"
    return session


@pytest.mark.colab
def test_install_cell_survives_a_restart_and_a_chapter_runs(colab):
    where = "import os, mnist_pruning\nprint(os.getcwd())\nprint(mnist_pruning.__file__)"

    # first kernel: the reader runs the install cell, then uses the package in the same kernel
    rc, nb, err = colab.run(_install_then(colab.tmp, where))
    assert rc == 0, err[-3000:]
    assert _stdout(nb).split() == [str(colab.clone), str(colab.clone / "mnist_pruning" / "__init__.py")]

    # "Restart session": a new kernel in /content, the clone and the installed package still there
    rc, nb, err = colab.run(ROOT / "notebooks" / "05_compare.ipynb", params=("-p", "results_dir", "results"),
                            MNIST_PRUNING_SMOKE="1")  # fmt: skip
    assert rc == 0, err[-3000:]
    assert "experiments read from results\n" in _stdout(nb)  # the clone's committed CSVs, shown from its root
    assert len(list((colab.clone / "runs" / "smoke" / "results").glob("*.svg"))) == 8
    assert [p.name for p in colab.start.iterdir()] == ["mnist-pruning"]  # nothing written into /content itself


@pytest.mark.colab
@pytest.mark.parametrize(
    ("variable", "value"), [("MNIST_PRUNING_REPO", "missing.git"), ("MNIST_PRUNING_REF", "no-such-branch")]
)
def test_unreachable_repository_names_the_variable_and_leaves_no_clone(colab, tmp_path, variable, value):
    clone = tmp_path / "clone"
    bad = (tmp_path / value).as_uri() if variable == "MNIST_PRUNING_REPO" else value
    notebook = _install_then(tmp_path, "print('after')")
    rc, nb, _ = colab.run(notebook, MNIST_PRUNING_CLONE=str(clone), **{variable: bad})
    assert rc != 0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "RuntimeError"
    assert repr(bad) in errors[0].evalue and variable in errors[0].evalue
    assert list(tmp_path.glob("clone*")) == []  # neither the clone nor a partial one


@pytest.mark.colab
def test_install_cell_does_nothing_outside_colab(colab, tmp_path):
    notebook = _install_then(tmp_path, "import os\nprint(os.getcwd())")
    rc, nb, err = colab.run(notebook, kernel="not-colab-sim", MNIST_PRUNING_CLONE=str(tmp_path / "c"))
    assert rc == 0, err[-3000:]
    assert _stdout(nb).split() == [str(colab.start)]
    assert not (tmp_path / "c").exists()
