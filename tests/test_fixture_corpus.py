"""The CI grader against the corpus of honest and hostile submissions (``tests/fixtures``).

The whole corpus is graded in ONE batch, as a class would be (``python -m autograder grade
... --jobs 2``), so that a submission that crashes, hangs, kills or writes where it should
not is graded side by side with the others. Each fixture's score and test outputs are then
checked against ``tests/fixtures/expected_scores.json``, written by hand from what each
submission deserves; and the batch must have changed nothing outside its ``--out`` folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SUBMISSIONS = FIXTURES / "submissions"
EXPECTED = json.loads((FIXTURES / "expected_scores.json").read_text(encoding="utf-8"))
CASES = [
    (fixture, assignment)
    for fixture, by_assignment in EXPECTED.items()
    if not fixture.startswith("_")
    for assignment in by_assignment
]

#: The points of every test cell, from the grading plan (not from the grader's code).
PLAN_POINTS = {
    "01_conv_transpose1d": {
        "ct1d_output_length": 10, "ct1d_matrix": 10, "ct1d_basic": 10,
        "ct1d_channels_batch": 10, "ct1d_unbatched": 5, "ct1d_stride": 10, "ct1d_padding": 5,
        "ct1d_output_padding": 5, "ct1d_dilation": 5, "ct1d_groups": 5, "ct1d_bias": 5,
        "ct1d_dtypes": 5, "ct1d_gradients": 5, "ct1d_module": 10,
    },
    "02_conv_transpose2d": {
        "ct2d_basic": 10, "ct2d_channels_batch": 10, "ct2d_unbatched": 5, "ct2d_stride": 10,
        "ct2d_padding": 10, "ct2d_output_padding": 5, "ct2d_dilation": 10, "ct2d_groups": 10,
        "ct2d_bias": 5, "ct2d_dtypes": 5, "ct2d_gradients": 5, "ct2d_coverage_map": 15,
    },
    "03_interpolate": {
        "interp_nearest_size": 10, "interp_nearest_scale": 10, "interp_linear": 10,
        "interp_bilinear_size": 10, "interp_bilinear_scale": 10, "interp_align_corners": 10,
        "interp_recompute_scale_factor": 5, "interp_dtypes": 5, "interp_gradients": 10,
        "interp_resize_conv": 10, "interp_bicubic": 5, "interp_nearest_exact": 5,
    },
}  # fmt: skip


def tree_state(root: Path) -> dict[str, str]:
    """A digest of every file under ``root`` (paths relative to it), caches excluded."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            state[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def tracked_state() -> dict[str, str]:
    """A digest of every file git tracks, as it is in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    state = {}
    for name in filter(None, listed.split("\0")):
        path = REPO_ROOT / name
        state[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
    return state


def planted_files() -> set[Path]:
    """Files named like the ones writes_results plants, anywhere in the repository."""
    found = set()
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if name not in (".git", ".venv", "_build")]
        found.update(Path(folder) / name for name in files if "PWNED" in name)
    return found


@dataclass
class GradedCorpus:
    out: Path
    process: subprocess.CompletedProcess
    fixtures_before: dict[str, str]
    fixtures_after: dict[str, str]
    tracked_before: dict[str, str]
    tracked_after: dict[str, str]
    stray_files: list[str]

    def results(self, fixture: str, assignment: str) -> dict:
        found = sorted((self.out / fixture / assignment).glob("*/results.json"))
        assert len(found) == 1, f"expected one results.json for {fixture}/{assignment}: {found}"
        return json.loads(found[0].read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def graded_corpus(tmp_path_factory, venv_env) -> GradedCorpus:
    out = tmp_path_factory.mktemp("graded_corpus")
    fixtures_before, tracked_before = tree_state(FIXTURES), tracked_state()
    marker_before = planted_files()
    process = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(SUBMISSIONS), "--out", str(out)]
        + ["--jobs", "2", "--progress", "never"],
        cwd=REPO_ROOT,
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    stray = sorted(str(p) for p in planted_files() - marker_before)
    return GradedCorpus(
        out,
        process,
        fixtures_before,
        tree_state(FIXTURES),
        tracked_before,
        tracked_state(),
        stray,
    )


def test_the_committed_corpus_is_what_the_builder_builds(venv_env):
    """The corpus follows the release: regenerate it with ``build_corpus.py`` when it changes."""
    result = subprocess.run(
        [sys.executable, str(FIXTURES / "build_corpus.py"), "--check"],
        cwd=REPO_ROOT,
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        "tests/fixtures/submissions differs from what tests/fixtures/build_corpus.py builds "
        f"(run it to regenerate):\n{result.stdout}{result.stderr}"
    )


def test_every_fixture_has_an_expectation_and_every_expectation_a_fixture():
    on_disk = {(path.parts[-3], path.parts[-2]) for path in SUBMISSIONS.glob("*/*/*.ipynb")}
    assert on_disk == set(CASES)


def test_the_corpus_notebooks_carry_no_outputs():
    for path in sorted(SUBMISSIONS.glob("*/*/*.ipynb")):
        try:
            notebook = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue  # the malformed fixtures
        cells = notebook.get("cells") if isinstance(notebook, dict) else None
        for cell in cells if isinstance(cells, list) else []:
            assert not cell.get("outputs"), f"{path} has outputs"


@pytest.mark.slow
def test_the_batch_ran_and_wrote_its_reports(graded_corpus):
    process = graded_corpus.process
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert (graded_corpus.out / "summary.md").is_file()
    with open(graded_corpus.out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(CASES)
    for fixture, assignment in CASES:
        results = graded_corpus.results(fixture, assignment)
        mine = [row for row in rows if (row["student"], row["assignment"]) == (fixture, assignment)]
        assert mine, f"no grades.csv row for {fixture}/{assignment}"
        assert {float(row["score"]) for row in mine} == {float(results["score"])}


@pytest.mark.slow
def test_the_batch_changed_nothing_outside_its_output_folder(graded_corpus):
    changed = sorted(
        name
        for name in graded_corpus.fixtures_before.keys() | graded_corpus.fixtures_after.keys()
        if graded_corpus.fixtures_before.get(name) != graded_corpus.fixtures_after.get(name)
    )
    assert not changed, f"tests/fixtures changed during the batch: {changed}"
    tracked = sorted(
        name
        for name in graded_corpus.tracked_before
        if graded_corpus.tracked_before[name] != graded_corpus.tracked_after.get(name)
    )
    assert not tracked, f"tracked files changed during the batch: {tracked}"
    assert not graded_corpus.stray_files, (
        f"files written by a submission: {graded_corpus.stray_files}"
    )


@pytest.mark.slow
def test_a_submission_writing_results_gains_nothing(graded_corpus):
    """writes_results tried to overwrite every results.json it could find with a perfect score:
    its own results are the grader's, and every other fixture's score is checked below."""
    results = graded_corpus.results("writes_results", "01_conv_transpose1d")
    assert results["score"] == 0
    assert {test["name"] for test in results["tests"]} == set(PLAN_POINTS["01_conv_transpose1d"])
    planted = [p for p in graded_corpus.out.rglob("*") if "PWNED" in p.name]
    assert not planted, f"files planted in the output folder: {planted}"
    assert not (graded_corpus.out / "results.json").exists(), "a results.json at the top of --out"
    for path in graded_corpus.out.rglob("results.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data.get("tests"), f"{path} holds no tests: not written by the grader"


@pytest.mark.slow
@pytest.mark.parametrize(("fixture", "assignment"), CASES, ids=[f"{f}/{a}" for f, a in CASES])
def test_fixture_score(graded_corpus, fixture, assignment):
    expected = EXPECTED[fixture][assignment]
    results = graded_corpus.results(fixture, assignment)
    points = PLAN_POINTS[assignment]
    tests = {test["name"]: test for test in results.get("tests", [])}
    where = f"{fixture}/{assignment} ({expected['why']})"
    report = "\n".join(
        f"  {name}: {test['score']}/{test['max_score']} {test['output'][:300]!r}"
        for name, test in tests.items()
    )

    if tests or expected["score"] != 0:
        # The release's tests and points, whatever the notebook says.
        assert set(tests) == set(points), f"{where}: tests {sorted(tests)}"
        for name, test in tests.items():
            assert test["max_score"] == points[name], f"{where}: {name} max_score"
            assert test["score"] in (0, points[name]), f"{where}: {name} scored {test['score']}"
    full = set(points) if expected["full"] == "all" else set(expected["full"])
    zero = set(points) if expected["zero"] == "all" else set(expected["zero"])
    for name in full:
        assert tests[name]["score"] == points[name], f"{where}: {name} lost its points\n{report}"
    for name in zero & set(tests):
        assert tests[name]["score"] == 0, f"{where}: {name} earned points\n{report}"

    score = results["score"]
    assert score == sum(test["score"] for test in tests.values())
    if isinstance(expected["score"], list):
        low, high = expected["score"]
        assert low <= score <= high, f"{where}: score {score}, expected {low}..{high}\n{report}"
    else:
        assert score == expected["score"], f"{where}: score {score}\n{report}"

    for name, texts in expected.get("output", {}).items():
        output = results.get("output", "") if name == "*" else tests[name]["output"]
        for text in texts:
            assert text in output, f"{where}: {text!r} not in the output of {name}:\n{output}"
