"""The built book as a student meets it: every chapter driven in headless Chromium.

The site is served from ``_build/html`` on 127.0.0.1 and opened in Debian's ``chromium``
(Playwright cannot download a browser here). Every request to another host is blocked and
counted as a failure: the book must work with no internet, so no CDN script, style or font.
Screenshots of each chapter at a laptop and a phone viewport go to ``_build/screenshots``.
"""

import functools
import http.server
import itertools
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
import torch
import torch.nn.functional as F
import yaml

pytestmark = [pytest.mark.browser, pytest.mark.book]

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking switches, Chromium keeps calling Google's services over a closed
# network; /dev/shm is small in CI containers.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
# A word every student will search for; the book must find it.
KNOWN_WORD = "transposed"
# matplotlib's jshtml animation names its frame <img> "_anim_img<uuid>".
ANIMATION_IMG = 'img[id^="_anim_img"]'
FIGURE_IMG = f".bd-article img:not({ANIMATION_IMG})"
IMAGE_FILE_NAME = re.compile(r"\S+\.(png|jpe?g|gif|svg|webp)", re.IGNORECASE)


def toc_files(toc: dict) -> list[str]:
    """The toc's `file` entries in reading order (root first), as Jupyter Book orders them."""
    files = [toc["root"]] if "root" in toc else []

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    walk(toc.get("sections"))
    return [str(Path(name).with_suffix("")) for name in files]


ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8")))


def test_toc_reader_follows_reading_order():
    """The toc reader walks root, parts, chapters and sections depth first."""
    toc = {
        "root": "intro.md",
        "parts": [
            {"chapters": [{"file": "a", "sections": [{"file": "a1.ipynb"}]}, {"file": "b"}]},
            {"chapters": [{"file": "c"}]},
        ],
    }
    assert toc_files(toc) == ["intro", "a", "a1", "b", "c"]


# --- the browser and the site ---------------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Launch Debian's Chromium; skip locally without it, fail in CI (which installs it)."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI's .ci/run must install it")
        pytest.skip(reason)
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": CHROMIUM_ARGS,
        "headless": True,
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": LAPTOP}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the tests report what matters, not each GET
        pass


@pytest.fixture(scope="session")
def site_url(built_book):
    """The built book served on 127.0.0.1 at an ephemeral port, for the whole session."""
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def screenshot_dir(built_book):
    folder = built_book.parent / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class PageRecord:
    """What went wrong while a page loaded: the browser-side view of 'it works'."""

    console_errors: list[str] = field(default_factory=list)
    failed_local_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return (
            [f"console error: {text}" for text in self.console_errors]
            + [f"failed local request: {url}" for url in self.failed_local_requests]
            + [f"request to another host (no internet!): {url}" for url in self.external_requests]
        )


def open_chapter(page, site_url: str, chapter: str) -> PageRecord:
    """Open a chapter with every non-local request blocked; wait until its math is typeset."""
    record = PageRecord()

    def route(request_route):
        host = urlparse(request_route.request.url).hostname
        if host == "127.0.0.1":
            request_route.continue_()
        else:
            record.external_requests.append(
                f"{request_route.request.resource_type} {request_route.request.url}"
            )
            request_route.abort()

    def on_console(message):
        # Chromium asks for /favicon.ico by itself (not the page); a 404 there is not the book's.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            record.console_errors.append(f"{message.text} ({message.location.get('url')})")

    def on_response(response):
        if urlparse(response.url).hostname == "127.0.0.1" and response.status >= 400:
            record.failed_local_requests.append(f"{response.status} {response.url}")

    def on_failed(request):
        if urlparse(request.url).hostname == "127.0.0.1":
            record.failed_local_requests.append(f"{request.failure} {request.url}")

    page.route("**/*", route)
    page.on("console", on_console)
    page.on("pageerror", lambda error: record.console_errors.append(f"uncaught: {error}"))
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.goto(site_url + chapter + ".html", wait_until="load")
    wait_for_math(page)
    return record


def wait_for_math(page) -> None:
    """Sphinx loads MathJax only on pages with math; there, wait for the first typesetting."""
    if page.locator('script[src*="mathjax"]').count():
        page.wait_for_function("() => window.MathJax && window.MathJax.startup", timeout=15_000)
        page.evaluate("() => window.MathJax.startup.promise")


def chapter_html(built_book: Path, chapter: str) -> str:
    return (built_book / f"{chapter}.html").read_text(encoding="utf-8")


# --- every chapter ----------------------------------------------------------------------


def test_toc_lists_the_chapters(built_book):
    assert CHAPTERS, "_toc.yml lists no pages"
    for chapter in CHAPTERS:
        assert (built_book / f"{chapter}.html").is_file(), f"{chapter} is in _toc.yml, not built"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_loads_offline_without_errors(page, site_url, chapter):
    record = open_chapter(page, site_url, chapter)
    page.wait_for_load_state("networkidle")
    assert page.locator(".bd-article h1").count() >= 1, "the page has no title: did it render?"
    assert not record.problems(), "\n".join(record.problems())


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_math_is_typeset(page, site_url, chapter):
    open_chapter(page, site_url, chapter)
    report = page.evaluate(
        """() => {
        const article = document.querySelector('.bd-article');
        const math = [...article.querySelectorAll('.math')];
        const untypeset = math.filter(el => !el.querySelector('mjx-container'))
                              .map(el => el.textContent.trim().slice(0, 80));
        // The prose as a reader sees it: code, outputs and typeset math left out.
        const prose = article.cloneNode(true);
        prose.querySelectorAll('pre, code, script, style, mjx-container, .cell_output, .output')
             .forEach(el => el.remove());
        return {
            count: math.length,
            typeset: article.querySelectorAll('mjx-container').length,
            untypeset: untypeset,
            errors: [...article.querySelectorAll('mjx-merror')].map(el => el.textContent),
            prose: prose.textContent,
        };
    }"""
    )
    assert not report["untypeset"], f"math left as TeX: {report['untypeset']}"
    assert not report["errors"], f"MathJax could not typeset: {report['errors']}"
    assert report["typeset"] >= report["count"]
    raw = re.findall(r"\$\$|\\\(|\\\[|\$[^$\n]*[\\_^][^$\n]*\$", report["prose"])
    assert not raw, f"raw TeX delimiters in the prose (math not parsed): {raw[:5]}"


def test_book_has_math(built_book):
    """The lecture is mathematics: at least one chapter must carry typeset-able math."""
    assert any('class="math' in chapter_html(built_book, chapter) for chapter in CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_figures_load_with_alt_text(page, site_url, chapter):
    open_chapter(page, site_url, chapter)
    figures = page.locator(FIGURE_IMG)
    problems = []
    for index in range(figures.count()):
        figure = figures.nth(index)
        figure.scroll_into_view_if_needed()
        figure.evaluate(
            "img => img.complete || new Promise(done => img.onload = img.onerror = done)"
        )
        src = figure.get_attribute("src") or ""
        alt = (figure.get_attribute("alt") or "").strip()
        if figure.evaluate("img => img.naturalWidth") == 0:
            problems.append(f"not loaded: {src}")
        box = figure.bounding_box()
        if not figure.is_visible() or box is None or box["width"] < 2 or box["height"] < 2:
            problems.append(f"not visible: {src}")
        # Docutils falls back to the file name when a cell gives no alt text: that is no alt.
        if not alt or alt == src or IMAGE_FILE_NAME.fullmatch(alt):
            problems.append(
                f"no alt text (got {alt!r}): {src}; give the cell "
                "`mystnb: {image: {alt: ...}}` metadata or use a figure with :alt:"
            )
    assert not problems, "\n".join(problems)


def test_book_has_figures(built_book):
    assert any(
        "<img" in chapter_html(built_book, chapter).split('class="bd-article"', 1)[-1]
        for chapter in CHAPTERS
    ), "no chapter shows a figure"


def test_animations_play(page, site_url, built_book):
    """At least one chapter has a jshtml animation, and each one plays: its frames change."""
    animated = [c for c in CHAPTERS if "_anim_img" in chapter_html(built_book, c)]
    assert animated, "no chapter embeds a jshtml animation (matplotlib's to_jshtml)"
    for chapter in animated:
        record = open_chapter(page, site_url, chapter)
        animations = page.locator(".bd-article .animation")
        assert animations.count() >= 1, f"{chapter}: the animation did not render"
        for index in range(animations.count()):
            animation = animations.nth(index)
            frame = animation.locator(ANIMATION_IMG)
            frame.scroll_into_view_if_needed()
            page.wait_for_function(
                "img => img.src.startsWith('data:image') && img.naturalWidth > 0",
                arg=frame.element_handle(),
            )
            assert frame.is_visible(), f"{chapter}: animation {index} is hidden"
            alt = (frame.get_attribute("alt") or "").strip()
            assert alt, f"{chapter}: animation {index} has no alt text (plotting.animation_html)"
            seen = {frame.get_attribute("src")}
            animation.locator('button[title="Play"]').click()
            # Collect frames as the animation plays: at least three different pictures.
            for _ in range(100):
                seen.add(frame.get_attribute("src"))
                if len(seen) >= 3:
                    break
                page.wait_for_timeout(100)
            assert len(seen) >= 3, f"{chapter}: animation {index} did not advance ({len(seen)})"
            animation.locator('button[title="Pause"]').click()
        assert not record.problems(), f"{chapter}:\n" + "\n".join(record.problems())


def code_lines(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_download_button_offers_the_chapters_notebook(page, site_url, chapter):
    open_chapter(page, site_url, chapter)
    page.locator(".dropdown-download-buttons button.dropdown-toggle").click()
    link = page.locator(".dropdown-download-buttons a.btn-download-notebook-button")
    link.wait_for(state="visible")
    assert ".ipynb" in link.inner_text()
    href = link.evaluate("a => a.href")
    assert urlparse(href).path.endswith(f"/_sources/{chapter}.ipynb"), href
    response = page.request.get(href)
    assert response.ok, f"{href}: {response.status}"
    notebook = nbformat.reads(response.text(), as_version=4)
    nbformat.validate(notebook)
    # It is this page's notebook: the page's code cells appear in it, in order.
    notebook_code = iter(
        code_lines(cell.source) for cell in notebook.cells if cell.cell_type == "code"
    )
    page_code = [
        code_lines(text) for text in page.locator(".bd-article .cell_input pre").all_text_contents()
    ]
    missing = [code for code in page_code if not any(code == cell for cell in notebook_code)]
    assert not missing, f"code on the page but not in the notebook, in order: {missing[:1]}"
    assert notebook.cells, "the notebook is empty"


@pytest.mark.parametrize("position", range(len(CHAPTERS)))
def test_previous_and_next_navigation(page, site_url, position):
    chapter = CHAPTERS[position]
    open_chapter(page, site_url, chapter)
    if position + 1 < len(CHAPTERS):
        page.locator(".prev-next-area a.right-next").click()
        page.wait_for_url(site_url + CHAPTERS[position + 1] + ".html*")
    else:
        assert page.locator(".prev-next-area a.right-next").count() == 0
        open_chapter(page, site_url, chapter)
    if position > 0:
        page.goto(site_url + chapter + ".html")
        page.locator(".prev-next-area a.left-prev").click()
        page.wait_for_url(site_url + CHAPTERS[position - 1] + ".html*")


def search_results(page) -> list[str]:
    """Wait for Sphinx's search to finish and return the result links."""
    page.locator("#search-results .search-summary").wait_for(state="attached", timeout=20_000)
    page.wait_for_function(
        "() => document.querySelector('#search-results .search-summary').textContent.trim()"
    )
    return page.locator("#search-results ul.search li a").evaluate_all(
        "links => links.map(a => a.href)"
    )


def test_search_box_finds_a_word_of_the_book(page, site_url):
    open_chapter(page, site_url, CHAPTERS[0])
    page.locator("button.search-button-field:visible, button.search-button:visible").first.click()
    search_box = page.locator("#pst-search-dialog input[name=q]")
    search_box.wait_for(state="visible")
    search_box.fill(KNOWN_WORD)
    search_box.press("Enter")
    page.wait_for_url(re.compile(r"search\.html\?q=" + KNOWN_WORD))
    found = {urlparse(href).path for href in search_results(page)}
    chapter_paths = {urlparse(site_url + chapter + ".html").path for chapter in CHAPTERS}
    assert found & chapter_paths, f"searching {KNOWN_WORD!r} found no chapter: {found}"


def test_search_finds_nothing_for_a_word_not_in_the_book(page, site_url):
    """The search really filters: a made-up word finds nothing."""
    page.goto(site_url + "search.html?q=zqxjvwordnotinthebook")
    assert search_results(page) == []


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_screenshots_read_on_laptop_and_phone(page, site_url, chapter, screenshot_dir):
    name = chapter.replace("/", "_")
    open_chapter(page, site_url, chapter)
    page.screenshot(path=str(screenshot_dir / f"{name}-laptop.png"), full_page=True)
    # A phone opens the page at its own size (MathJax lays math out when it typesets).
    page.set_viewport_size(PHONE)
    page.reload(wait_until="load")
    wait_for_math(page)
    overflow = page.evaluate(
        """() => {
        const width = document.documentElement.clientWidth;
        const sticksOut = el => el.getBoundingClientRect().right > width + 1;
        // Wide content inside a scrolling box (code cells, outputs) can be scrolled to;
        // anything else past the edge widens the page or is cut off. Name the innermost
        // culprits for the chapter's author.
        const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
        const inScroller = el => {
            for (let up = el.parentElement; up; up = up.parentElement) if (scrolls(up)) return true;
            return false;
        };
        // Say which equation (its TeX) or which block of text, not which glyph.
        const describe = el => {
            const math = el.closest('mjx-container');
            if (math && window.MathJax) {
                const items = MathJax.startup.document.getMathItemsWithin(math);
                if (items.length) return `math: ${items[0].math.trim().slice(0, 70)}`;
            }
            const block = el.closest('p, li, td, th, h1, h2, h3, h4, .prev-next-info') || el;
            return `<${block.tagName.toLowerCase()}> ${block.textContent.trim().slice(0, 70)}`;
        };
        const culprits = [...document.querySelectorAll('.bd-article *, .prev-next-footer *')]
            // A formula counts as one box: MathJax's glyph boxes may poke past it.
            .filter(el => !el.parentElement.closest('mjx-container'))
            .filter(el => sticksOut(el) && !inScroller(el)
                          && (el.tagName === 'MJX-CONTAINER' || ![...el.children].some(sticksOut)))
            .map(describe);
        const wideImages = [...document.querySelectorAll('.bd-article img')]
            .filter(sticksOut).map(img => img.getAttribute('src').slice(0, 60));
        return {
            page: document.documentElement.scrollWidth - width,
            culprits: [...new Set(culprits)].slice(0, 5),
            wideImages,
        };
    }"""
    )
    page.screenshot(path=str(screenshot_dir / f"{name}-phone.png"), full_page=True)
    assert overflow["page"] <= 1, (
        f"the page scrolls sideways on a phone by {overflow['page']}px; "
        f"too wide: {overflow['culprits']}"
    )
    assert not overflow["culprits"], f"cut off at a phone's right edge: {overflow['culprits']}"
    assert not overflow["wideImages"], f"images wider than a phone: {overflow['wideImages']}"


# --- what a reader sees: captions, code, equations --------------------------------------

# WCAG 2's minimum contrast for body-size text.
MIN_CONTRAST = 4.5
# Light strokes read paler than their colour says: captions keep at least normal weight.
MIN_CAPTION_WEIGHT = 400
THEMES = ["light", "dark"]


def relative_luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2's relative luminance of an sRGB colour given as 0-255 channels."""

    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(foreground, background) -> float:
    lighter, darker = sorted(map(relative_luminance, (foreground, background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_contrast_ratio_matches_wcag_examples():
    """Black on white is 21:1, a colour on itself 1:1, WCAG's #767676 on white just passes."""
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast_ratio((120, 120, 120), (120, 120, 120)) == pytest.approx(1.0)
    assert contrast_ratio((118, 118, 118), (255, 255, 255)) == pytest.approx(4.54, abs=0.01)


# The text colour, weight and (first opaque ancestor's) background of every caption's text.
CAPTION_STYLES_JS = """() => {
    const rgb = text => (text.match(/[\\d.]+/g) || []).map(Number);
    const background = el => {
        for (let up = el; up; up = up.parentElement) {
            const colour = rgb(getComputedStyle(up).backgroundColor);
            if (colour.length === 3 || colour[3] > 0) return colour.slice(0, 3);
        }
        return [255, 255, 255];
    };
    // The permalink '#' (a.headerlink) is an icon shown on hover, not caption text.
    const texts = [...document.querySelectorAll('.bd-article figcaption, .bd-article figcaption *')]
        .filter(el => !el.closest('.headerlink'))
        .filter(el => [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()));
    return texts.map(el => {
        const style = getComputedStyle(el);
        return {text: el.textContent.trim().slice(0, 60), colour: rgb(style.color).slice(0, 3),
                alpha: rgb(style.color)[3] ?? 1, opacity: Number(style.opacity),
                background: background(el), weight: Number(style.fontWeight)};
    });
}"""


@pytest.mark.parametrize("theme", THEMES)
def test_captions_are_readable(page, site_url, built_book, theme):
    captioned = [c for c in CHAPTERS if "<figcaption" in chapter_html(built_book, c)]
    assert captioned, "no chapter has a figure caption"
    problems = []
    for chapter in captioned:
        open_chapter(page, site_url, chapter)
        page.evaluate("theme => { document.documentElement.dataset.theme = theme; }", theme)
        for caption in page.evaluate(CAPTION_STYLES_JS):
            ratio = contrast_ratio(caption["colour"], caption["background"])
            if caption["alpha"] < 1 or caption["opacity"] < 1 or ratio < MIN_CONTRAST:
                problems.append(f"{chapter}: contrast {ratio:.2f}:1 ({caption})")
            if caption["weight"] < MIN_CAPTION_WEIGHT:
                problems.append(f"{chapter}: font-weight {caption['weight']} ({caption['text']})")
    assert not problems, "\n".join(problems[:8])


# For every <pre> in the article: is every character visible, or can the block be scrolled to
# it, and does the block stay inside the column (no ancestor cuts it off)?
CODE_BLOCKS_JS = """() => {
    const column = document.querySelector('.bd-article').getBoundingClientRect();
    return [...document.querySelectorAll('.bd-article pre')].map(pre => {
        const box = pre.getBoundingClientRect();
        const longest = Math.max(...pre.textContent.split('\\n').map(line => line.length));
        return {text: pre.textContent.trim().split('\\n')[0].slice(0, 60), longest,
                input: Boolean(pre.closest('.cell_input')),
                fits: pre.scrollWidth <= pre.clientWidth + 1,
                scrolls: ['auto', 'scroll'].includes(getComputedStyle(pre).overflowX),
                inColumn: box.right <= column.right + 1 && box.left >= column.left - 1};
    });
}"""


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_code_blocks_show_every_character(page, site_url, chapter, viewport):
    page.set_viewport_size(viewport)
    open_chapter(page, site_url, chapter)
    problems = []
    for block in page.evaluate(CODE_BLOCKS_JS):
        if not (block["fits"] or block["scrolls"]):
            problems.append(f"cut off, no scroll: {block['text']}")
        if not block["inColumn"]:
            problems.append(f"sticks out of the column: {block['text']}")
        # On a laptop nothing of the chapters' code may hide behind a scroll bar.
        if viewport == LAPTOP and block["input"] and not block["fits"]:
            problems.append(f"a {block['longest']}-character line is cut: {block['text']}")
    assert not problems, "\n".join(problems[:8])


# Each display equation: inside the screen, and wider than its box only where it scrolls.
DISPLAY_MATH_JS = """() => {
    const width = document.documentElement.clientWidth;
    const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
    return [...document.querySelectorAll('.bd-article div.math')].map(block => {
        const shown = block.querySelector('mjx-container') || block;
        const box = block.getBoundingClientRect();
        const tex = window.MathJax ? MathJax.startup.document.getMathItemsWithin(block) : [];
        return {tex: tex.length ? tex[0].math.trim().slice(0, 60) : block.textContent.slice(0, 60),
                typeset: Boolean(block.querySelector('mjx-container')),
                onScreen: box.left >= -1 && box.right <= width + 1,
                reachable: [shown, block].every(el => el.scrollWidth <= el.clientWidth + 1 || scrolls(el))};
    });
}"""


# Inline formulas wider than their line (MathJax cannot wrap them): each must scroll itself.
WIDE_INLINE_MATH_JS = """() => [...document.querySelectorAll(
        '.bd-article mjx-container:not([display="true"])')]
    .filter(math => {
        const line = math.parentElement.closest('p, li, td, th, dd, div');
        return line && math.scrollWidth > line.clientWidth + 1
            && !['auto', 'scroll'].includes(getComputedStyle(math).overflowX);
    })
    .map(math => MathJax.startup.document.getMathItemsWithin(math)[0].math.slice(0, 60))"""


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_math_scrolls_within_itself_on_a_phone(page, site_url, chapter):
    page.set_viewport_size(PHONE)
    open_chapter(page, site_url, chapter)
    blocks = page.evaluate(DISPLAY_MATH_JS)
    problems = [f"not typeset: {b['tex']}" for b in blocks if not b["typeset"]]
    problems += [f"past the screen's edge: {b['tex']}" for b in blocks if not b["onScreen"]]
    problems += [f"cut off, no scroll: {b['tex']}" for b in blocks if not b["reachable"]]
    if page.locator('script[src*="mathjax"]').count():
        problems += [f"inline, cut off: {tex}" for tex in page.evaluate(WIDE_INLINE_MATH_JS)]
    assert not problems, "\n".join(problems[:8])
    page_overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert page_overflow <= 1, f"the page scrolls sideways by {page_overflow}px at 390 px"


# --- the conv_transpose1d explorer (book/_static/explorer.js) ----------------------------

EXPLORER = ".ct-explorer[data-ready]"
EXPLORER_PARAMETERS = ("L", "k", "s", "p", "d", "op")
# Every small setting: input length, kernel size, stride, padding, dilation, output_padding.
EXPLORER_GRID = list(
    itertools.product(range(1, 6), range(1, 5), range(1, 4), range(3), range(1, 3), range(3))
)


@dataclass(frozen=True)
class TransposedConvolution:
    """torch's answer for one setting: None fields and torch's message when it refuses."""

    length: int | None
    coverage: list[int] | None
    touches: list[list[int]] | None
    refusal: str | None


def torch_answer(L: int, k: int, s: int, p: int, d: int, op: int) -> TransposedConvolution:
    """Length, taps per output (ones by ones) and outputs each input touches, from torch."""
    options = {"stride": s, "padding": p, "dilation": d, "output_padding": op}
    ones = torch.ones(1, 1, k, dtype=torch.float64)
    try:
        coverage = F.conv_transpose1d(torch.ones(1, 1, L, dtype=torch.float64), ones, **options)
    except RuntimeError as error:
        return TransposedConvolution(None, None, None, str(error))
    # A batch of one-hot inputs: row i of the output is where input i's stamp lands.
    stamps = F.conv_transpose1d(torch.eye(L, dtype=torch.float64).unsqueeze(1), ones, **options)
    touches = [torch.nonzero(stamps[i, 0]).flatten().tolist() for i in range(L)]
    counts = [int(c) for c in coverage.flatten().round().tolist()]
    return TransposedConvolution(coverage.shape[-1], counts, touches, None)


def test_torch_answer_on_the_lectures_example():
    """L=4, k=3, s=2, p=1, op=1: the lecture's picture, counted by hand."""
    answer = torch_answer(4, 3, 2, 1, 1, 1)
    assert answer.length == 8
    assert answer.coverage == [1, 2, 1, 2, 1, 2, 1, 1]
    assert answer.touches == [[0, 1], [1, 2, 3], [3, 4, 5], [5, 6, 7]]
    assert "output padding must be smaller" in torch_answer(3, 2, 1, 0, 1, 1).refusal


# Set the explorer's boxes as a reader types them (an `input` event per box) and read back
# what it shows: the length, the refusal, the taps per output and each input's outputs.
DRIVE_EXPLORER_JS = """([selector, names, grid]) => {
    const root = document.querySelector(selector);
    const box = name => root.querySelector(`input[data-param="${name}"]`);
    const shown = el => el && !el.hidden && el.offsetParent !== null;
    return grid.map(values => {
        names.forEach((name, i) => {
            box(name).value = String(values[i]);
            box(name).dispatchEvent(new Event('input', {bubbles: true}));
        });
        const refusal = root.querySelector('.ct-explorer-refusal');
        const rows = [...root.querySelectorAll('.ct-explorer-map tr[data-input] th')];
        return {
            values,
            length: root.querySelector('.ct-explorer-length').textContent.trim(),
            formula: root.querySelector('.ct-explorer-formula').textContent,
            refusal: shown(refusal) ? refusal.textContent.trim() : null,
            coverage: [...root.querySelectorAll('.ct-explorer-coverage td[data-output]')]
                .map(td => td.textContent.trim()),
            touches: rows.map(th => th.textContent.trim()),
        };
    });
}"""


def shown_touches(label: str) -> list[int]:
    """The outputs an explorer row names: 'x[2] → 3, 4, 5' or 'x[0] → nothing'."""
    targets = label.split("→", 1)[1].strip()
    return [] if targets == "nothing" else [int(t) for t in targets.split(",")]


def explorer_disagreements(shown: dict) -> list[str]:
    answer = torch_answer(*shown["values"])
    setting = dict(zip(EXPLORER_PARAMETERS, shown["values"], strict=True))
    if answer.refusal is not None:
        refusal = shown["refusal"] or ""
        says_why = ("output padding" in refusal) == ("output padding" in answer.refusal)
        if refusal and says_why and shown["length"] == "none":
            return []
        return [f"{setting}: torch refuses ({answer.refusal[:70]}), the explorer shows {shown}"]
    problems = []
    if shown["refusal"] is not None:
        problems.append(f"{setting}: torch accepts, the explorer refuses: {shown['refusal']}")
    if shown["length"] != str(answer.length) or not shown["formula"].endswith(f"= {answer.length}"):
        problems.append(f"{setting}: length {shown['length']!r}, torch {answer.length}")
    if [int(c) for c in shown["coverage"]] != answer.coverage:
        problems.append(f"{setting}: coverage {shown['coverage']}, torch {answer.coverage}")
    if [shown_touches(label) for label in shown["touches"]] != answer.touches:
        problems.append(f"{setting}: touches {shown['touches']}, torch {answer.touches}")
    return problems


@pytest.fixture(scope="session")
def explorer_chapters(built_book) -> list[str]:
    chapters = [c for c in CHAPTERS if 'class="ct-explorer"' in chapter_html(built_book, c)]
    assert chapters, 'no chapter includes the explorer (<div class="ct-explorer">)'
    return chapters


def open_explorer(page, site_url: str, chapter: str) -> PageRecord:
    record = open_chapter(page, site_url, chapter)
    page.locator(EXPLORER).first.wait_for(state="visible")
    return record


def test_explorer_agrees_with_torch_on_the_whole_grid(page, site_url, explorer_chapters):
    for chapter in explorer_chapters:
        record = open_explorer(page, site_url, chapter)
        shown = page.evaluate(DRIVE_EXPLORER_JS, [EXPLORER, EXPLORER_PARAMETERS, EXPLORER_GRID])
        assert len(shown) == len(EXPLORER_GRID)
        problems = [problem for one in shown for problem in explorer_disagreements(one)]
        assert not problems, f"{chapter}: {len(problems)} disagreements:\n" + "\n".join(
            problems[:6]
        )
        refused = sum(one["refusal"] is not None for one in shown)
        assert 0 < refused < len(EXPLORER_GRID), "the grid must hold settings torch refuses"
        assert not record.problems(), "\n".join(record.problems())


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_explorer_answers_what_a_reader_types(page, site_url, explorer_chapters, viewport):
    """Typed into the boxes (at a laptop's and a phone's width), and no sideways page."""
    page.set_viewport_size(viewport)
    open_explorer(page, site_url, explorer_chapters[0])
    explorer = page.locator(EXPLORER).first
    for values in [(5, 4, 3, 2, 2, 1), (2, 2, 3, 0, 1, 3), (1, 1, 1, 2, 1, 0)]:
        for name, value in zip(EXPLORER_PARAMETERS, values, strict=True):
            explorer.locator(f'input[data-param="{name}"]').fill(str(value))
        answer = torch_answer(*values)
        length = explorer.locator(".ct-explorer-length").inner_text().strip()
        refusal = explorer.locator(".ct-explorer-refusal")
        if answer.refusal is None:
            assert length == str(answer.length), values
            assert not refusal.is_visible(), values
        else:
            assert length == "none", values
            assert refusal.is_visible() and "torch refuses" in refusal.inner_text(), values
        page_overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert page_overflow <= 1, f"{values}: the page scrolls sideways by {page_overflow}px"
