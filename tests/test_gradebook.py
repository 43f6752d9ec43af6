"""CI grades into nbgrader's gradebook (``import-grades``), and the Canvas export.

A small class, graded once by the real CI grader: alice (the instructor's answers), bob
(naive loops, and the untouched release for 03), carol (two partial answers, and a
symbolic link for 03, which the grader refuses: "not graded"). Its ``results.json`` files
go into a real ``gradebook.db`` in a temporary course directory; every expected number is
read from the grader's results, the release's nbgrader metadata or nbgrader itself.
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

from autograder.notebook import cell_source

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "submissions"
NOTEBOOKS = {
    "01_conv_transpose1d": "conv_transpose1d",
    "02_conv_transpose2d": "conv_transpose2d",
    "03_interpolate": "interpolate",
}
CLASS = {  # student -> assignment -> fixture submission
    "alice": dict.fromkeys(NOTEBOOKS, "instructor"),
    "bob": {
        "01_conv_transpose1d": "naive_loops",
        "02_conv_transpose2d": "naive_loops",
        "03_interpolate": "release_untouched",
    },
    "carol": {
        "01_conv_transpose1d": "partial_no_groups",
        "02_conv_transpose2d": "partial_no_dilation",
    },
}
LINKED = ("carol", "03_interpolate", "partial_nearest_only")  # refused: never graded
HAND_GRADE = 3.0  # what the TA gives every written answer in formgrader

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)


def autograder(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "autograder", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def nbgrader(*args: str, cwd: Path, env: dict[str, str]) -> str:
    env = dict(env, PYTHONPATH=str(REPO_ROOT))  # the exporter is imported by name
    run = subprocess.run(
        [str(VENV_BIN / "nbgrader"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, f"nbgrader {' '.join(args)}:\n{run.stdout}\n{run.stderr}"
    return run.stdout + run.stderr


def release_points(assignment: str) -> tuple[dict[str, float], dict[str, float]]:
    """The release's autograded and hand-graded points per grade_id, from its metadata."""
    path = REPO_ROOT / "exercises" / assignment / f"{NOTEBOOKS[assignment]}.ipynb"
    auto, manual = {}, {}
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade"):
            (manual if meta.get("solution") else auto)[meta["grade_id"]] = float(meta["points"])
    return auto, manual


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Path:
    """The class's ``submitted/`` graded by ``python -m autograder grade``: its ``--out``."""
    root = tmp_path_factory.mktemp("class")
    for student, work in CLASS.items():
        for assignment, fixture in work.items():
            folder = root / "submitted" / student / assignment
            folder.mkdir(parents=True)
            name = f"{NOTEBOOKS[assignment]}.ipynb"
            shutil.copyfile(FIXTURES / fixture / assignment / name, folder / name)
    student, assignment, fixture = LINKED
    name = f"{NOTEBOOKS[assignment]}.ipynb"
    (root / "submitted" / student / assignment).mkdir(parents=True)
    (root / "submitted" / student / assignment / name).symlink_to(
        FIXTURES / fixture / assignment / name
    )
    run = autograder("grade", "submitted", "--out", "out", "--jobs", "2", "--seed", "1", cwd=root)
    assert run.returncode == 0, run.stderr
    return root / "out"


def ci_results(out: Path) -> dict[tuple[str, str], dict]:
    """CI's graded results by (student, assignment), read from its results.json files."""
    found = {}
    for path in out.rglob("results.json"):
        results = json.loads(path.read_text(encoding="utf-8"))
        extra = results["extra_data"]
        if not extra.get("not_graded"):
            found[extra["student"], extra["assignment"]] = results
    return found


def course_dir(root: Path) -> Path:
    root.mkdir()
    shutil.copy(REPO_ROOT / "nbgrader_config.py", root)
    shutil.copytree(REPO_ROOT / "exercises", root / "exercises")
    return root


def import_grades(out: Path, course: Path, *extra: str) -> subprocess.CompletedProcess:
    db = f"sqlite:///{course / 'gradebook.db'}"
    run = autograder("import-grades", str(out), "--gradebook", db, *extra, cwd=course)
    assert run.returncode == 0, run.stderr
    return run


def gradebook(course: Path):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{course / 'gradebook.db'}", "transposed-convolutions")


@pytest.fixture(scope="module")
def imported(graded, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A fresh course directory whose gradebook got the class by one import."""
    course = course_dir(tmp_path_factory.mktemp("course") / "course")
    return course, import_grades(graded, course)


@pytest.fixture(scope="module")
def hand_graded(imported, graded) -> Path:
    """The TA grades every written answer in the gradebook, then CI's scores are imported
    again: the course directory."""
    course, _ = imported
    with gradebook(course) as gb:
        for submission in (s for a in gb.assignments for s in a.submissions):
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.cell.cell_type == "markdown":
                        grade.manual_score = HAND_GRADE
                        grade.needs_manual_grade = False
        gb.db.commit()
    import_grades(graded, course)
    return course


@pytest.mark.slow
def test_gradebook_scores_equal_the_ci_scores(graded, imported):
    course, run = imported
    results = ci_results(graded)
    assert len(results) == 8
    with gradebook(course) as gb:
        for (student, assignment), result in results.items():
            for test in result["tests"]:
                grade = gb.find_grade(test["name"], NOTEBOOKS[assignment], assignment, student)
                assert grade.auto_score == test["score"], (student, assignment, test["name"])
                assert grade.max_score == test["max_score"]
                assert not grade.needs_manual_grade
            submission = gb.find_submission(assignment, student)
            assert submission.code_score == result["score"]
        assert sorted(s.id for s in gb.students) == sorted(CLASS)
        assert sum(len(a.submissions) for a in gb.assignments) == 8
        from nbgrader.api import MissingEntry

        with pytest.raises(MissingEntry):  # carol's link was never graded: no score at all
            gb.find_submission("03_interpolate", "carol")
    assert "not imported: carol/03_interpolate" in run.stderr
    assert "not graded" in run.stderr and "symbolic link" in run.stderr


@pytest.mark.slow
def test_written_answers_wait_for_formgrader_with_the_release_points(graded, imported):
    """nbgrader's maximum is CI's plus the written answers' (100 + 5), and formgrader
    lists each written answer as needing a hand grade."""
    course, _ = imported
    results = ci_results(graded)
    with gradebook(course) as gb:
        for assignment in NOTEBOOKS:
            auto, manual = release_points(assignment)
            ci_max = results["alice", assignment]["extra_data"]["max_score"]
            assert ci_max == sum(auto.values())
            assert gb.find_assignment(assignment).max_score == ci_max + sum(manual.values())
            for grade_id in manual:
                grade = gb.find_grade(grade_id, NOTEBOOKS[assignment], assignment, "alice")
                assert grade.auto_score is None and grade.needs_manual_grade


@pytest.mark.slow
def test_a_hand_grade_survives_a_reimport(graded, hand_graded):
    results = ci_results(graded)
    with gradebook(hand_graded) as gb:
        for (student, assignment), result in results.items():
            _, manual = release_points(assignment)
            for grade_id in manual:
                grade = gb.find_grade(grade_id, NOTEBOOKS[assignment], assignment, student)
                assert grade.manual_score == HAND_GRADE and not grade.needs_manual_grade
            submission = gb.find_submission(assignment, student)
            assert submission.score == result["score"] + HAND_GRADE * len(manual)


@pytest.mark.slow
def test_a_changed_ci_score_keeps_the_hand_override_and_flags_it(graded, hand_graded, tmp_path):
    """A TA's override of an autograded cell stays when CI's score under it changes, and
    formgrader is told to look again; a result that does not fit the cells is refused."""
    course = tmp_path / "course"
    shutil.copytree(hand_graded, course)
    out = tmp_path / "out"
    shutil.copytree(graded, out)
    carol = next(p for p in out.rglob("results.json") if "carol" in p.parts and "01" in str(p))
    results = json.loads(carol.read_text(encoding="utf-8"))
    failed = next(t for t in results["tests"] if t["score"] == 0)
    with gradebook(course) as gb:
        grade = gb.find_grade(failed["name"], "conv_transpose1d", "01_conv_transpose1d", "carol")
        grade.manual_score = failed["max_score"] / 2  # the TA's partial credit
        gb.db.commit()
    failed["score"] = failed["max_score"]  # a regrade now passes it
    bob = next(p for p in out.rglob("results.json") if "bob" in p.parts and "01" in str(p))
    inflated = json.loads(bob.read_text(encoding="utf-8"))
    inflated["tests"][0]["max_score"] += 50
    carol.write_text(json.dumps(results), encoding="utf-8")
    bob.write_text(json.dumps(inflated), encoding="utf-8")
    run = import_grades(out, course, "--assignment", "01_conv_transpose1d")
    with gradebook(course) as gb:
        grade = gb.find_grade(failed["name"], "conv_transpose1d", "01_conv_transpose1d", "carol")
        assert grade.auto_score == failed["max_score"]
        assert grade.manual_score == failed["max_score"] / 2 and grade.needs_manual_grade
        first = inflated["tests"][0]["name"]
        bob_grade = gb.find_grade(first, "conv_transpose1d", "01_conv_transpose1d", "bob")
        assert bob_grade.max_score == inflated["tests"][0]["max_score"] - 50
    assert f"carol 01_conv_transpose1d {failed['name']}" in run.stdout
    assert "not imported: bob/01_conv_transpose1d" in run.stderr
    assert "imported 2 submissions" in run.stdout  # alice and carol; 02 and 03 left alone


def nbgrader_csv(course: Path, venv_env: dict[str, str]) -> dict[tuple[str, str], dict]:
    nbgrader("export", "--to", "nbgrader.csv", cwd=course, env=venv_env)
    with open(course / "nbgrader.csv", newline="", encoding="utf-8") as handle:
        return {(r["student_id"], r["assignment"]): r for r in csv.DictReader(handle)}


@pytest.mark.slow
def test_nbgrader_export_totals_are_ci_plus_hand_grades(graded, hand_graded, venv_env):
    exported = nbgrader_csv(hand_graded, venv_env)
    results = ci_results(graded)
    for (student, assignment), row in exported.items():
        auto, manual = release_points(assignment)
        assert float(row["max_score"]) == sum(auto.values()) + sum(manual.values())
        if (student, assignment) in results:
            expected = results[student, assignment]["score"] + HAND_GRADE * len(manual)
            assert float(row["score"]) == expected, (student, assignment)
        else:
            assert (student, assignment) == LINKED[:2] and float(row["score"]) == 0
    assert len(exported) == 9


@pytest.mark.slow
def test_canvas_export_is_canvas_gradebook_import_format(hand_graded, venv_env):
    """Canvas's columns and Points Possible row, one row per student, nbgrader's totals."""
    course = hand_graded
    exported = nbgrader_csv(course, venv_env)
    exporter = "autograder.canvas_export.CanvasExport"
    nbgrader("export", f"--exporter={exporter}", "--to", "canvas.csv", cwd=course, env=venv_env)
    with open(course / "canvas.csv", newline="", encoding="utf-8") as handle:
        header, points, *students = list(csv.reader(handle))
    assert header[:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    assignments = header[5:]
    assert sorted(assignments) == sorted(NOTEBOOKS)
    assert points[0].strip() == "Points Possible" and points[1:5] == ["", "", "", ""]
    with gradebook(course) as gb:
        maxima = {a.name: a.max_score for a in gb.assignments}
    assert [float(p) for p in points[5:]] == [maxima[a] for a in assignments]
    assert sorted(row[3] for row in students) == sorted(CLASS)  # nbgrader's id: SIS Login ID
    for row in students:
        assert len(row) == len(header)
        for assignment, cell in zip(assignments, row[5:], strict=True):
            if (row[3], assignment) == LINKED[:2]:
                assert cell == ""  # no submission: Canvas keeps what it has
            else:
                assert float(cell) == float(exported[row[3], assignment]["score"])


@pytest.mark.slow
def test_canvas_export_names_ids_and_assignment_ids(hand_graded, venv_env, tmp_path):
    """Names as Canvas sorts them, the Canvas user id, the SIS column and section chosen in
    nbgrader_config.py, assignment ids in the header, and no formula."""
    course = tmp_path / "course"
    shutil.copytree(hand_graded, course)
    with gradebook(course) as gb:
        gb.update_or_create_student("alice", first_name="Alice", last_name="Liddell")
        gb.update_or_create_student("bob", last_name="=HYPERLINK(1)", lms_user_id="4242")
    with open(course / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write(
            '\nc.CanvasExport.student_id_column = "SIS User ID"\n'
            'c.CanvasExport.section = "Lab 2"\n'
            'c.CanvasExport.missing_score = "0"\n'
            'c.CanvasExport.canvas_assignment_ids = {"01_conv_transpose1d": "981"}\n'
        )
    exporter = "autograder.canvas_export.CanvasExport"
    nbgrader("export", f"--exporter={exporter}", "--to", "canvas.csv", cwd=course, env=venv_env)
    with open(course / "canvas.csv", newline="", encoding="utf-8") as handle:
        header, _, *students = list(csv.reader(handle))
    assert "01_conv_transpose1d (981)" in header
    rows = {row[2]: row for row in students}
    assert rows["alice"][:5] == ["Liddell, Alice", "", "alice", "", "Lab 2"]
    assert rows["bob"][:2] == ["'=HYPERLINK(1)", "4242"]
    assert rows["carol"][header.index("03_interpolate")] == "0"


def cell_table(course: Path) -> list[tuple]:
    """Every grade and solution cell of the course's gradebook, as nbgrader's API gives them."""
    with gradebook(course) as gb:
        return sorted(
            (assignment.name, notebook.name, cell.name, kind)
            + (getattr(cell, "max_score", None), getattr(cell, "cell_type", None))
            for assignment in gb.assignments
            for notebook in assignment.notebooks
            for kind, cells in (
                ("grade", notebook.grade_cells),
                ("solution", notebook.solution_cells),
            )
            for cell in cells
        )


@pytest.mark.slow
def test_import_fits_the_gradebook_generate_assignment_made(graded, imported, tmp_path, venv_env):
    """Where the instructor ran ``nbgrader generate_assignment``, the import writes into
    its cells; where nobody did, it made the same grade and solution cells."""
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(REPO_ROOT / "nbgrader_config.py", course)
    shutil.copytree(REPO_ROOT / "solutions", course / "solutions", symlinks=False)
    nbgrader("generate_assignment", "*", cwd=course, env=venv_env)
    import_grades(graded, course)
    made_by_import, _ = imported
    cells = {root: cell_table(root) for root in (course, made_by_import)}
    assert cells[course] and cells[course] == cells[made_by_import]
    results = ci_results(graded)
    with gradebook(course) as gb:
        for (student, assignment), result in results.items():
            assert gb.find_submission(assignment, student).code_score == result["score"]


@pytest.mark.slow
def test_formgrader_shows_the_ci_scores_beside_the_written_answers(graded, tmp_path):
    """With ``--submitted``, formgrader's own API lists each graded submission as
    autograded with CI's score, its written answers waiting, and the notebook (outputs
    cleared, its timestamp kept) where formgrader opens it; carol's link stays ungraded."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    course = course_dir(tmp_path / "course")
    submitted = tmp_path / "submitted"
    shutil.copytree(graded.parent / "submitted", submitted, symlinks=True)
    stamp = "2026-12-01 10:00:00.000000 UTC"
    (submitted / "bob" / "01_conv_transpose1d" / "timestamp.txt").write_text(stamp)
    import_grades(graded, course, "--submitted", str(submitted))
    coursedir = CourseDirectory(root=str(course), submitted_directory=str(submitted))
    coursedir.course_id = "transposed-convolutions"
    api = NbGraderAPI(coursedir=coursedir)
    for (student, assignment), result in ci_results(graded).items():
        shown = api.get_submission(assignment, student)
        assert shown["autograded"] and shown["code_score"] == result["score"]
        assert shown["needs_manual_grade"] == bool(release_points(assignment)[1])
        name = f"{NOTEBOOKS[assignment]}.ipynb"
        placed = json.loads((course / "autograded" / student / assignment / name).read_text())
        original = json.loads((submitted / student / assignment / name).read_text())
        assert list(map(cell_source, placed["cells"])) == list(map(cell_source, original["cells"]))
        assert not any(c.get("outputs") for c in placed["cells"])
    assert api.get_submission("01_conv_transpose1d", "bob")["timestamp"].startswith("2026-12-01")
    assert not api.get_submission("03_interpolate", "carol")["autograded"]
