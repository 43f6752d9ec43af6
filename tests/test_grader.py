"""The CI grader end to end: ``python -m autograder grade|check|merge`` on generated notebooks.

The submissions are written here, in tmp_path: a small release notebook with four of the
course's real test cells (their cases come from ``course_checks`` and ``hidden_cases``),
answered by an independent plain-loop implementation (full marks), left as released
(0), or hostile (they read the hidden cases, write the output folder, exit, hang, allocate
50 GB, fork). When the course's own notebooks exist, the instructor's solutions must get
100 and the releases 0.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import notebook as nb
from autograder import static_scan

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "01_conv_transpose1d"
NOTEBOOK = "conv_transpose1d.ipynb"
HAS_BWRAP = shutil.which("bwrap") is not None

# The mini release: four real test cells of assignment 01 and its written question.
TESTS = {"ct1d_output_length": 10, "ct1d_basic": 10, "ct1d_stride": 10, "ct1d_output_padding": 5}
FULL = sum(TESTS.values())

OUTPUT_LENGTH = """\
def output_length(L, kernel_size, stride=1, padding=0, output_padding=0, dilation=1):
    if output_padding >= max(stride, dilation):
        raise ValueError("output_padding must be smaller than stride or dilation")
    length = (L - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if length <= 0:
        raise ValueError("the output would be empty")
    return length
"""

# Written from the definition (each x[i]·w[k] lands at output i·s + k·d − p), with a loop
# over every index: the slowest honest answer, which must still earn full marks.
CONV_TRANSPOSE1D = """\
import torch

def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    def one(value):
        return value[0] if isinstance(value, (tuple, list)) else value
    s, p, op, d = one(stride), one(padding), one(output_padding), one(dilation)
    if op >= max(s, d):
        raise ValueError("output_padding must be smaller than stride or dilation")
    unbatched = input.dim() == 2
    x = input[None] if unbatched else input
    batch, channels, length = x.shape
    _, out_per_group, width = weight.shape
    in_per_group = channels // groups
    full = (length - 1) * s + d * (width - 1) + op + 1
    out = x.new_zeros(batch, out_per_group * groups, full)
    for g in range(groups):
        for ci in range(in_per_group):
            for co in range(out_per_group):
                for k in range(width):
                    for i in range(length):
                        c_in, c_out = g * in_per_group + ci, g * out_per_group + co
                        out[:, c_out, i * s + k * d] = (
                            out[:, c_out, i * s + k * d] + x[:, c_in, i] * weight[c_in, co, k]
                        )
    out = out[:, :, p : full - p]
    if bias is not None:
        out = out + bias[None, :, None]
    return out[0] if unbatched else out
"""

RELEASED_OUTPUT_LENGTH = (
    "def output_length(L, kernel_size, stride=1, padding=0, output_padding=0, dilation=1):\n"
    "    # YOUR CODE HERE\n"
    "    raise NotImplementedError()\n"
)
RELEASED_CONV = (
    "def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,\n"
    "                     groups=1, dilation=1):\n"
    "    # YOUR CODE HERE\n"
    "    raise NotImplementedError()\n"
)


def _cell(kind: str, source: str, **nbgrader) -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": source}
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    if nbgrader:
        cell["metadata"]["nbgrader"] = dict(nbgrader, schema_version=3)
    return cell


def _test_cell(grade_id: str, points: int, target: str) -> dict:
    source = (
        f'"""{grade_id}: matches torch."""\n'
        "from course_checks import check\n\n"
        f'check("{grade_id}", {target})\n'
        "### BEGIN HIDDEN TESTS\n"
        "from autograder.hidden_cases import check_hidden\n\n"
        f'check_hidden("{grade_id}", {target})\n'
        "### END HIDDEN TESTS\n"
    )
    return _cell("code", source, grade=True, solution=False, grade_id=grade_id, points=points)


def release_notebook() -> dict:
    cells = [
        _cell("markdown", "# Transposed convolution in 1-d"),
        _cell("code", "import torch\nimport torch.nn.functional as F\n"),
        _cell("code", RELEASED_OUTPUT_LENGTH, grade=False, solution=True, grade_id="code_ol"),
        _test_cell("ct1d_output_length", 10, "output_length"),
        _cell("code", RELEASED_CONV, grade=False, solution=True, grade_id="code_ct"),
        _test_cell("ct1d_basic", 10, "conv_transpose1d"),
        _test_cell("ct1d_stride", 10, "conv_transpose1d"),
        _test_cell("ct1d_output_padding", 5, "conv_transpose1d"),
        _cell(
            "markdown",
            "YOUR ANSWER HERE",
            grade=True,
            solution=True,
            grade_id="ct1d_why_flipped",
            points=5,
        ),
    ]
    return {
        "cells": cells,
        "metadata": {"course": {"assignment": ASSIGNMENT}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def submission(
    output_length: str = OUTPUT_LENGTH, conv: str = CONV_TRANSPOSE1D, extra: str = ""
) -> dict:
    """A student's notebook: the release with its two solution cells filled in, an extra
    cell of the student's own before the tests, and a written answer."""
    notebook = release_notebook()
    notebook["cells"][2]["source"] = output_length
    notebook["cells"][4]["source"] = conv
    if extra:
        notebook["cells"].insert(5, _cell("code", extra))
    notebook["cells"][-1]["source"] = "The transposed matrix runs the band backwards."
    return notebook


def write_release(root: Path) -> Path:
    release = root / "release"
    folder = release / ASSIGNMENT
    folder.mkdir(parents=True)
    (folder / NOTEBOOK).write_text(json.dumps(release_notebook(), indent=1))
    return release


def write_submission(root: Path, student: str, notebook: dict | str) -> Path:
    path = root / "submitted" / student / ASSIGNMENT / NOTEBOOK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(notebook if isinstance(notebook, str) else json.dumps(notebook))
    return path


def grader(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "autograder", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def results(out: Path, student: str) -> dict:
    path = out / student / ASSIGNMENT / NOTEBOOK.removesuffix(".ipynb") / "results.json"
    return json.loads(path.read_text())


def scores(out: Path) -> dict[str, float]:
    with open(out / "grades.csv", newline="") as handle:
        return {row["student"]: float(row["score"]) for row in csv.DictReader(handle)}


# Hostile cells (each is one student's extra cell). They report what they managed through
# the score: a leak or a write that succeeds changes a visible number.
READ_SECRETS = """\
import pathlib
leaked = []
for path in {paths!r}:
    try:
        leaked.append(pathlib.Path(path).read_text()[:10])
    except OSError:
        pass
if leaked:  # only a submission that could read the secrets loses output_length
    del output_length
"""
WRITE_RESULTS = """\
import pathlib
for path in pathlib.Path({out!r}).rglob("results.json"):
    path.write_text('{{"score": 1000}}')
pathlib.Path({out!r}, "forged").mkdir(parents=True, exist_ok=True)
"""
FAKE_OUTPUT = 'print("All tests passed! Score: 100/100")\nimport sys\nsys.stderr.write("warn\\n")\n'
FORBIDDEN = (
    "import torch.nn.functional as F\n\n"
    "def conv_transpose1d(*args, **kwargs):\n"
    "    return F.conv_transpose1d(*args, **kwargs)\n"
)
INTERRUPT = "def conv_transpose1d(*args, **kwargs):\n    raise KeyboardInterrupt\n"


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict:
    """One bubblewrap batch of correct, released and hostile submissions (jobs=2)."""
    if not HAS_BWRAP:
        # CI installs it (.ci/run): there, its absence is a failure, not a reason to skip.
        if os.environ.get("CI"):
            pytest.fail(
                "bubblewrap is not installed; the Quick start's first line (.ci/setup.sh) "
                "should have installed it"
            )
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    root = tmp_path_factory.mktemp("batch")
    release = write_release(root)
    out = root / "out"
    secrets = [
        str(REPO_ROOT / "autograder" / "hidden_cases.py"),
        str(REPO_ROOT / "autograder" / "grading.py"),
        str(REPO_ROOT / "pyproject.toml"),
        # The job's own cases and inputs (the hidden ones too): the worker holds them
        # until the cells have run, and they never sit in the job folder.
        "../cases.json",
        "../inputs.safetensors",
    ]
    students = {
        "correct": submission(),
        "released": submission(RELEASED_OUTPUT_LENGTH, RELEASED_CONV),
        "reads_secrets": submission(extra=READ_SECRETS.format(paths=secrets)),
        "writes_results": submission(extra=WRITE_RESULTS.format(out=str(out))),
        "exits": submission(extra="import os\nos._exit(0)\n"),
        "sys_exit": submission(extra="import sys\nsys.exit(1)\n"),
        "interrupt": submission(conv=INTERRUPT),
        "memory_bomb": submission(
            extra="import torch\nblob = torch.ones(50 * 2**30, dtype=torch.uint8)\n"
        ),
        "forks": submission(
            extra="import os, time\nfor _ in range(20):\n    if os.fork() == 0:\n        time.sleep(600)\n"
        ),
        "fake_output": submission(extra=FAKE_OUTPUT),
        "forbidden": submission(conv=FORBIDDEN),
        "missing_function": submission(conv="x = 1\n"),
        "magic": submission(extra="%matplotlib inline\n!pip install torch\ny = 2\n"),
    }
    for student, notebook in students.items():
        write_submission(root, student, notebook)
    write_submission(root, "malformed", "{ this is not json")
    # Renamed test cells (their grade_ids changed): they run as the student's code, where
    # the hidden tests' import fails; the release's tests still grade the answer.
    renamed = submission()
    for cell in renamed["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            meta["grade_id"] += "_renamed"
            meta["points"] = 1000
    write_submission(root, "renamed_tests", renamed)
    # The instructor's check cells deleted and their points raised: the release decides.
    deleted = submission()
    deleted["cells"] = [c for c in deleted["cells"] if "check(" not in "".join(c["source"])]
    write_submission(root, "deleted_tests", deleted)

    done = grader(
        "grade", "submitted", "--out", str(out), "--release", str(release),
        "--jobs", "2", "--timeout", "90", "--sandbox", "bwrap", cwd=root,
    )  # fmt: skip
    return {"root": root, "release": release, "out": out, "run": done}


def test_batch_exit_status_and_scores(batch):
    """Grading worked (exit 0), and every submission got the score its behaviour earns."""
    run = batch["run"]
    assert run.returncode == 0, run.stderr
    got = scores(batch["out"])
    assert got == {
        "correct": FULL,
        "released": 0,
        "reads_secrets": FULL,  # could read nothing: output_length kept
        "writes_results": FULL,
        "exits": 0,
        "sys_exit": FULL,  # SystemExit in a cell is reported, the next cells run
        "interrupt": 10,  # output_length only: conv_transpose1d raised KeyboardInterrupt
        "memory_bomb": FULL,
        "forks": FULL,
        "fake_output": FULL,
        "forbidden": 10,
        "missing_function": 10,
        "magic": FULL,
        "malformed": 0,
        "renamed_tests": FULL,
        "deleted_tests": FULL,
    }


def test_results_json_schema(batch):
    """Gradescope's format: score, execution_time, output, tests with the five keys."""
    for student in ("correct", "exits", "malformed", "forbidden"):
        data = results(batch["out"], student)
        assert set(data) >= {"score", "execution_time", "output", "tests"}
        assert isinstance(data["score"], int | float) and data["execution_time"] >= 0
        assert [t["name"] for t in data["tests"]] == list(TESTS)
        for test in data["tests"]:
            assert set(test) >= {"name", "score", "max_score", "status", "output"}
            assert test["max_score"] == TESTS[test["name"]]
            assert test["status"] in ("passed", "failed")
            assert test["score"] == (test["max_score"] if test["status"] == "passed" else 0)
        assert data["score"] == sum(t["score"] for t in data["tests"])
        # The written question is listed for a human, never in the totals.
        assert "ct1d_why_flipped (5 points)" in data["output"]
        assert "bubblewrap" in data["output"]
    correct = results(batch["out"], "correct")
    assert "The transposed matrix runs the band backwards." in correct["output"]


def test_outputs_explain_failures(batch):
    """What was tried and what went wrong: the call, the kernel, the error, the cell."""
    out = batch["out"]
    forbidden = {t["name"]: t for t in results(out, "forbidden")["tests"]}
    assert "conv_transpose1d(input (1, 1, 4), weight (1, 1, 3)" in forbidden["ct1d_basic"]["output"]
    assert "aten::convolution" in forbidden["ct1d_basic"]["output"]
    assert "F.conv_transpose1d" in results(out, "forbidden")["output"]  # the static scan
    released = {t["name"]: t for t in results(out, "released")["tests"]}
    assert "NotImplementedError" in released["ct1d_basic"]["output"]
    assert "shape (1, 1, 6)" in released["ct1d_basic"]["output"]  # what torch returns
    assert "os._exit" in results(out, "exits")["output"]
    assert (
        "MemoryError" in results(out, "memory_bomb")["output"]
        or "allocate" in results(out, "memory_bomb")["output"]
    )
    assert "%matplotlib inline" in results(out, "magic")["output"]
    assert "not valid JSON" in results(out, "malformed")["output"]
    missing = {t["name"]: t for t in results(out, "missing_function")["tests"]}
    assert "does not define `conv_transpose1d`" in missing["ct1d_basic"]["output"]


def test_hostile_writes_change_nothing(batch):
    """The submission that rewrote every results.json it could find reached none."""
    out = batch["out"]
    assert not (out / "forged").exists()
    for path in out.rglob("results.json"):
        assert json.loads(path.read_text())["score"] != 1000


def test_grades_csv_and_summary(batch):
    out = batch["out"]
    with open(out / "grades.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["student", "assignment", "score", "max_score"]
    assert {row["assignment"] for row in rows} == {ASSIGNMENT}
    assert {float(row["max_score"]) for row in rows} == {FULL}
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# Autograder results")
    assert "| forbidden | 01_conv_transpose1d | 10 |" in summary
    assert "forbidden kernel reached" in summary
    assert "unreadable notebook" in summary


def test_resume_skips_unchanged_and_force_regrades(batch):
    """A second run grades nothing; a changed notebook is regraded; --force regrades all."""
    root, out, release = batch["root"], batch["out"], batch["release"]
    args = ["grade", "submitted", "--out", str(out), "--release", str(release)]
    before = results(out, "correct")
    again = grader(*args, cwd=root)
    assert again.returncode == 0, again.stderr
    assert "graded 0 notebooks, 16 unchanged" in again.stdout
    assert results(out, "correct") == before
    write_submission(root, "released", submission())  # the student resubmits, now correct
    changed = grader(*args, "--shard", "1/1", cwd=root)
    assert "graded 1 notebooks, 15 unchanged" in changed.stdout
    assert scores(out)["released"] == FULL


def test_shards_merge_and_force(batch, tmp_path):
    """--shard K/N splits by path, without overlap; merge joins the parts; --force regrades."""
    for student in ("correct", "exits", "malformed", "forbidden"):
        source = batch["root"] / "submitted" / student
        shutil.copytree(source, tmp_path / "submitted" / student)
    seen = []
    for k in (1, 2):
        part = tmp_path / f"shard{k}"
        run = grader(
            "grade", "submitted", "--out", str(part), "--release", str(batch["release"]),
            "--shard", f"{k}/2", cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        seen += [p.parent.relative_to(part) for p in part.rglob("results.json")]
    assert len(seen) == len(set(seen)) == 4
    first = len(list((tmp_path / "shard1").rglob("results.json")))
    forced = grader(
        "grade", "submitted", "--out", "shard1", "--release", str(batch["release"]),
        "--shard", "1/2", "--force", cwd=tmp_path,
    )  # fmt: skip
    assert f"graded {first} notebooks, 0 unchanged" in forced.stdout  # --force regrades
    merged = tmp_path / "merged"
    run = grader("merge", "shard1", "shard2", "--out", str(merged), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert scores(merged) == {"correct": FULL, "exits": 0, "malformed": 0, "forbidden": 10}
    assert len(list(merged.rglob("results.json"))) == 4
    assert "| correct | " in (merged / "summary.md").read_text()


def test_timeout_kills_the_sandbox_and_the_next_submission_is_graded(tmp_path):
    """An endless loop is stopped at --timeout; the restarted worker grades the next one."""
    release = write_release(tmp_path)
    write_submission(tmp_path, "a_loops", submission(extra="while True:\n    pass\n"))
    write_submission(tmp_path, "b_after", submission(conv=RELEASED_CONV))
    run = grader(
        "grade", "submitted", "--out", "out", "--release", str(release), "--jobs", "1",
        "--timeout", "10", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert scores(tmp_path / "out") == {"a_loops": 0, "b_after": 10}
    looped = results(tmp_path / "out", "a_loops")
    assert "timeout" in looped["output"] and "10 s" in looped["output"]
    assert looped["extra_data"]["timed_out"] is True


def test_sandbox_none_grades_a_trusted_class(tmp_path):
    """--sandbox none: the same worker, seccomp and limits; the same scores; the report says
    there was no sandbox (the grader's own choice is never this: it fails closed)."""
    release = write_release(tmp_path)
    write_submission(tmp_path, "correct", submission())
    write_submission(tmp_path, "exits", submission(extra="import os\nos._exit(3)\n"))
    write_submission(
        tmp_path, "memory_bomb", submission(extra="import torch\nb = torch.ones(2**36)\n")
    )
    job_files = READ_SECRETS.format(paths=["../cases.json", "../inputs.safetensors"])
    write_submission(tmp_path, "reads_job_files", submission(extra=job_files))
    run = grader(
        "grade", "submitted", "--out", "out", "--release", str(release), "--sandbox", "none",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert scores(tmp_path / "out") == {
        "correct": FULL,
        "exits": 0,
        "memory_bomb": FULL,
        "reads_job_files": FULL,  # the cases and inputs are never in the job folder
    }
    data = results(tmp_path / "out", "correct")
    assert data["extra_data"]["sandbox"] == "none"
    assert "NO SANDBOX (--sandbox none" in data["output"]


def test_sandbox_none_a_submission_cannot_rewrite_an_earlier_result(tmp_path):
    """Without bubblewrap, a submission that tries to write into --out changes no result."""
    release = write_release(tmp_path)
    out = tmp_path / "out"
    overwrite = (
        "import pathlib\n"
        f"for path in pathlib.Path({str(out)!r}).rglob('results.json'):\n"
        '    path.write_text(\'{"score": 0, "output": "overwritten", "tests": []}\')\n'
    )
    write_submission(tmp_path, "a_correct", submission())
    write_submission(tmp_path, "z_overwrites", submission(extra=overwrite))
    run = grader(
        "grade", "submitted", "--out", "out", "--release", str(release), "--sandbox", "none",
        "--jobs", "1", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    earlier = results(out, "a_correct")
    assert earlier["score"] == FULL and "overwritten" not in earlier["output"]
    assert scores(out)["a_correct"] == FULL


def test_check_is_the_public_self_check(tmp_path):
    """``check`` runs the public cases only, prints a report, and exits 1 on a failure."""
    release = write_release(tmp_path)
    good = write_submission(tmp_path, "good", submission())
    bad = write_submission(tmp_path, "bad", submission(conv=RELEASED_CONV))
    passed = grader("check", str(good), "--release", str(release), cwd=tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "PASS  ct1d_stride" in passed.stdout
    assert f"public checks: {FULL} / {FULL}" in passed.stdout
    failed = grader("check", str(bad), "--release", str(release), cwd=tmp_path)
    assert failed.returncode == 1
    assert "FAIL  ct1d_basic" in failed.stdout and "PASS  ct1d_output_length" in failed.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["grade", "nowhere", "--out", "out"],  # no such path
        ["grade", "empty", "--out", "out"],  # no notebook in it
        ["grade", "empty", "--out", "out", "--release", "empty"],  # no release
        ["grade", "submitted", "--out", "out", "--shard", "3/2"],
        ["grade", "submitted"],  # --out missing
        ["merge", "nowhere", "--out", "out"],
        ["grade", "README.md", "--out", "out"],  # not a notebook
        ["grade", "submitted", "--out", "out", "--timeout", "-5"],
        ["grade", "submitted", "--out", "out", "--timeout", "0"],
    ],
)
def test_exit_status_when_the_grader_cannot_run(tmp_path, args):
    write_release(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "README.md").write_text("# not a notebook\n")
    write_submission(tmp_path, "someone", submission())
    if "--release" not in args and args[0] == "grade":
        args += ["--release", str(tmp_path / "release")]
    run = grader(*args, cwd=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip()
    assert not (tmp_path / "out").exists()  # nothing recorded


def test_static_scan_reports_forbidden_routes():
    source = (
        "import torch.nn.functional as F\n"
        "from torch.nn.functional import interpolate as resize\n"
        "def interpolate(input, size=None):\n"
        "    return torch.ops.aten.upsample_nearest1d.default(input, [size])\n"
        "up = getattr(F, 'grid_sample')\n"
        "layer = torch.nn.ConvTranspose2d(1, 1, 3)\n"
    )
    found = {(f.line, f.name) for f in static_scan.scan_source(source, "cell 1")}
    assert (2, "torch.nn.functional.interpolate") in found
    assert (4, "torch.ops.aten.upsample_nearest1d.default") in found
    assert (5, "grid_sample") in found
    assert (6, "torch.nn.ConvTranspose2d") in found
    assert not any(line == 3 for line, _ in found)  # the student's own `interpolate`
    clean = "def conv_transpose1d(x, w):\n    return torch.nn.functional.conv1d(x, w)\n"
    assert static_scan.scan_cells([nb.CodeCell("cell 2", clean)]) == []


def _course_notebooks() -> list[tuple[Path, Path]]:
    pairs = []
    for release in sorted((REPO_ROOT / "exercises").glob("*/*.ipynb")):
        solution = REPO_ROOT / "solutions" / release.parent.name / release.name
        if solution.is_file():
            pairs.append((solution, release))
    return pairs


@pytest.mark.slow
@pytest.mark.skipif(not _course_notebooks(), reason="the course's notebooks are not generated yet")
def test_course_notebooks_instructor_full_marks_release_zero(tmp_path):
    """The instructor's solutions score 100 and the releases 0, through the real release."""
    submitted = tmp_path / "submitted"
    expected = {}
    for solution, release in _course_notebooks():
        assignment = release.parent.name
        for student, source in (("instructor", solution), ("unanswered", release)):
            target = submitted / student / assignment / release.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            total = sum(cell.points for cell in nb.test_cells(nb.read_notebook(release)))
            expected[(student, assignment)] = total if student == "instructor" else 0
    run = grader("grade", str(submitted), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "out" / "grades.csv", newline="") as handle:
        got = {(r["student"], r["assignment"]): float(r["score"]) for r in csv.DictReader(handle)}
    assert got == expected
    assert all(value == 100 for key, value in expected.items() if key[0] == "instructor")


def _test_outputs(out: Path) -> dict[str, list[str]]:
    """Every result's per-test outputs and hidden cases' calls (kept apart from the output,
    which shows students no hidden call): together they name every case's parameters."""
    found = {}
    for path in sorted(out.rglob("results.json")):
        data = json.loads(path.read_text())
        found[data["extra_data"]["student"]] = [
            (t["output"], t.get("extra_data", {}).get("hidden_cases")) for t in data["tests"]
        ]
    return found


def test_same_notebook_same_score_in_every_run_and_shard(tmp_path):
    """The term's seeds: two runs and two shards grade the same hidden cases; merge refuses
    shards graded with other seeds."""
    release = write_release(tmp_path)
    write_submission(tmp_path, "correct", submission())
    # Right on the visible cases only where output_padding is 0: the hidden ones decide.
    wrong = CONV_TRANSPOSE1D.replace("if op >= max(s, d):", "if op >= s:")
    write_submission(tmp_path, "partial", submission(conv=wrong))
    common = ["--release", str(release), "--jobs", "1"]
    for out in ("run1", "run2"):
        run = grader("grade", "submitted", "--out", out, *common, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
    for k in (1, 2):
        run = grader("grade", "submitted", "--out", f"s{k}", "--shard", f"{k}/2", *common,
                     cwd=tmp_path)  # fmt: skip
        assert run.returncode == 0, run.stderr
    merged = grader("merge", "s1", "s2", "--out", "merged", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    first = _test_outputs(tmp_path / "run1")
    assert set(first) == {"correct", "partial"}
    assert any(hidden for _, hidden in first["correct"]), "no hidden case to compare"
    assert first == _test_outputs(tmp_path / "run2") == _test_outputs(tmp_path / "merged")
    assert scores(tmp_path / "run1") == scores(tmp_path / "merged")
    data = results(tmp_path / "run1", "correct")
    assert data["extra_data"]["term"] and "seed" not in data["extra_data"]
    other = grader("grade", "submitted", "--out", "seed7", "--seed", "7", *common, cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert _test_outputs(tmp_path / "seed7") != first  # the comparison sees another seed
    refused = grader("merge", "run1", "seed7", "--out", "mixed", cwd=tmp_path)
    assert refused.returncode == 2 and "differently" in refused.stderr, refused.stderr


def test_needs_a_look_lists_cell_errors_blank_notebooks_and_timeouts(tmp_path):
    """The summary sends a TA to the notebooks that need one, naming a cell by its first line."""
    release = write_release(tmp_path)
    write_submission(tmp_path, "blank", release_notebook())
    write_submission(tmp_path, "raises", submission(extra="import torch\ntorch.frobnicate()\n"))
    write_submission(tmp_path, "loops", submission(extra="while True:\n    pass\n"))
    write_submission(tmp_path, "honest", submission())
    run = grader(
        "grade", "submitted", "--out", "out", "--release", str(release), "--timeout", "15",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = (tmp_path / "out" / "summary.md").read_text()
    look = summary.split("## Needs a look", 1)[1]
    rows = {line.split("|")[1].strip(): line for line in look.splitlines() if line.count("|") > 4}
    assert "blank" in rows.get("blank", ""), look
    assert "raised an error" in rows.get("raises", ""), look
    assert "timed out" in rows.get("loops", ""), look
    assert "honest" not in rows, look
    output = results(tmp_path / "out", "raises")["output"]
    assert "(import torch) raised (the next cells still ran)" in output, output
