"""The feedback pages (``autograder/feedback.py``), from cases judged as the grader judges them.

Each case is one of the course's public cases: its inputs and torch's reference come from
``course_checks``, the "student's" output is computed here with torch (a typical bug: the
kernel flipped, the channels summed away), and ``grading.judge_case`` judges it, as it does
with what comes back from the sandbox. The figures' values are checked against torch's
``F.conv_transpose1d``/``2d`` called here; the pages are read with an HTML parser, so that a
hostile name that became markup would show as a tag, not as text.
"""

from __future__ import annotations

import base64
import io
import json
import linecache
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from autograder import cli, course_checks, feedback, grading, reports
from autograder.runner import _short_traceback

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKS = grading.Checks()
BATCHED_1D = course_checks.PUBLIC_CASES["ct1d_channels_batch"][0]  # input (2, 3, 5)
BASIC_2D = course_checks.PUBLIC_CASES["ct2d_basic"][0]  # input (1, 1, 3, 3)
HOSTILE = "<script>alert(1)</script>"
HOSTILE_MESSAGE = "</pre><img src=x onerror=alert(2)><script>alert(3)</script>"


class Page(HTMLParser):
    """A page as a browser reads it: its tags with their attributes, and its text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)

    def images(self) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == "img"]


def judged(case, outputs=None, *, hidden=False, error=None, traceback_text=""):
    """The case's inputs, and the grader's verdict on ``outputs`` (or on ``error`` raised)."""
    inputs = course_checks.make_inputs(case)
    expected = course_checks.reference_outputs(case, {k: v.clone() for k, v in inputs.items()})
    item = grading.PlannedCase(case, "hidden" if hidden else "public", inputs, expected)
    status = {"case": 0, "state": "finished", "error": None, "kernel": None, "others": {}}
    if error is not None:
        status.update(error=str(error), error_type=type(error).__name__)
        status["traceback"] = traceback_text
    result = grading.judge_case(CHECKS, item, status, outputs, None, [], "it stopped")
    result.hidden = hidden
    return inputs, result


def flipped_1d(inputs) -> dict[str, torch.Tensor]:
    """A student whose kernel is flipped: torch's own function on the flipped weight."""
    return {"output": F.conv_transpose1d(inputs["input"], inputs["weight"].flip(-1))}


def results_json(grade_id: str, student: str = "alice", notebook: str = "alice/01/nb.ipynb"):
    return {
        "score": 0,
        "output": "Assignment 01: 0 / 10 autograded points.",
        "tests": [
            {
                "name": grade_id,
                "score": 0,
                "max_score": 10,
                "status": "failed",
                "output": f"{grade_id}: the grader's text",
            }
        ],  # fmt: skip
        "extra_data": {
            "student": student,
            "assignment": "01_conv_transpose1d",
            "notebook": notebook,
            "max_score": 10,
        },  # fmt: skip
    }


def page_of(results, *cases, shows_hidden=False, grade_id="ct1d_channels_batch") -> Page:
    tests = [feedback.TestFeedback(grade_id, "what it checks", [], list(cases))]
    return Page(feedback.render_page(results, tests, shows_hidden))


def png_of(image: dict) -> Image.Image:
    src = str(image["src"])
    assert src.startswith("data:image/png;base64,"), src[:40]
    picture = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert picture.format == "PNG"
    assert picture.size == (int(image["width"]), int(image["height"]))
    assert len(picture.convert("RGB").getcolors(1 << 16) or range(1 << 16)) > 3, "a blank image"
    return picture


# --------------------------------------------------------------------------- figures


def test_a_failed_1d_case_draws_torchs_values_and_the_students():
    inputs, result = judged(BATCHED_1D, flipped_1d(course_checks.make_inputs(BATCHED_1D)))
    assert not result.passed
    torch_output = F.conv_transpose1d(inputs["input"].double(), inputs["weight"].double())
    students = F.conv_transpose1d(inputs["input"], inputs["weight"].flip(-1))
    found = result.evidence
    assert found.key == "output" and found.expected.ndim == 1
    np.testing.assert_allclose(found.expected, torch_output[0, 0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(found.got, students[0, 0].numpy(), rtol=0, atol=0)
    assert "first sample and channel" in found.view and "(2, 2, 7)" in found.view
    page = page_of(results_json("ct1d_channels_batch"), result)
    (image,) = page.images()  # one picture: three stem plots sharing the index axis
    png_of(image)
    assert "kernel" in page.all_text  # the likely bug
    assert BATCHED_1D.describe() in str(image["alt"])


def test_a_failed_2d_case_draws_three_heat_maps():
    inputs = course_checks.make_inputs(BASIC_2D)
    wrong = {"output": F.conv_transpose2d(inputs["input"], inputs["weight"].flip(-1, -2))}
    inputs, result = judged(BASIC_2D, wrong)
    torch_output = F.conv_transpose2d(inputs["input"].double(), inputs["weight"].double())
    found = result.evidence
    assert found.expected.shape == (4, 4) == found.got.shape
    np.testing.assert_allclose(found.expected, torch_output[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(found.got, wrong["output"][0, 0].numpy(), atol=0)
    page = page_of(results_json("ct2d_basic"), result, grade_id="ct2d_basic")
    images = page.images()
    assert len(images) == 3, "expected, got and difference: a heat map each"
    assert all(png_of(image).size[0] <= 390 for image in images), "each fits a phone"
    alts = [str(image["alt"]) for image in images]
    assert any("torch's" in a for a in alts) and any("difference" not in a for a in alts)


def test_large_outputs_are_cut_to_what_a_figure_shows():
    long_1d = course_checks.Case(
        "ct1d_basic", "conv_transpose1d",
        {"input": [1, 1, 400], "weight": [1, 1, 3], "bias": False, "kwargs": {}},
    )  # fmt: skip
    inputs = course_checks.make_inputs(long_1d)
    _, result = judged(long_1d, {"output": F.conv_transpose1d(inputs["input"], -inputs["weight"])})
    torch_output = F.conv_transpose1d(inputs["input"].double(), inputs["weight"].double())
    assert result.evidence.expected.shape == (feedback.MAX_POINTS,)
    np.testing.assert_allclose(
        result.evidence.expected, torch_output[0, 0, : feedback.MAX_POINTS].numpy(), atol=1e-5
    )
    assert f"first {feedback.MAX_POINTS} values" in result.evidence.view
    big_2d = course_checks.Case(
        "ct2d_basic", "conv_transpose2d",
        {"input": [1, 1, 99, 70], "weight": [1, 1, 2, 2], "bias": False, "kwargs": {}},
    )  # fmt: skip
    inputs = course_checks.make_inputs(big_2d)
    _, result = judged(big_2d, {"output": F.conv_transpose2d(inputs["input"], -inputs["weight"])})
    side = feedback.MAX_SIDE
    assert result.evidence.expected.shape == (side, side)
    assert f"top-left {side} × {side} corner" in result.evidence.view


def test_a_shape_mismatch_has_no_figure_and_says_why():
    inputs = course_checks.make_inputs(BATCHED_1D)
    summed = F.conv_transpose1d(inputs["input"], inputs["weight"]).sum(1)  # channels lost
    _, result = judged(BATCHED_1D, {"output": summed})
    page = page_of(results_json("ct1d_channels_batch"), result)
    assert page.images() == []
    assert "No figure: output has shape (2, 7) where torch's has (2, 2, 7)" in page.all_text


def test_a_raised_error_shows_the_students_own_failing_line():
    label = "cell 3 (def conv_transpose1d(input, weight):)"
    source = (
        "def conv_transpose1d(input, weight, **kwargs):\n"
        "    length = input.shape[-1]\n"
        "    raise ValueError(f'length {length} is too short')\n"
    )
    filename = f"<{label}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {}
    exec(compile(source, filename, "exec"), namespace)
    inputs = course_checks.make_inputs(BATCHED_1D)
    try:
        namespace["conv_transpose1d"](inputs["input"], inputs["weight"])
    except ValueError as raised:
        error = raised
    text = _short_traceback(error)  # as the sandbox's runner reports it
    # A message can look like a frame: it is the student's text, not where it failed.
    forged = ValueError('x\n  File "<cell 9 (forged)>", line 99, in nowhere\n    pass')
    for raised_error, trace in ((error, text), (forged, text + _short_traceback(forged))):
        _, result = judged(BATCHED_1D, error=raised_error, traceback_text=trace)
        line = result.evidence.failing_line
        assert (line.cell, line.line, line.function) == (label, 3, "conv_transpose1d")
        assert line.code == "raise ValueError(f'length {length} is too short')"
    page = page_of(results_json("ct1d_channels_batch"), result)
    assert f"Your line: {label}, line 3, in conv_transpose1d" in page.all_text
    assert "raise ValueError(f'length {length} is too short')" in page.all_text
    assert "No figure: your code raised an error" in page.all_text


# --------------------------------------------------------------------------- escaping


def test_hostile_names_messages_and_diagnoses_are_text():
    results = results_json("ct1d_channels_batch", student=HOSTILE, notebook=HOSTILE + "/nb.ipynb")
    results["output"] = HOSTILE_MESSAGE
    _, raised = judged(BATCHED_1D, error=ValueError(HOSTILE_MESSAGE), traceback_text=HOSTILE)
    diagnosed = grading.CaseResult(False, BATCHED_1D.describe(), HOSTILE_MESSAGE, HOSTILE)
    page = page_of(results, raised, diagnosed)
    tags = {tag for tag, _ in page.tags}
    assert "script" not in tags
    assert [attrs for _, attrs in page.tags if any(k.startswith("on") for k in attrs)] == []
    assert page.images() == []
    assert page.all_text.count(HOSTILE) >= 3  # the name, the notebook, the likely bug
    assert HOSTILE_MESSAGE in page.all_text
    # The policy forbids every request even if something slipped through.
    (policy,) = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert "default-src 'none'" in str(policy["content"])


def test_the_index_shows_hostile_names_as_text_and_links_relatively(tmp_path):
    rows = []
    for student, rel in (("alice", "alice/01/nb"), (HOSTILE, "~hashed/0123abcd")):
        results = results_json("ct1d_basic", student=student)
        results["score"] = 7
        grading.write_atomic(tmp_path / rel / "results.json", json.dumps(results))
        grading.write_atomic(tmp_path / rel / feedback.PAGE_NAME, "<!DOCTYPE html>")
        rows.append(reports.row_from_results(rel, results))
    rows.append(reports.row_from_results("bob/01/nb", results_json("ct1d_basic", "bob")))
    reports.write_reports(rows, tmp_path)
    index = Page((tmp_path / feedback.PAGE_NAME).read_text(encoding="utf-8"))
    assert "script" not in {tag for tag, _ in index.tags}
    assert HOSTILE in index.all_text
    links = [str(attrs["href"]) for tag, attrs in index.tags if tag == "a"]
    assert sorted(links) == sorted(["alice/01/nb/feedback.html", "~hashed/0123abcd/feedback.html"])
    for link in links:
        assert (tmp_path / unquote(link)).is_file(), link
    assert "no page" in index.all_text  # bob's results have none


def test_merge_brings_each_page_with_its_results(tmp_path):
    shards = [tmp_path / "shard1", tmp_path / "shard2"]
    for shard, student in zip(shards, ("alice", "bob"), strict=True):
        rel = f"{student}/01/nb"
        grading.write_atomic(shard / rel / "results.json", json.dumps(results_json("x", student)))
        grading.write_atomic(shard / rel / feedback.PAGE_NAME, f"page of {student}")
    out = tmp_path / "out"
    reports.merge(shards, out)
    assert (out / "bob/01/nb" / feedback.PAGE_NAME).read_text() == "page of bob"
    links = [a["href"] for t, a in Page((out / feedback.PAGE_NAME).read_text()).tags if t == "a"]
    assert sorted(links) == ["alice/01/nb/feedback.html", "bob/01/nb/feedback.html"]


# --------------------------------------------------------------------------- hidden cases


def test_hidden_cases_show_their_parameters_only_when_the_instructor_allows():
    inputs = course_checks.make_inputs(BATCHED_1D)
    _, failed = judged(BATCHED_1D, flipped_1d(inputs), hidden=True)
    passed_case = course_checks.PUBLIC_CASES["ct1d_channels_batch"][1]
    reference = course_checks.make_inputs(passed_case)
    _, passed = judged(
        passed_case,
        {"output": F.conv_transpose1d(reference["input"], reference["weight"])},
        hidden=True,
    )
    assert passed.passed and not failed.passed
    results = results_json("ct1d_channels_batch")
    hidden_page = page_of(results, failed, passed)
    for call in (BATCHED_1D.describe(), passed_case.describe(), "(2, 2, 7)"):
        assert call not in hidden_page.all_text
    assert "largest absolute error" not in hidden_page.all_text
    assert hidden_page.images() == []
    assert "Hidden case 1 of 2: failed" in hidden_page.all_text
    assert failed.diagnosis and failed.diagnosis in hidden_page.all_text  # the likely bug stays
    shown = page_of(results, failed, passed, shows_hidden=True)
    assert BATCHED_1D.describe() in shown.all_text and passed_case.describe() in shown.all_text
    assert len(shown.images()) == 1


def test_a_page_from_results_alone_shows_hidden_calls_only_when_allowed():
    results = results_json("ct1d_basic")
    results["tests"][0]["extra_data"] = {"hidden_cases": ["[FAILED] conv_transpose1d(input (9,))"]}
    assert "input (9,)" not in Page(feedback.render_page(results, None)).all_text
    assert "input (9,)" in Page(feedback.render_page(results, None, shows_hidden=True)).all_text


def test_the_grade_option_reaches_the_grader():
    parser = cli.build_parser()
    assert not parser.parse_args(["grade", "s", "--out", "o"]).feedback_shows_hidden
    assert parser.parse_args(
        ["grade", "s", "--out", "o", "--feedback-shows-hidden"]
    ).feedback_shows_hidden


# --------------------------------------------------------------------------- size


def test_a_page_failing_everything_stays_small():
    """The caps: at most MAX_FIGURES_PER_TEST per test and MAX_FIGURES_PER_PAGE per page;
    every failed case without a figure says why."""
    inputs = course_checks.make_inputs(BATCHED_1D)
    _, failed = judged(BATCHED_1D, flipped_1d(inputs))
    names = [f"test_{n}" for n in range(10)]
    results = results_json(names[0])
    results["tests"] = [dict(results["tests"][0], name=name) for name in names]
    tests = [feedback.TestFeedback(name, "", [], [failed] * 4) for name in names]
    text = feedback.render_page(results, tests)
    assert len(Page(text).images()) == feedback.MAX_FIGURES_PER_PAGE
    sections = text.split("<section")[1:]
    per_test = [len(Page(section).images()) for section in sections]
    assert max(per_test) == feedback.MAX_FIGURES_PER_TEST
    assert per_test[-1] == 0, "the page's cap reached, the last tests draw nothing"
    without = Page(text).all_text.count("No figure: ")
    assert without == 10 * 4 - feedback.MAX_FIGURES_PER_PAGE
    assert len(text.encode()) < 150_000


# --------------------------------------------------------------------------- the grader


@pytest.mark.slow
def test_the_grader_writes_each_page_beside_its_results(tmp_path):
    """End to end: a corpus fixture graded twice, without and with the option."""
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    submitted = tmp_path / "submitted"
    shutil.copytree(REPO_ROOT / "tests/fixtures/submissions/partial_bias_ignored",
                    submitted / "partial_bias_ignored")  # fmt: skip
    pages = {}
    for option in ([], ["--feedback-shows-hidden"]):
        out = tmp_path / ("shown" if option else "default")
        run = subprocess.run(
            [sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(out),
             "--jobs", "1", "--progress", "never", *option],
            capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        (results_path,) = out.glob("partial_bias_ignored/*/*/results.json")
        results = json.loads(results_path.read_text(encoding="utf-8"))
        page = Page(results_path.with_name(feedback.PAGE_NAME).read_text(encoding="utf-8"))
        pages[bool(option)] = (results, page)
        index = Page((out / feedback.PAGE_NAME).read_text(encoding="utf-8"))
        links = [a["href"] for t, a in index.tags if t == "a"]
        assert links == [results_path.relative_to(out).with_name(feedback.PAGE_NAME).as_posix()]
    results, page = pages[False]
    hidden_calls = [
        line.split("] ", 1)[1].split(":", 1)[0]
        for test in results["tests"]
        for line in (test.get("extra_data") or {}).get("hidden_cases", [])
    ]
    # A hidden draw may repeat a public call: that one is on the page as the public case.
    public = {test["output"] for test in results["tests"]}
    hidden_calls = [call for call in hidden_calls if not any(call in text for text in public)]
    assert hidden_calls, "the fixture has hidden cases"
    for call in hidden_calls:
        assert call not in page.all_text
    assert page.images(), "its public bias cases fail with the right shape: figures"
    for image in page.images():
        png_of(image)
    _, shown = pages[True]
    assert any(call in shown.all_text for call in hidden_calls)
    assert len(shown.images()) >= len(page.images())


def test_a_results_file_the_page_cannot_read_still_gets_a_page():
    """An earlier run's results.json, mangled: the page says so, and grading goes on."""
    text = feedback.page_for({"tests": 5, "extra_data": {"student": HOSTILE}}, None)
    assert "could not be made" in Page(text).all_text
    assert "script" not in {tag for tag, _ in Page(text).tags}
