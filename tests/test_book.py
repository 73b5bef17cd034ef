"""The book: chapter list, preparation (copies, stubs, generated findings), the HTML check, and one real offline
build (needs the ``book`` extra; skipped without jupyter-book).

The build test executes notebooks/05_compare.ipynb with papermill on the fixture CSVs and uses small executed
stand-in notebooks for the other chapters, leaving 06 missing so that its stub page is built too.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from mnist_pruning import book

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BADGE = (
    f"[![Open In Colab]({book._COLAB_BADGE_URL})](https://colab.research.google.com/github/x/y/blob/main/n.ipynb)"
)


def _png() -> str:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def executed_notebook(title: str, figures: int = 1, executed: bool = True, error: bool = False):
    """A small notebook shaped like a papermill output: a title with the Colab badge, code cells with outputs."""
    cells = [new_markdown_cell(f"# {title}\n\n{BADGE}\n\nWhat this chapter answers.")]
    for i in range(figures):
        cell = new_code_cell("plt.show()", execution_count=i + 1 if executed else None)
        cell.outputs = [new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})]
        cells.append(cell)
    last = new_code_cell("print('done')", execution_count=figures + 1 if executed else None)
    last.outputs = [new_output("stream", name="stdout", text="done\n")]
    if error:
        last.outputs.append(new_output("error", ename="ValueError", evalue="boom", traceback=[]))
    cells.append(last)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def book_copy(tmp_path: Path) -> Path:
    """The book's sources (not its build products) in a temporary folder."""
    out = tmp_path / "book"
    shutil.copytree(BOOK, out, ignore=shutil.ignore_patterns("_build", "_chapters", "_generated"))
    return out


# -------------------------------------------------------------------------------------------------- structure


def test_toc_lists_the_chapters_in_order():
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    assert toc["format"] == "jb-book" and toc["root"] == "intro"
    assert [c["file"] for c in toc["chapters"]] == [f"{book._CHAPTERS_DIR}/{name}" for name, _ in book._CHAPTERS]
    assert [name for name, _ in book._CHAPTERS][4] == "05_compare"


def test_config_is_offline_and_does_not_execute():
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["launch_buttons"]["thebe"] is False
    assert not any(config["launch_buttons"].get(k) for k in ("binderhub_url", "jupyterhub_url", "colab_url"))
    assert {"sphinx-mathjax-offline", "mnist_pruning.book"} <= set(config["sphinx"]["extra_extensions"])
    assert config["sphinx"]["config"]["nb_ipywidgets_js"] == {}
    assert config["only_build_toc_files"] is True
    assert "_generated" in config["exclude_patterns"]
    assert "{include} _generated/findings.md" in (BOOK / "intro.md").read_text()
    assert (BOOK / book._LOCAL_BADGE).is_file()


# ---------------------------------------------------------------------------------------------------- prepare


def test_check_executed_refuses_unexecuted_and_failed(tmp_path):
    ok = tmp_path / "ok.ipynb"
    nbformat.write(executed_notebook("ok"), ok)
    assert book._check_executed(ok).cells
    unexecuted = tmp_path / "raw.ipynb"
    nbformat.write(executed_notebook("raw", executed=False), unexecuted)
    with pytest.raises(book._BookError, match="never executed"):
        book._check_executed(unexecuted)
    failed = tmp_path / "failed.ipynb"
    nbformat.write(executed_notebook("failed", error=True), failed)
    with pytest.raises(book._BookError, match="raised an error"):
        book._check_executed(failed)
    (tmp_path / "junk.ipynb").write_text("{not json")
    with pytest.raises(book._BookError, match="not a readable notebook"):
        book._check_executed(tmp_path / "junk.ipynb")


def test_prepare_copies_stubs_and_generates_findings(tmp_path, fixture_results):
    src = book_copy(tmp_path)
    executed = tmp_path / "executed"
    executed.mkdir()
    nbformat.write(executed_notebook("01 · Baseline", figures=2), executed / "01_baseline.ipynb")
    # a stale stub from an earlier build must not survive next to the fresh notebook
    (src / book._CHAPTERS_DIR).mkdir()
    (src / book._CHAPTERS_DIR / "01_baseline.md").write_text("# old stub\n")
    chapters = book._prepare(executed, fixture_results, src)

    assert [c.name for c in chapters] == [name for name, _ in book._CHAPTERS]
    assert [c.executed for c in chapters] == [True, False, False, False, False, False, False]
    assert chapters[0].figures == 2
    pages = sorted(p.name for p in (src / book._CHAPTERS_DIR).iterdir())
    assert pages == ["01_baseline.ipynb", "02_prune.md", "03_structured.md", "04_nm.md", "05_compare.md",
                     "06_frontier.md", "07_compress.md"]  # fmt: skip
    stub = (src / book._CHAPTERS_DIR / "06_frontier.md").read_text()
    assert stub.startswith("# 06 · Schedules and the frontier") and "not executed in this build" in stub
    copied = nbformat.read(src / book._CHAPTERS_DIR / "01_baseline.ipynb", as_version=4)
    assert book._COLAB_BADGE_URL not in copied.cells[0].source  # the badge image is the local copy
    assert f"../{book._LOCAL_BADGE}" in copied.cells[0].source
    findings = (src / book._GENERATED_DIR / book._FINDINGS).read_text()
    assert "**LeNet-300-100 (mlp)**: dense baseline 98.12 %" in findings
    assert "**LeNet-5-Caffe (cnn)**: dense baseline 99.15 %" in findings
    assert "`mlp_pruning_results.csv` (14 experiments)" in findings


def test_prepare_require_all(tmp_path, fixture_results):
    src = book_copy(tmp_path)
    executed = tmp_path / "executed"
    executed.mkdir()
    with pytest.raises(book._BookError, match="--require-all"):
        book._prepare(executed, fixture_results, src, require_all=True)
    for name, title in book._CHAPTERS:
        nbformat.write(executed_notebook(title), executed / f"{name}.ipynb")
    with pytest.raises(book._BookError, match="no results CSV"):
        book._prepare(executed, tmp_path / "empty", src, require_all=True)
    # without require_all, missing CSVs give a note instead of numbers
    book._prepare(executed, tmp_path / "empty", src)
    assert "No key findings in this build" in (src / book._GENERATED_DIR / book._FINDINGS).read_text()
    assert book._main(["--executed", str(tmp_path / "none"), "--book", str(src), "--require-all"]) == 1


# ------------------------------------------------------------------------------------------------ HTML check


def fake_site(tmp_path: Path, chapter_html: str, intro_head: str = "") -> tuple[Path, list[book._ChapterSource]]:
    src = tmp_path / "site"
    html = src / book._HTML_DIR
    (html / book._CHAPTERS_DIR).mkdir(parents=True)
    (html / "_images").mkdir()
    (html / "_images" / "fig.png").write_bytes(b"png")
    (html / "intro.html").write_text(f"<html><head>{intro_head}</head><body>intro</body></html>")
    chapters = []
    for name, _ in book._CHAPTERS:
        (html / book._CHAPTERS_DIR / f"{name}.html").write_text(chapter_html)
        chapters.append(book._ChapterSource(name, Path(f"{name}.ipynb"), True, 1))
    return src, chapters


def test_check_html_passes_a_clean_site(tmp_path):
    src, chapters = fake_site(tmp_path, '<html><body><img src="../_images/fig.png"></body></html>')
    report = book._check_html(src, chapters)
    assert report.ok, report.problems
    assert report.pages[f"{book._CHAPTERS_DIR}/05_compare.html"] == 1


@pytest.mark.parametrize(
    "head, expected",
    [
        ('<script src="https://cdn.example.org/x.js"></script>', "<script src="),
        ('<link rel="stylesheet" href="//cdn.example.org/x.css">', "<link rel=stylesheet"),
        ('<link rel="preload" as="font" href="https://fonts.example.org/f.woff2">', "<link rel=preload"),
        ('<script>const URL = "https://cdn.example.org/lib/index.js"</script>', "<script> ..."),
        ("<style>@import 'https://fonts.example.org/css';</style>", "<style>"),
        ('<img src="https://badges.example.org/b.svg">', "<img src="),
        ('<iframe src="https://example.org/embed"></iframe>', "<iframe src="),
    ],
)
def test_check_html_flags_network_resources(tmp_path, head, expected):
    src, chapters = fake_site(tmp_path, '<img src="../_images/fig.png">', intro_head=head)
    report = book._check_html(src, chapters)
    assert not report.ok
    assert any(expected in e for e in report.external), report.external


def test_check_html_ignores_plain_links(tmp_path):
    head = '<a href="https://colab.research.google.com/x">Colab</a><link rel="canonical" href="https://x.org/">'
    src, chapters = fake_site(tmp_path, '<img src="../_images/fig.png">', intro_head=head)
    assert book._check_html(src, chapters).ok


def test_check_html_flags_missing_pages_and_figures(tmp_path):
    src, chapters = fake_site(tmp_path, '<img src="../_images/gone.png"><img src="../_images/colab-badge.svg">')
    (src / book._HTML_DIR / "intro.html").unlink()
    problems = book._check_html(src, chapters).problems
    assert "intro.html: missing" in problems
    assert any("gone.png> has no file" in p for p in problems)
    assert any("shows 0 figures, its notebook has 1 image outputs" in p for p in problems)


# ------------------------------------------------------------------------------------------------------ build


def test_offline_env_blocks_http():
    env = book._offline_env({"PATH": "/bin", "no_proxy": "*"})
    assert env["https_proxy"] == env["HTTP_PROXY"] == "http://127.0.0.1:9" and env["no_proxy"] == ""
    assert env["PATH"] == "/bin"


def test_book_builds_offline_with_executed_notebooks_and_stubs(tmp_path, fixture_results):
    pytest.importorskip("jupyter_book", reason="the book extra (jupyter-book 1.x) is not installed")
    src = book_copy(tmp_path)
    results = fixture_results
    executed = tmp_path / "executed"
    executed.mkdir()
    for name, title in book._CHAPTERS[:4]:
        nbformat.write(executed_notebook(title), executed / f"{name}.ipynb")
    # chapter 5 is the real notebook, executed by papermill on the fixture CSVs (figures go to tmp_path/figures)
    subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "05_compare.ipynb"),
         str(executed / "05_compare.ipynb"), "-p", "results_dir", str(results),
         "-p", "figures_dir", str(tmp_path / "figures"), "--log-level", "ERROR"],
        check=True, cwd=ROOT, env=book._offline_env(), capture_output=True,
    )  # fmt: skip

    report = book._build(executed, results, src, quiet=True)  # -W: any Sphinx warning fails here

    html = src / book._HTML_DIR
    assert report.ok and not report.external
    assert report.pages[f"{book._CHAPTERS_DIR}/05_compare.html"] >= 8  # 4 figures x 2 models
    assert all(report.pages[f"{book._CHAPTERS_DIR}/{n}.html"] >= 1 for n, _ in book._CHAPTERS[:4])
    stub = (html / book._CHAPTERS_DIR / "06_frontier.html").read_text()
    assert "not executed in this build" in stub
    intro = (html / "intro.html").read_text()
    assert "dense baseline 98.12 %" in intro and "<table" in intro  # findings rendered from the fixture
    assert 'src="_static/mathjax/tex-chtml.js"' in intro  # the formula's MathJax is served locally
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    compare_page = (html / book._CHAPTERS_DIR / "05_compare.html").read_text()
    assert compare_page.count("<table") >= 3  # overview, smallest-within, key findings
    assert "colab-badge.svg" in compare_page and book._COLAB_BADGE_URL not in compare_page
    assert "MNIST_PRUNING_REPO" not in compare_page  # the install cell, tagged remove-cell, is not shown
    assert len(list((tmp_path / "figures").glob("*.svg"))) == 8


def test_sphinx_hook_drops_thebe_assets_only():
    class Asset:
        def __init__(self, filename: str, body: str = "") -> None:
            self.filename, self.attributes = filename, {"body": body} if body else {}

    context = {
        "script_files": [
            Asset("_static/doctools.js"),
            Asset("", 'const THEBE_JS_URL = "x"'),
            Asset("sphinx-thebe.js"),
        ],
        "css_files": [Asset("_static/theme.css"), Asset("_static/sphinx-thebe.css")],
    }
    book._drop_thebe_assets(None, "intro", "page.html", context, None)
    assert [a.filename for a in context["script_files"]] == ["_static/doctools.js"]
    assert [a.filename for a in context["css_files"]] == ["_static/theme.css"]
