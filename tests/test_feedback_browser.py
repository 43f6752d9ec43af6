"""The feedback pages as a TA and a student open them: in headless Chromium, offline.

A few corpus fixtures (``tests/fixtures/submissions``), a 2-d mutant of the instructor's
answer (``tests/test_mutants.py``: the kernel flipped, which fails with the right shapes, so
its pages have heat maps) and a student folder named like markup are graded by
``python -m autograder grade`` into a temporary folder, which is served on 127.0.0.1. The
index and the pages are opened there, at a laptop's width and a phone's, with every request
to another host blocked and counted as a failure: every image must load, no console error
may appear, no dialog may open, and the page must not scroll sideways at 390 px.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from autograder import feedback
from autograder.notebook import cell_source, read_notebook
from tests.test_browser import (  # noqa: F401  (pytest-playwright's fixtures, set for Chromium)
    LAPTOP,
    PHONE,
    PageRecord,
    _QuietHandler,
    browser_context_args,
    browser_type_launch_args,
)
from tests.test_mutants import MUTANTS, NOTEBOOKS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT / "tests" / "fixtures" / "submissions"
#: The pages opened: what each shows that the others do not.
FIXTURES = {
    "partial_bias_ignored": "1-d values wrong: stem plots",
    "wrong_shapes": "every shape wrong: no figure, and why",
    "release_untouched": "every call raises: the student's failing line",
}
MUTANT_2D = "kernel_flipped_2d"
#: A folder name that is markup: the page must show it as text (no "/": it is one folder).
HOSTILE_STUDENT = "<img src=x onerror=alert(1)>"
PAGES = [*FIXTURES, MUTANT_2D, HOSTILE_STUDENT]


def write_mutant(submitted: Path, name: str) -> None:
    """The instructor's notebook with the mutant's edits, as a student's submission."""
    (mutant,) = [m for m in MUTANTS if m.name == name]
    path = REPO_ROOT / "solutions" / mutant.assignment / f"{NOTEBOOKS[mutant.assignment]}.ipynb"
    notebook = read_notebook(path)
    for old, new in mutant.edits:
        (holder,) = [c for c in notebook["cells"] if old in cell_source(c)]
        holder["source"] = cell_source(holder).replace(old, new)
    target = submitted / name / mutant.assignment / path.name
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(notebook), encoding="utf-8")


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Path:
    """The grader's output folder for the fixtures, the mutant and the hostile folder."""
    if not shutil.which("bwrap"):
        if os.environ.get("CI"):
            pytest.fail("bubblewrap is not installed; .ci/setup.sh should have installed it")
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    root = tmp_path_factory.mktemp("feedback")
    submitted = root / "submitted"
    for name in FIXTURES:
        shutil.copytree(CORPUS / name, submitted / name)
    # One assignment of the release is enough for the tracebacks.
    for extra in ("02_conv_transpose2d", "03_interpolate"):
        shutil.rmtree(submitted / "release_untouched" / extra, ignore_errors=True)
    write_mutant(submitted, MUTANT_2D)
    shutil.copytree(CORPUS / "partial_no_groups", submitted / HOSTILE_STUDENT)
    out = root / "out"
    run = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(out),
         "--jobs", "2", "--progress", "never"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def page_of(out: Path, student: str) -> str:
    """The path below ``out`` of the student's one page, read from its results."""
    for results_path in out.rglob("results.json"):
        results = json.loads(results_path.read_text(encoding="utf-8"))
        if results["extra_data"].get("student") == student:
            return results_path.relative_to(out).with_name(feedback.PAGE_NAME).as_posix()
    raise AssertionError(f"no results for {student}")


@pytest.fixture(scope="module")
def served(graded):
    handler = functools.partial(_QuietHandler, directory=str(graded))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def open_offline(page, url: str) -> PageRecord:
    """Open ``url`` with every request off 127.0.0.1 blocked and recorded, as the book's
    tests do; a dialog (an ``alert`` that got through) counts as a console error."""
    record = PageRecord()

    def route(request_route):
        if urlparse(request_route.request.url).hostname == "127.0.0.1":
            request_route.continue_()
        else:
            record.external_requests.append(request_route.request.url)
            request_route.abort()

    def on_dialog(dialog):
        record.console_errors.append(f"a dialog opened: {dialog.message}")
        dialog.dismiss()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and record.console_errors.append(m.text))
    page.on("pageerror", lambda error: record.console_errors.append(f"uncaught: {error}"))
    page.on("dialog", on_dialog)
    page.on(
        "response",
        lambda r: r.status >= 400 and record.failed_local_requests.append(f"{r.status} {r.url}"),
    )
    page.goto(url, wait_until="load")
    return record


# Every <img>: loaded (naturalWidth), and its data URI's size; the page's sideways overflow.
IMAGES_JS = """() => [...document.images].map(img => ({
    src: img.src.slice(0, 30), loaded: img.complete && img.naturalWidth > 0,
    inside: img.getBoundingClientRect().right <= document.documentElement.clientWidth + 1}))"""
OVERFLOW_JS = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_the_index_links_every_page(page, served, graded):
    record = open_offline(page, served + feedback.PAGE_NAME)
    links = page.eval_on_selector_all("a", "links => links.map(a => a.getAttribute('href'))")
    assert sorted(unquote(link) for link in links) == sorted(page_of(graded, s) for s in PAGES)
    for link in links:
        response = page.request.get(served + link)
        assert response.ok, f"{link}: {response.status}"
    assert page.get_by_text(HOSTILE_STUDENT, exact=True).count() == 1
    assert not record.problems(), "\n".join(record.problems())


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
@pytest.mark.parametrize(
    "student", PAGES, ids=lambda s: "markup_name" if s == HOSTILE_STUDENT else s
)
def test_a_page_loads_offline_and_fits_a_phone(page, served, graded, student, viewport):
    page.set_viewport_size(viewport)
    record = open_offline(page, served + page_of(graded, student))
    page.wait_for_load_state("networkidle")
    images = page.evaluate(IMAGES_JS)
    assert all(image["loaded"] for image in images), [i for i in images if not i["loaded"]]
    assert all(image["src"].startswith("data:image/png;base64,") for image in images)
    assert all(image["inside"] for image in images), "an image sticks out of the screen"
    overflow = page.evaluate(OVERFLOW_JS)
    assert overflow <= 1, f"the page scrolls sideways by {overflow}px at {viewport['width']} px"
    assert not record.problems(), "\n".join(record.problems())
    shown = page.locator("body").inner_text()
    if student in ("partial_bias_ignored", MUTANT_2D):
        assert images, f"{student}: its failed cases have the right shape, so figures"
    if student == MUTANT_2D:
        assert page.locator(".pictures").first.locator("img").count() == 3  # heat maps
    if student == "wrong_shapes":
        assert not images and "values of different shapes are not drawn" in shown
    if student == "release_untouched":
        assert "Your line: cell" in shown and "raise NotImplementedError()" in shown
    if student == HOSTILE_STUDENT:
        assert HOSTILE_STUDENT in shown  # the folder's name as text, not an image
