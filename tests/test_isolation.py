"""A hostile reviewer's attacks on the grader, graded end to end (tests/fixtures/sources/).

Each attack broke the grader before the fix its test names: one job leaving the next the
cases (the zygote kept the cases' pipe; System V shared memory), one job costing others
their grade (descriptors held in flight; a full disk), files that crashed or hung the
trusted grader, and torch's decompositions cloned where the static scan could not see them.
The notebooks are built from the corpus's sources with its builder, in a layout that puts
each pair on one worker in order (``--jobs 1`` grades in path order).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "fixtures"))
import build_corpus  # noqa: E402

from tests.test_grader import grader  # noqa: E402

A1, A3 = "01_conv_transpose1d", "03_interpolate"

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)


def build(root: Path, student: str, assignment: str, base: str, source: str | None = None):
    """``student``'s notebook: the release or the instructor's, plus an attack's cells."""
    fixture = build_corpus.Fixture(student, assignment, base=base, source=source and f"{source}.py")
    path = root / fixture.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build_corpus.build_notebook(fixture))
    return path


def grade(root: Path, *options: str) -> tuple[dict[str, dict[str, str]], str]:
    """grades.csv by student and assignment, and summary.md."""
    out = root.parent / "out"
    done = grader("grade", str(root), "--out", str(out), *options, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    with open(out / "grades.csv", newline="") as handle:
        rows: dict[str, dict[str, str]] = {}
        for row in csv.DictReader(handle):
            rows.setdefault(row["student"], {})[row["assignment"]] = row["score"]
    return rows, (out / "summary.md").read_text(encoding="utf-8")


def test_a_job_leaves_the_next_no_case(tmp_path):
    """Before: the leaker's descriptors in flight made the zygote keep the cases' pipe, and
    the reader (the untouched release) forged its results from it: 100. Shared memory
    carried the cases the same way. Now every reader finds nothing and gets 0."""
    root = tmp_path / "submitted"
    build(root, "a1_leaker", A1, "release", "attack_state_leaks_cases_pipe")
    build(root, "a2_reader", A1, "release", "attack_state_reads_leaked_cases")
    build(root, "b1_recorder", A1, "release", "attack_state_sysv_records_cases")
    build(root, "b2_user", A1, "release", "attack_state_sysv_uses_cases")
    rows, _ = grade(root, "--jobs", "1")
    assert rows == {
        name: {A1: "0"} for name in ("a1_leaker", "a2_reader", "b1_recorder", "b2_user")
    }


def test_files_the_submission_writes_never_stop_the_grader(tmp_path):
    """Before: a case log linked to trace_pipe hung the grader for good; a 200,000-deep
    JSON line and a key "²/output" turned the release's 0 into "not graded"."""
    root = tmp_path / "submitted"
    for name in (
        "attack_output_symlink_blocks_grader",
        "attack_output_nested_json",
        "attack_output_digit_key",
    ):
        build(root, name, A1, "release", name)
    build(root, "honest", A1, "instructor")
    rows, _ = grade(root, "--jobs", "1")
    assert rows.pop("honest") == {A1: "100"}
    assert all(scores == {A1: "0"} for scores in rows.values()), rows


@pytest.mark.skipif(os.geteuid() != 0, reason="a disk of its own per slot needs root (mount)")
def test_one_submission_costs_no_one_else_their_grade(tmp_path):
    """Before: descriptors held in flight until the timeout, or a disk filled, gave the
    honest notebooks graded beside them 0. Now they keep their 100."""
    root = tmp_path / "submitted"
    build(root, "a_starver", A1, "release", "attack_state_inflight_starves_others")
    build(root, "b_filler", A1, "release", "attack_resources_fills_disk")
    honest = [f"victim_{n}" for n in range(4)]
    for name in honest:
        build(root, name, A1, "instructor")
    rows, summary = grade(root, "--jobs", "2", "--timeout", "40")
    assert {name: rows[name] for name in honest} == {name: {A1: "100"} for name in honest}
    assert rows["a_starver"] == rows["b_filler"] == {A1: "0"}
    assert "timed out" in summary


def test_cloned_decompositions_need_a_look(tmp_path):
    """torch's own interpolation, its decompositions cloned with every telling name built
    from pieces: the guard does not see it (the README says so) and the static scan now
    puts it under "needs a look" (before: "Nothing unusual")."""
    root = tmp_path / "submitted"
    build(root, "cloner", A3, "instructor", "attack_guard_decomposition_copy")
    _, summary = grade(root, "--jobs", "1")
    look = summary.split("## Needs a look", 1)[1].split("\n## ", 1)[0]
    assert "cloner" in look and "Nothing unusual" not in look
    results = next((tmp_path / "out" / "cloner").rglob("results.json"))
    reasons = json.loads(results.read_text())["extra_data"]["needs_a_look"]
    assert any("code object rewritten" in reason for reason in reasons)


def test_the_runner_calls_nothing_the_cells_can_rebind_before_the_guard(tmp_path):
    """A second hostile review: the cell thread reached the main thread's frame, replaced the
    runner's global ``gc`` with an object whose ``disable()`` read every case before the
    guard was armed and answered them with convolution backward: 70/100, nothing flagged.
    Now the runner's path from the wait to the guard uses its frame's own locals, the route
    is refused in the graded calls, and reaching the runner's frames needs a look."""
    root = tmp_path / "submitted"
    build(root, "rebinder", A1, "release", "attack_stage_pre_guard_global_hook")
    rows, summary = grade(root, "--jobs", "1")
    assert rows == {"rebinder": {A1: "0"}}
    look = summary.split("## Needs a look", 1)[1].split("\n## ", 1)[0]
    assert "rebinder" in look
