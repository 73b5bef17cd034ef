"""Build the Jupyter Book (1.x) from executed notebooks and the results CSVs, offline, and check the HTML.

Usage::

    python -m mnist_pruning.book --executed runs/executed --results results            # build + check
    python -m mnist_pruning.book --require-all      # the same defaults; every chapter and both CSVs required
    MNIST_PRUNING_SMOKE=1 python -m mnist_pruning.book    # runs/smoke/executed + runs/smoke/results (CI)
    python -m mnist_pruning.book --check-only       # only check book/_build/html

or from Python::

    from mnist_pruning.book import _build
    report = _build(executed_dir="runs/executed", results_dir="results")

Steps: (1) copy ``<executed>/<chapter>.ipynb`` for every chapter of :data:`_CHAPTERS` into ``book/_chapters/``
(notebooks executed by papermill; a copy is refused if a code cell never ran or raised); a chapter with no executed
notebook becomes a stub page saying "not executed in this build", or fails the build with ``require_all``;
(2) render :func:`mnist_pruning.compare.key_findings_markdown` of the CSVs into ``book/_generated/findings.md``,
which ``book/intro.md`` includes, so the introduction never holds hand-typed numbers; (3) run
``jupyter-book build book/ -W -n --keep-going --all`` (every warning fails the build); (4) :func:`_check_html`:
every page exists, chapters show their figures (``<img>`` tags whose files exist), and nothing is loaded from the
network (no external scripts, stylesheets, fonts, images or frames).

``book/_chapters/`` and ``book/_generated/`` are build products (git-ignored), rewritten on every build.
Building needs the ``book`` extra (``pip install -e ".[book]"``): jupyter-book 1.x and sphinx-mathjax-offline.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import nbformat

from .settings import _project_root, display_path, paths

__all__ = [
    "setup",
]

# (notebook stem, title of the stub page shown when the chapter was not executed). Same order as book/_toc.yml.
_CHAPTERS: tuple[tuple[str, str], ...] = (
    ("01_baseline", "01 · Baseline"),
    ("02_prune", "02 · Unstructured pruning"),
    ("03_structured", "03 · Structured pruning"),
    ("04_nm", "04 · N:M pattern pruning"),
    ("05_compare", "05 · Comparison"),
    ("06_frontier", "06 · Schedules and the frontier"),
    ("07_compress", "07 · Weight sharing and entropy coding"),
)
_CHAPTERS_DIR = "_chapters"
_GENERATED_DIR = "_generated"
_FINDINGS = "findings.md"
_HTML_DIR = Path("_build") / "html"
# Notebooks link the public Colab badge image; the book shows a local copy so that no page loads from the web.
_COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
_LOCAL_BADGE = "_assets/colab-badge.svg"
# Cells myst-nb does not render (their outputs are not expected in the HTML).
_HIDDEN_TAGS = {"remove-cell", "remove-output"}


class _BookError(RuntimeError):
    """The book could not be prepared, built or checked; the message says what and where."""


def _default_book_dir() -> Path:
    return _project_root() / "book"


# ---------------------------------------------------------------------------------------------------- prepare


@dataclass
class _ChapterSource:
    """Where a chapter page came from."""

    name: str  # notebook stem, e.g. "05_compare"
    page: Path  # the file written under book/_chapters/
    executed: bool  # False: a stub page
    figures: int  # image outputs the page should show (0 for stubs)


def _image_outputs(nb: nbformat.NotebookNode) -> int:
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or _HIDDEN_TAGS & set(cell.metadata.get("tags", [])):
            continue
        for out in cell.get("outputs", []):
            if any(k.startswith("image/") for k in out.get("data", {})):
                count += 1
    return count


def _check_executed(path: str | os.PathLike) -> nbformat.NotebookNode:
    """Read an executed notebook; BookError if a code cell never ran or raised (the book must not show that)."""
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # nbformat raises several types for unreadable / invalid JSON
        raise _BookError(f"{str(path)!r} is not a readable notebook: {e}") from e
    if nb.metadata.get("papermill", {}).get("exception"):
        raise _BookError(f"{str(path)!r}: papermill recorded an exception while executing it")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.get("execution_count") is None:
            raise _BookError(
                f"{str(path)!r}: code cell {i} was never executed; execute the notebook with papermill"
            )
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            raise _BookError(f"{str(path)!r}: code cell {i} raised an error")
    return nb


def _stub_page(name: str, title: str, executed_dir: Path) -> str:
    return (
        f"# {title}\n\n"
        "```{note}\n"
        f"This chapter was **not executed in this build**: there was no `{name}.ipynb` in "
        f"`{display_path(executed_dir)}`. Its notebook is `notebooks/{name}.ipynb`; execute it with papermill "
        "into that folder and build the book again.\n"
        "```\n"
    )


def _localise_badge(nb: nbformat.NotebookNode, depth: int) -> None:
    """Point the Colab badge image at the book's local copy (the link itself still goes to Colab)."""
    local = "../" * depth + _LOCAL_BADGE
    for cell in nb.cells:
        if cell.cell_type == "markdown" and _COLAB_BADGE_URL in cell.source:
            cell.source = cell.source.replace(_COLAB_BADGE_URL, local)


def _findings_page(results_dir: str | os.PathLike | None) -> str:
    """The Markdown that book/intro.md includes: the key-findings table of the CSVs in ``results_dir``."""
    from . import compare  # pandas only when the book is really built
    from .results import resolve_results_dir

    folder = resolve_results_dir(results_dir)
    df = compare.load_compared(folder)
    sources = []
    for arch in compare.models(df):
        sub = df[df["model"] == arch]
        sources.append(f"`{arch}_pruning_results.csv` ({len(sub)} experiment{'' if len(sub) == 1 else 's'})")
    versions = ", ".join(sorted(set(df["version"]) - {""})) or "unknown"
    torches = ", ".join(sorted(set(df["torch_version"]) - {""})) or "unknown"
    return (
        "<!-- Generated by `python -m mnist_pruning.book`; edits are overwritten on the next build. -->\n\n"
        + compare.key_findings_markdown(df)
        + f"\nSource: {' and '.join(sources)} in `{display_path(folder)}`, written by mnist_pruning {versions} "
        f"with torch {torches}.\n"
    )


def _prepare(
    executed_dir: str | os.PathLike,
    results_dir: str | os.PathLike | None = "",
    book_dir: str | os.PathLike | None = None,
    require_all: bool = False,
) -> list[_ChapterSource]:
    """Fill ``book/_chapters/`` and ``book/_generated/`` (see the module docstring); returns the chapters."""
    book = Path(book_dir) if book_dir else _default_book_dir()
    executed = Path(executed_dir)
    if not (book / "_toc.yml").is_file():
        raise _BookError(f"{str(book)!r} has no _toc.yml; pass the book's source folder")
    missing = [name for name, _ in _CHAPTERS if not (executed / f"{name}.ipynb").is_file()]
    if require_all and missing:
        raise _BookError(f"no executed notebook for {', '.join(missing)} in {str(executed)!r} (--require-all)")
    notebooks = {name: _check_executed(executed / f"{name}.ipynb") for name, _ in _CHAPTERS if name not in missing}

    try:
        findings = _findings_page(results_dir)
    except FileNotFoundError as e:
        if require_all:
            raise _BookError(str(e)) from e
        findings = f"```{{note}}\nNo key findings in this build: {e}.\n```\n"

    chapters_dir = book / _CHAPTERS_DIR
    # Rebuilt from scratch: a stale stub .md next to a fresh .ipynb would make two pages for one TOC entry.
    shutil.rmtree(chapters_dir, ignore_errors=True)
    chapters_dir.mkdir(parents=True)
    out = []
    for name, title in _CHAPTERS:
        if name in notebooks:
            nb = notebooks[name]
            _localise_badge(nb, depth=1)
            page = chapters_dir / f"{name}.ipynb"
            nbformat.write(nb, page)
            out.append(_ChapterSource(name, page, True, _image_outputs(nb)))
        else:
            page = chapters_dir / f"{name}.md"
            page.write_text(_stub_page(name, title, executed))
            out.append(_ChapterSource(name, page, False, 0))
    from .files import (
        _atomic_write,  # imports torch: not at module level, Sphinx loads this module as an extension
    )

    with _atomic_write(book / _GENERATED_DIR / _FINDINGS) as tmp:
        tmp.write_text(findings)
    return out


# ------------------------------------------------------------------------------------------------------ build


def _jupyter_book() -> str:
    exe = Path(sys.executable).parent / "jupyter-book"
    found = str(exe) if exe.exists() else shutil.which("jupyter-book")
    if not found:
        raise _BookError('jupyter-book is not installed; pip install -e ".[book]" (jupyter-book>=1,<2)')
    return found


def _offline_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment in which every HTTP(S) request fails at once: all proxies point at a closed
    local port. The build needs no network, and this makes sure of it even on a machine (CI) that has one."""
    env = dict(os.environ if base is None else base)
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[key] = dead
    env["no_proxy"] = env["NO_PROXY"] = ""
    return env


def _run_jupyter_book(
    book_dir: str | os.PathLike | None = None, quiet: bool = False, offline: bool = True
) -> None:
    """``jupyter-book build <book> -W -n --keep-going --all``: warnings are errors, every page is rebuilt; with
    ``offline`` (default) under :func:`_offline_env`."""
    book = Path(book_dir) if book_dir else _default_book_dir()
    cmd = [_jupyter_book(), "build", str(book), "-W", "-n", "--keep-going", "--all"]
    env = _offline_env() if offline else None
    result = subprocess.run(cmd, capture_output=quiet, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join(((result.stdout or "") + (result.stderr or "")).splitlines()[-40:]) if quiet else ""
        raise _BookError(f"jupyter-book build failed (exit {result.returncode})\n{tail}".rstrip())


# ------------------------------------------------------------------------------------------------------ check

_EXTERNAL = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
# Attributes through which a page makes the browser fetch something (an <a href> is only followed on a click).
_FETCHING = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "input": ("src",),
}
# <link rel=...> values that only name a URL (no fetch).
_LINK_NO_FETCH = {"canonical", "alternate", "author", "license", "help", "next", "prev", "index", "search", "me"}
# An absolute URL of a script, stylesheet or font inside inline JavaScript: loaded by code rather than by a tag.
_CODE_URL = re.compile(r"""(?:https?:)?//[\w.-]+/[^'"\s]*\.(?:m?js|css|woff2?|ttf|otf)\b""", re.IGNORECASE)
_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.IGNORECASE)


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.external: list[str] = []
        self.images: list[str] = []
        self._in = ""  # inside <style> or <script>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
        for attr in _FETCHING.get(tag, ()):
            for url in a.get(attr, "").split(","):
                if url.strip() and _EXTERNAL.match(url):
                    self.external.append(f"<{tag} {attr}={url.strip().split()[0]}>")
        if tag == "link" and _EXTERNAL.match(a.get("href", "")):
            rels = set(a.get("rel", "").lower().split())
            if not rels or not rels <= _LINK_NO_FETCH:
                self.external.append(f"<link rel={a.get('rel', '')} href={a['href']}>")
        if a.get("style"):
            self.external += [f"<{tag} style=url({u})>" for u in _CSS_URL.findall(a["style"])]
        self._in = tag if tag in ("style", "script") else ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._in = ""

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.external += [f"<style> url({u})" for u in _CSS_URL.findall(data)]
        elif self._in == "script":
            self.external += [f"<script> ... {u}" for u in _CODE_URL.findall(data)]


@dataclass
class _HtmlReport:
    """What :func:`_check_html` found; ``problems`` empty means the check passed."""

    pages: dict[str, int] = field(default_factory=dict)  # page (relative to html/) -> figures shown
    external: list[str] = field(default_factory=list)  # "file: resource" loaded from the network
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_figure(src: str) -> bool:
    return "colab-badge" not in src


def _check_html(
    book_dir: str | os.PathLike | None = None, chapters: Sequence[_ChapterSource] | None = None
) -> _HtmlReport:
    """Check the built HTML: the intro and every chapter page exist; a chapter shows at least as many figures as
    its notebook has image outputs (at least one if it has any), and every local ``<img>`` file exists; no page
    or stylesheet loads anything from the network.

    Without ``chapters`` (e.g. ``--check-only``), the expected figures are counted from ``book/_chapters/``.
    """
    book = Path(book_dir) if book_dir else _default_book_dir()
    html = book / _HTML_DIR
    report = _HtmlReport()
    if chapters is None:
        chapters = []
        for name, _ in _CHAPTERS:
            nb_path = book / _CHAPTERS_DIR / f"{name}.ipynb"
            if nb_path.exists():
                nb = nbformat.read(nb_path, as_version=4)
                chapters.append(_ChapterSource(name, nb_path, True, _image_outputs(nb)))
            else:
                chapters.append(_ChapterSource(name, book / _CHAPTERS_DIR / f"{name}.md", False, 0))
    if not html.is_dir():
        report.problems.append(f"no built HTML in {str(html)!r}")
        return report
    expected = {"intro.html": 0} | {f"{_CHAPTERS_DIR}/{c.name}.html": c.figures for c in chapters}
    for page, figures in expected.items():
        path = html / page
        if not path.is_file():
            report.problems.append(f"{page}: missing")
            continue
        scan = _Scan()
        scan.feed(path.read_text(encoding="utf-8", errors="replace"))
        local = [s for s in scan.images if not _EXTERNAL.match(s) and not s.startswith("data:")]
        broken = [s for s in local if not (path.parent / s.split("#")[0].split("?")[0]).is_file()]
        report.problems += [f"{page}: <img src={s}> has no file" for s in broken]
        shown = sum(1 for s in scan.images if _is_figure(s)) - sum(1 for s in broken if _is_figure(s))
        report.pages[page] = shown
        if figures and shown < figures:
            report.problems.append(f"{page}: shows {shown} figures, its notebook has {figures} image outputs")
    for path in sorted(html.rglob("*.html")):
        scan = _Scan()
        scan.feed(path.read_text(encoding="utf-8", errors="replace"))
        report.external += [f"{path.relative_to(html)}: {e}" for e in scan.external]
    for path in sorted(html.rglob("*.css")):
        text = path.read_text(encoding="utf-8", errors="replace")
        report.external += [f"{path.relative_to(html)}: url({u})" for u in _CSS_URL.findall(text)]
    report.problems += [f"loads from the network: {e}" for e in report.external]
    return report


# ------------------------------------------------------------------------------------------ sphinx extension


def _is_thebe_asset(asset: object) -> bool:
    name = str(getattr(asset, "filename", "") or "")
    body = str(getattr(asset, "attributes", {}).get("body", ""))
    return "sphinx-thebe" in name or "THEBE_JS_URL" in body


def _drop_thebe_assets(app: object, pagename: str, templatename: str, context: dict, doctree: object) -> None:
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if not _is_thebe_asset(asset)]


def _default_colour_mode(app: object, config: object) -> None:
    """Give the theme a default light / dark mode: with none, its script logs a console error on a reader's
    first visit ("Got invalid theme mode"), which the browser test (tests/test_browser.py) counts as a failure."""
    config.html_context.setdefault("default_mode", "light")  # type: ignore[attr-defined]  (pydata-sphinx-theme)


def setup(app: object) -> dict:
    """Sphinx extension hook (book/_config.yml lists ``mnist_pruning.book`` in ``extra_extensions``).

    Jupyter Book 1 always loads sphinx-thebe, which writes a CDN URL for the Thebe library into every page
    (fetched only when a Thebe launch button is pressed, and those are off). Dropping its assets leaves pages
    that name no network resource at all. It also sets the theme's default colour mode.
    """
    app.connect("html-page-context", _drop_thebe_assets)  # type: ignore[attr-defined]
    app.connect("config-inited", _default_colour_mode)  # type: ignore[attr-defined]
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ---------------------------------------------------------------------------------------------------- entry


def _build(
    executed_dir: str | os.PathLike,
    results_dir: str | os.PathLike | None = "",
    book_dir: str | os.PathLike | None = None,
    require_all: bool = False,
    quiet: bool = False,
) -> _HtmlReport:
    """Prepare, build and check the book; BookError when any step fails (the report's problems in the message)."""
    chapters = _prepare(executed_dir, results_dir, book_dir, require_all)
    _run_jupyter_book(book_dir, quiet=quiet)
    report = _check_html(book_dir, chapters)
    if not report.ok:
        raise _BookError("the built book failed its check:\n  " + "\n  ".join(report.problems))
    return report


def _main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the module docstring (``python -m mnist_pruning.book --help``)."""
    parser = argparse.ArgumentParser(prog="python -m mnist_pruning.book", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--executed",
        default="",
        help='folder of executed <chapter>.ipynb; "" = runs/executed (runs/smoke/executed in smoke mode)',
    )
    parser.add_argument(
        "--results",
        default="",
        help='folder of the results CSVs ("" = $MNIST_PRUNING_RESULTS or '
        "results/, runs/smoke/results with MNIST_PRUNING_SMOKE=1)",
    )
    parser.add_argument("--book", default=None, help="the book's source folder (default: <project>/book)")
    parser.add_argument("--require-all", action="store_true", help="fail unless every chapter and both CSVs exist")
    parser.add_argument("--prepare-only", action="store_true", help="copy chapters and write findings; no build")
    parser.add_argument("--check-only", action="store_true", help="only check an existing book/_build/html")
    args = parser.parse_args(argv)
    book = Path(args.book) if args.book else _default_book_dir()
    try:
        if args.check_only:
            report = _check_html(book)
            if not report.ok:
                raise _BookError("the built book failed its check:\n  " + "\n  ".join(report.problems))
        else:
            executed = Path(args.executed) if args.executed else paths().runs / "executed"
            chapters = _prepare(executed, args.results, book, args.require_all)
            for c in chapters:
                print(f"{c.name}: {'executed notebook' if c.executed else 'STUB (not executed in this build)'}")
            if args.prepare_only:
                return 0
            _run_jupyter_book(book)
            report = _check_html(book, chapters)
            if not report.ok:
                raise _BookError("the built book failed its check:\n  " + "\n  ".join(report.problems))
    except _BookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for page, figures in report.pages.items():
        print(f"ok {page}: {figures} figures")
    print(f"book: {book / _HTML_DIR / 'intro.html'} (no external resources)")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
