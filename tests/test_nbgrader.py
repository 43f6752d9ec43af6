"""nbgrader end to end: the release is what nbgrader generates, and the grades are right.

In a temporary course directory (a copy of ``nbgrader_config.py`` and ``solutions/``),
``nbgrader generate_assignment '*'`` must reproduce the committed ``exercises/``, and
``nbgrader autograde`` must give the instructor's answers, submitted as a student, all 100
automatic points of each assignment and the untouched release 0. Also: the points, the
test cells' docstrings and grade_ids, and that no answer line reaches ``exercises/`` or the
built book.
"""

from __future__ import annotations

import ast
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder.course_checks import GRADE_IDS, MANUAL_GRADE_IDS
from autograder.notebook import cell_source

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ASSIGNMENTS = {
    "01_conv_transpose1d": "conv_transpose1d",
    "02_conv_transpose2d": "conv_transpose2d",
    "03_interpolate": "interpolate",
}
COURSE_ID = "transposed-convolutions"
GRADING_SEED = "20261125"  # the hidden tests' seed: the same cases on every run
# A submission that writes to the process's stderr (file descriptor 2, below Python's
# sys.stderr) inside a graded call, as a C-level warning would: it must lose no point.
NOISY_LINE = '    os.write(2, b"UserWarning: a harmless warning on stderr\\n")\n'
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def nbgrader_meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_test_cell(cell: dict) -> bool:
    meta = nbgrader_meta(cell)
    return cell["cell_type"] == "code" and bool(meta.get("grade")) and not meta.get("solution")


def solution_notebook(assignment: str) -> Path:
    return REPO_ROOT / "solutions" / assignment / f"{ASSIGNMENTS[assignment]}.ipynb"


def nbgrader(*args: str, cwd: Path, env: dict[str, str]) -> str:
    """Run an nbgrader command in ``cwd``; fail the test with its log when it fails."""
    result = subprocess.run(
        [str(VENV_BIN / "nbgrader"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        pytest.fail(
            f"nbgrader {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def course(tmp_path_factory, venv_env) -> Path:
    """A fresh course directory holding the config and ``solutions/``, released by nbgrader.

    The copy follows the ``course_checks.py`` symlinks (as nbgrader itself does), so the
    release is generated from today's ``autograder/course_checks.py``.
    """
    root = tmp_path_factory.mktemp("course")
    shutil.copy(REPO_ROOT / "nbgrader_config.py", root)
    shutil.copytree(REPO_ROOT / "solutions", root / "solutions", symlinks=False)
    nbgrader("generate_assignment", "*", cwd=root, env=venv_env)
    return root


def noisy(notebook: dict) -> dict:
    """The instructor's notebook with a stderr write at the start of ``output_length``."""
    notebook = json.loads(json.dumps(notebook))
    for cell in notebook["cells"]:
        source = cell_source(cell)
        marker = "def output_length("
        if cell["cell_type"] == "code" and marker in source and BEGIN in source:
            head, tail = source.split(BEGIN, 1)
            cell["source"] = f"{head}{BEGIN}\n    import os\n\n{NOISY_LINE.rstrip()}{tail}"
            return notebook
    raise AssertionError("no output_length solution cell to make noisy")


@pytest.fixture(scope="session")
def autograded(course, venv_env) -> dict[tuple[str, str], dict[str, float]]:
    """Autograde three students once: ``instructor`` (the solutions), ``untouched`` (the
    release as handed out), ``noisy`` (assignment 1's solution writing to stderr).

    Returns {(assignment, student): {grade_id: auto_score}} for the autograded test cells,
    read back through nbgrader's Gradebook API.
    """
    from nbgrader.api import Gradebook

    submissions = {
        "instructor": {a: read(solution_notebook(a)) for a in ASSIGNMENTS},
        "untouched": {
            a: read(course / "exercises" / a / f"{nb}.ipynb") for a, nb in ASSIGNMENTS.items()
        },
        "noisy": {"01_conv_transpose1d": noisy(read(solution_notebook("01_conv_transpose1d")))},
    }
    for student, notebooks in submissions.items():
        for assignment, notebook in notebooks.items():
            folder = course / "submitted" / student / assignment
            folder.mkdir(parents=True)
            (folder / f"{ASSIGNMENTS[assignment]}.ipynb").write_text(json.dumps(notebook))
    nbgrader(
        "autograde",
        "*",
        "--create",
        cwd=course,
        env={**venv_env, "COURSE_GRADING_SEED": GRADING_SEED},
    )
    scores: dict[tuple[str, str], dict[str, float]] = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gradebook:
        for student, notebooks in submissions.items():
            for assignment in notebooks:
                submission = gradebook.find_submission(assignment, student)
                scores[assignment, student] = {
                    grade.name: grade.auto_score or 0.0
                    for notebook in submission.notebooks
                    for grade in notebook.grades
                    if grade.cell.cell_type == "code"
                }
    return scores


def test_release_reproduces_committed_exercises(course):
    """``exercises/`` is exactly what nbgrader generates from ``solutions/`` today."""
    generated = course / "exercises"
    committed = REPO_ROOT / "exercises"
    files = sorted(p.relative_to(generated) for p in generated.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file()), (
        "exercises/ holds other files than nbgrader generates; regenerate it"
    )
    for relative in files:
        if relative.suffix != ".ipynb":
            assert (generated / relative).read_bytes() == (committed / relative).read_bytes(), (
                f"exercises/{relative} differs from what nbgrader copies: run "
                "`nbgrader generate_assignment '*' --force` from the repository root"
            )
            continue
        new, old = read(generated / relative), read(committed / relative)
        assert len(new["cells"]) == len(old["cells"]), f"{relative}: the cells differ"
        for index, (a, b) in enumerate(zip(new["cells"], old["cells"], strict=True)):
            where = f"exercises/{relative}, cell {index + 1}"
            assert a["cell_type"] == b["cell_type"], where
            assert cell_source(a) == cell_source(b), f"{where}: the source differs; regenerate"
            assert nbgrader_meta(a) == nbgrader_meta(b), f"{where}: nbgrader metadata differ"
        assert new["metadata"].get("course") == old["metadata"].get("course")


def test_course_checks_ship_as_regular_files():
    """Each release folder holds ``course_checks.py`` itself, not a link into the repository."""
    for assignment in ASSIGNMENTS:
        shipped = REPO_ROOT / "exercises" / assignment / "course_checks.py"
        assert shipped.is_file() and not shipped.is_symlink(), shipped
        link = REPO_ROOT / "solutions" / assignment / "course_checks.py"
        assert link.is_symlink(), f"{link} must link to autograder/course_checks.py"
        assert link.resolve() == (REPO_ROOT / "autograder" / "course_checks.py").resolve()


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_instructor_answers_earn_100(autograded, assignment):
    scores = autograded[assignment, "instructor"]
    lost = {gid: score for gid, score in scores.items() if score < GRADE_IDS[gid].points}
    assert not lost, f"the instructor's answers lose points in {lost}"
    assert sum(scores.values()) == 100


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_untouched_release_earns_0(autograded, assignment):
    scores = autograded[assignment, "untouched"]
    assert set(scores) == {g for g, info in GRADE_IDS.items() if info.assignment == assignment}
    assert sum(scores.values()) == 0, {gid: s for gid, s in scores.items() if s}


@pytest.mark.slow
def test_stderr_output_costs_no_points(autograded, course):
    """A graded call that writes to stderr still earns the cell's points (nbgrader_config.py)."""
    autograded_notebook = read(
        course / "autograded" / "noisy" / "01_conv_transpose1d" / "conv_transpose1d.ipynb"
    )
    source = "".join(cell_source(c) for c in autograded_notebook["cells"])
    assert NOISY_LINE.strip() in source, "the noisy submission lost its stderr write"
    assert sum(autograded["01_conv_transpose1d", "noisy"].values()) == 100


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_points_follow_the_grading_plan(assignment):
    """Test cells and hand-graded answers carry the grade_ids and points of course_checks."""
    cells = read(solution_notebook(assignment))["cells"]
    tests = {
        nbgrader_meta(c)["grade_id"]: nbgrader_meta(c)["points"] for c in cells if is_test_cell(c)
    }
    planned = {g: info.points for g, info in GRADE_IDS.items() if info.assignment == assignment}
    assert tests == planned
    assert sum(tests.values()) == 100
    manual = {
        nbgrader_meta(c)["grade_id"]: nbgrader_meta(c)["points"]
        for c in cells
        if nbgrader_meta(c).get("grade") and nbgrader_meta(c).get("solution")
    }
    assert manual == {g: p for g, (a, p) in MANUAL_GRADE_IDS.items() if a == assignment}
    assert all(
        c["cell_type"] == "markdown" for c in cells if nbgrader_meta(c).get("grade_id") in manual
    )


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_test_cells_open_with_a_docstring_and_a_descriptive_id(assignment):
    notebook = read(solution_notebook(assignment))
    assert notebook["metadata"]["course"]["assignment"] == assignment
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    for cell in filter(is_test_cell, notebook["cells"]):
        grade_id = nbgrader_meta(cell)["grade_id"]
        assert re.fullmatch(r"(ct1d|ct2d|interp)_[a-z_]+", grade_id), grade_id
        first = ast.parse(cell_source(cell)).body[0]
        assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant), grade_id
        assert isinstance(first.value.value, str) and len(first.value.value) > 20, grade_id
        assert f'check("{grade_id}",' in cell_source(cell), grade_id
        assert f'check_hidden("{grade_id}",' in cell_source(cell), grade_id


def _between(source: str, begin: str, end: str) -> list[str]:
    lines, inside = [], False
    for line in source.splitlines():
        if line.strip() == begin:
            inside = True
        elif line.strip() == end:
            inside = False
        elif inside:
            lines.append(line.strip())
    return lines


# Idioms any torch code has: finding them in course_checks.py gives nothing away.
GENERIC_LINES = {"with torch.no_grad():", "super().__init__()"}
GENERIC_PATTERNS = [
    re.compile(r"[\w, ]+ = \w+\.shape(\[[\d:]+\])?"),  # N, C_in, W = x.shape
    re.compile(r"if \w+ is (not )?None:"),
    re.compile(r"(\w+)=\1,?"),  # passing an argument on: stride=stride,
]


def _telling(line: str) -> bool:
    """A line that would give something away: 20 characters or more, and not an idiom."""
    return (
        len(line) >= 20
        and line not in GENERIC_LINES
        and not any(pattern.fullmatch(line) for pattern in GENERIC_PATTERNS)
    )


def secret_lines() -> set[str]:
    """Every telling line of a solution block, a hidden test or a hand-graded answer."""
    lines: set[str] = set()
    for assignment in ASSIGNMENTS:
        for cell in read(solution_notebook(assignment))["cells"]:
            source = cell_source(cell)
            meta = nbgrader_meta(cell)
            lines.update(_between(source, BEGIN, END))
            lines.update(_between(source, BEGIN_HIDDEN, END_HIDDEN))
            if cell["cell_type"] == "markdown" and meta.get("solution"):
                lines.update(line.strip() for line in source.splitlines())
    return {line for line in lines if _telling(line)}


def test_secret_lines_are_found():
    """The leak check has something to look for, and its filter keeps real answer lines."""
    secrets = secret_lines()
    assert "from autograder.hidden_cases import check_hidden" in secrets
    assert any("repeat_interleave" in line for line in secrets)
    assert not _telling("else:") and not _telling(")") and not _telling("pass")
    assert _telling("y = y.reshape(N, C_out, s, count).transpose(2, 3)")
    assert not _telling("N, C_in, W = x.shape") and not _telling("C_out_g, w = weight.shape[1:]")
    assert not _telling("if bias is not None:") and not _telling("dilation=dilation,")
    assert _telling("last = (w - 1) * d // s")


def test_no_answer_line_in_exercises():
    secrets = secret_lines()
    leaks = {}
    for path in (REPO_ROOT / "exercises").rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".ipynb":
            text = "\n".join(cell_source(c) for c in read(path)["cells"])
        else:
            text = path.read_text(encoding="utf-8")
        present = {line.strip() for line in text.splitlines()} & secrets
        if present:
            leaks[str(path.relative_to(REPO_ROOT))] = sorted(present)[:5]
    assert not leaks, f"answer lines in the release: {leaks}"


def test_no_answer_line_in_built_book(built_book):
    site = built_book
    secrets = secret_lines()
    leaks = {}
    for page in site.rglob("*.html"):
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))
        present = {line.strip() for line in text.splitlines()} & secrets
        if present:
            leaks[str(page.relative_to(site))] = sorted(present)[:5]
    assert not leaks, f"answer lines in the built book: {leaks}"
