"""The built book in a real browser (headless Chromium driven by Selenium), opened as a reader opens it.

Every page of book/_build/html (reused when newer than its inputs, else built from the committed run into a
temporary copy) is served over HTTP on localhost and checked: it loads, every image has a natural width, the
console logs no error, every internal link reaches a file; the sidebar reaches every chapter and the offline
search finds a chapter by a word in it. A full-page screenshot of each page goes to runs/browser/<page>.png for
a person to look at. Failures name the page.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``) and selenium
(the ``test`` extra); without them the tests skip and say what to install.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from mnist_pruning import book
from mnist_pruning.settings import _project_root

INSTALL = "apt-get install chromium chromium-driver (Debian) and pip install selenium (the test extra)"
webdriver = pytest.importorskip("selenium.webdriver", reason=f"selenium is not installed: {INSTALL}")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason=f"no chromium and chromedriver on PATH: {INSTALL}"
)

ROOT = _project_root()
SCREENSHOTS = ROOT / "runs" / "browser"
# What a page's HTML depends on: a book older than any of these is rebuilt.
INPUTS = ("results/notebooks", "results/mlp_pruning_results.csv", "results/cnn_pruning_results.csv", "book")
INPUTS += ("mnist_pruning/book.py", "mnist_pruning/compare.py")
SEARCH_WORD, SEARCH_CHAPTER = "lottery", "06_frontier"  # a word of chapter 06 (lottery tickets)
_PAGE_SECONDS = 30


def _newest_input() -> float:
    files = [
        p for name in INPUTS for p in ([ROOT / name] if (ROOT / name).is_file() else (ROOT / name).rglob("*"))
    ]
    return max(p.stat().st_mtime for p in files if p.is_file() and "_build" not in p.parts)


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    """book/_build/html when newer than its inputs, else the committed run's book built in a temporary copy."""
    built = ROOT / "book" / "_build" / "html"
    if (built / "intro.html").is_file() and (built / "intro.html").stat().st_mtime > _newest_input():
        return built
    if not (ROOT / "results" / "notebooks").is_dir():
        pytest.skip("no results/notebooks (the committed run's executed chapters) to build the book from")
    try:
        book._jupyter_book()
    except book._BookError as e:
        pytest.skip(str(e))
    src = tmp_path_factory.mktemp("book") / "book"
    shutil.copytree(ROOT / "book", src, ignore=shutil.ignore_patterns("_build", "_chapters", "_generated"))
    book._build(ROOT / "results" / "notebooks", ROOT / "results", src, require_all=True, quiet=True)
    return src / "_build" / "html"


@contextlib.contextmanager
def _served(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on a free localhost port, as a web host would serve the book; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the test reports problems itself
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)  # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(_PAGE_SECONDS)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(html) -> Iterator[str]:
    with _served(html) as url:
        yield url


def _pages(html: Path) -> list[str]:
    """Every page a reader can open (the theme's own HTML fragments under _static excluded), relative paths."""
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html") if "_static" not in p.parts)


def _page_name(page: str) -> str:
    return page.removesuffix(".html").replace("/", "_")


def page_problems(driver, base: str, folder: Path, page: str, screenshot: Path | None = None) -> list[str]:
    """What is wrong with ``page`` (relative to ``base``, served from ``folder``) as Chromium shows it: an error
    response, images that did not load, console errors, internal links to missing files. Each problem names the
    page. With ``screenshot``, saves a full-page PNG there."""
    driver.get_log("browser")  # drop what earlier pages logged
    try:
        driver.get(base + page)
        WebDriverWait(driver, _PAGE_SECONDS).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
    except TimeoutException:
        return [f"{page}: did not load within {_PAGE_SECONDS} s"]
    if not (folder / page).is_file() or driver.title.startswith("Error response"):
        return [f"{page}: did not load ({driver.title!r})"]
    driver.execute_script("for (const img of document.images) img.loading = 'eager';")
    try:
        WebDriverWait(driver, _PAGE_SECONDS).until(
            lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)")
        )
    except TimeoutException:
        pass  # reported below as images with no natural width
    problems = [
        f"{page}: image {src} did not load (naturalWidth 0)"
        for src in driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )
    ]
    problems += [
        f"{page}: console error: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"
    ]
    for href in driver.execute_script("return Array.from(document.links).map(a => a.href)"):
        if href.startswith(base):
            target = unquote(urlsplit(href).path).removeprefix(urlsplit(base).path) or "index.html"
            if not (folder / target).exists():
                problems.append(f"{page}: broken link to {target}")
    if screenshot is not None:
        _full_page_screenshot(driver, screenshot)
    return problems


def _full_page_screenshot(driver, path: Path) -> None:
    """The whole page as one PNG (Chrome DevTools' captureBeyondViewport), not only the window."""
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def test_every_page_loads_with_its_images_and_no_console_error(browser, site, html):
    problems = []
    for page in _pages(html):
        problems += page_problems(browser, site, html, page, SCREENSHOTS / f"{_page_name(page)}.png")
    assert not problems, "\n".join(problems)
    assert {f"{_page_name(f'_chapters/{name}.html')}.png" for name, _ in book._CHAPTERS} <= {
        p.name for p in SCREENSHOTS.iterdir()
    }


def test_the_sidebar_reaches_every_chapter(browser, site):
    browser.get(site + "intro.html")
    links = browser.find_elements(By.CSS_SELECTOR, "nav.bd-docs-nav a.reference.internal")
    hrefs = {unquote(urlsplit(a.get_attribute("href")).path) for a in links}
    missing = [name for name, _ in book._CHAPTERS if f"/_chapters/{name}.html" not in hrefs]
    assert not missing, f"intro.html: the sidebar has no link to {missing}"
    for href in sorted(hrefs):
        browser.get(site + href.lstrip("/"))
        assert browser.find_elements(By.TAG_NAME, "h1"), f"{href}: the sidebar link shows no page heading"


def test_the_offline_search_finds_a_chapter_by_a_word_in_it(browser, site):
    browser.get(f"{site}search.html?q={SEARCH_WORD}")
    try:
        WebDriverWait(browser, _PAGE_SECONDS).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a")
        )
    except TimeoutException:
        pytest.fail(f"search.html: no result for {SEARCH_WORD!r} within {_PAGE_SECONDS} s")
    found = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#search-results li a")]
    assert any(f"{SEARCH_CHAPTER}.html" in href for href in found), f"search.html: {SEARCH_WORD!r} gave {found}"


def test_a_missing_image_and_a_broken_link_fail_with_the_page_name(browser, tmp_path):
    (tmp_path / "chapter.html").write_text(
        '<html><head><title>chapter</title></head><body><h1>chapter</h1><img src="gone.png">'
        '<a href="nowhere.html">next</a></body></html>'
    )
    with _served(tmp_path) as url:
        problems = page_problems(browser, url, tmp_path, "chapter.html")
        missing_page = page_problems(browser, url, tmp_path, "absent.html")
    assert any(p.startswith("chapter.html: image") and "gone.png" in p for p in problems), problems
    assert "chapter.html: broken link to nowhere.html" in problems
    assert missing_page and missing_page[0].startswith("absent.html: did not load"), missing_page
