"""A class of 8 students x 3 assignments, from the students' hands to recorded grades.

The path an instructor takes with nbgrader's exchange, in a temporary root: the release
goes out (``nbgrader release_assignment``), each student fetches it, writes an answer and
submits it, the instructor collects; the CI grader grades ``submitted/``, its scores go into
nbgrader's gradebook, a TA grades the written answers there, and ``nbgrader export``'s totals
are CI's scores plus the TA's. The same notebooks then go through the Gradescope bundle's
``run_autograder``, and the similarity report finds the one disguised copy in the class.

The class: alice hands in the instructor's answers, bob the corpus's naive loops, heidi a
disguised copy of bob's first answer (and the untouched release for the others), and carol,
dave, erin, frank and grace answers written independently of all of those, complete or not
(``tests/fixtures/class/``, each file's header says what it gets right).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import grading, similarity
from tests.test_gradebook import NOTEBOOKS, autograder, gradebook, release_points
from tests.test_similarity import _add_copy, answer_notebook

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CORPUS = REPO_ROOT / "tests" / "fixtures" / "submissions"
INDEPENDENT = REPO_ROOT / "tests" / "fixtures" / "class"
COURSE_ID = "transposed-convolutions"
ASSIGNMENTS = list(NOTEBOOKS)
CORPUS_WORK = {  # student -> assignment -> corpus fixture
    "alice": dict.fromkeys(ASSIGNMENTS, "instructor"),
    "bob": dict.fromkeys(ASSIGNMENTS, "naive_loops"),
    "heidi": {"02_conv_transpose2d": "release_untouched", "03_interpolate": "release_untouched"},
}
COPIER, COPIED = "heidi", "bob"  # heidi's 01 is bob's, disguised
WRITERS = ("carol", "dave", "erin", "frank", "grace")  # tests/fixtures/class/<student>/
STUDENTS = sorted([*CORPUS_WORK, *WRITERS])
HAND_GRADE = 2.0  # what the TA gives each written answer

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)


def exchange_step(step: str, assignment: str, folder: Path, exchange: Path, **course) -> None:
    """One of nbgrader's exchange steps (``ExchangeReleaseAssignment``, ``...FetchAssignment``,
    ``...Submit``, ``...Collect``), run through nbgrader's own exchange classes, as its
    commands run them, in ``folder`` (the course's, or a student's home)."""
    from nbgrader import exchange as nbgrader_exchange
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    settings = Config()
    settings.CourseDirectory.course_id = COURSE_ID
    settings.CourseDirectory.root = str(folder)
    for key, value in course.items():
        settings.CourseDirectory[key] = value
    settings.Exchange.root = str(exchange)
    settings.Exchange.assignment_dir = str(folder)
    coursedir = CourseDirectory(config=settings)
    coursedir.assignment_id = assignment
    kind = getattr(nbgrader_exchange.default, f"Exchange{step}")
    with pytest.MonkeyPatch.context() as patch:  # collect makes the gradebook: alembic
        patch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        kind(coursedir=coursedir, authenticator=Authenticator(config=settings), config=settings).start()  # fmt: skip


@contextlib.contextmanager
def signed_in_as(student: str):
    """nbgrader names the submitting student by the OS account (``pwd``); one machine
    account stands for eight students here, so the student's name replaces it meanwhile."""
    import nbgrader.utils

    account = nbgrader.utils.get_osusername
    nbgrader.utils.get_osusername = lambda: student
    try:
        yield
    finally:
        nbgrader.utils.get_osusername = account


def nbgrader(*args: str, cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # nbgrader calls alembic
    run = subprocess.run(
        [str(VENV_BIN / "nbgrader"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, f"nbgrader {' '.join(args)}:\n{run.stdout}\n{run.stderr}"
    return run.stdout + run.stderr


def _sections(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [part.strip("\n") + "\n" for part in re.split(r"^# %%\n", text, flags=re.M)[1:]]


def write_answer(student: str, assignment: str, fetched: Path, scratch: Path) -> None:
    """Put ``student``'s answer into the notebook they fetched (as they would in Jupyter)."""
    name = f"{NOTEBOOKS[assignment]}.ipynb"
    target = fetched / name
    if student in WRITERS:
        source = INDEPENDENT / student / f"{assignment}.py"
        assert source.is_file(), f"the class fixture {source} is missing"
        notebook = answer_notebook(target, _sections(source))
        target.write_text(json.dumps(notebook), encoding="utf-8")
    elif student == COPIER and assignment == ASSIGNMENTS[0]:
        copy = _add_copy(scratch, student)  # the naive loops' notebook, disguised
        shutil.copyfile(copy, target)
    else:
        shutil.copyfile(CORPUS / CORPUS_WORK[student][assignment] / assignment / name, target)


@pytest.fixture(scope="module")
def term(tmp_path_factory) -> Path:
    """A term, run through nbgrader's exchange: the course directory after ``collect``."""
    root = tmp_path_factory.mktemp("term")
    exchange, course = root / "exchange", root / "course"
    exchange.mkdir(mode=0o777)
    os.chmod(exchange, 0o777)  # the exchange is shared by every account
    course.mkdir()
    shutil.copytree(REPO_ROOT / "exercises", course / "exercises")
    shutil.copy(REPO_ROOT / "nbgrader_config.py", course)  # for export, below
    settings = {"release_directory": "exercises"}
    for assignment in ASSIGNMENTS:
        exchange_step("ReleaseAssignment", assignment, course, exchange, **settings)
    for student in STUDENTS:
        home = root / "home" / student
        home.mkdir(parents=True)
        with signed_in_as(student):
            for assignment in ASSIGNMENTS:
                exchange_step("FetchAssignment", assignment, home, exchange)
                write_answer(student, assignment, home / assignment, root / "scratch")
                exchange_step("Submit", assignment, home, exchange)
    for assignment in ASSIGNMENTS:
        exchange_step("Collect", assignment, course, exchange)
    return course


@pytest.fixture(scope="module")
def graded(term) -> dict[tuple[str, str], dict]:
    """CI's results.json per (student, assignment), after ``grade submitted``."""
    run = autograder("grade", "submitted", "--out", "grading", "--jobs", "2", cwd=term)
    assert run.returncode == 0, run.stderr
    found = {}
    for path in (term / "grading").rglob("results.json"):
        results = json.loads(path.read_text(encoding="utf-8"))
        found[results["extra_data"]["student"], results["extra_data"]["assignment"]] = results
    return found


def test_the_exchange_delivers_every_submission_to_the_grader(term, graded):
    """Each student's notebook went out, came back through the exchange and was graded."""
    assert sorted(graded) == [(s, a) for s in STUDENTS for a in ASSIGNMENTS]
    assert all(not r["extra_data"].get("not_graded") for r in graded.values())
    for student in STUDENTS:  # what collect wrote: the submitted folder of each student
        assert sorted(p.name for p in (term / "submitted" / student).iterdir()) == ASSIGNMENTS
    # The class is not uniform: full marks, partial marks and nothing all occur.
    scores = {r["score"] for r in graded.values()}
    assert 100 in scores and 0 in scores and scores - {0, 100}


@pytest.fixture(scope="module")
def hand_graded(term, graded) -> Path:
    """CI's scores imported into the gradebook, a TA's grades for the written answers, and
    CI's scores imported again (which must keep the TA's): the gradebook's course folder."""
    db = f"sqlite:///{term / 'gradebook.db'}"
    for _ in range(2):
        run = autograder(
            "import-grades", "grading", "--gradebook", db, "--submitted", "submitted", cwd=term
        )
        assert run.returncode == 0, run.stderr
        with gradebook(term) as book:
            for assignment in book.assignments:
                for submission in assignment.submissions:
                    for notebook in submission.notebooks:
                        for grade in notebook.grades:
                            if grade.cell.cell_type == "markdown" and grade.manual_score is None:
                                grade.manual_score = HAND_GRADE
                                grade.needs_manual_grade = False
            book.db.commit()
    return term


def test_the_gradebook_holds_ci_scores_and_the_hand_grades(hand_graded, graded):
    with gradebook(hand_graded) as book:
        for (student, assignment), results in graded.items():
            recorded = book.find_submission(assignment, student)
            auto = sum(g.score for n in recorded.notebooks for g in n.grades if g.auto_score is not None)  # fmt: skip
            assert auto == pytest.approx(results["score"]), (student, assignment)


def test_the_export_totals_are_ci_plus_the_ta(hand_graded, graded):
    """``nbgrader export``: each (student, assignment) total is CI's score plus the TA's
    grades, out of the release's points (the written answers' included)."""
    nbgrader("export", "--to", "grades.csv", cwd=hand_graded)
    with open(hand_graded / "grades.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(STUDENTS) * len(ASSIGNMENTS)
    for row in rows:
        auto, manual = release_points(row["assignment"])
        ci = graded[row["student_id"], row["assignment"]]["score"]
        assert float(row["score"]) == pytest.approx(ci + HAND_GRADE * len(manual)), row
        assert float(row["max_score"]) == pytest.approx(sum(auto.values()) + sum(manual.values()))


def test_the_similarity_report_flags_the_copied_pair_and_only_it(term):
    report = similarity.find_similar([term / "submitted"], grading.Release(REPO_ROOT / "exercises"))
    flagged = {(p.first.student, p.second.student, p.first.assignment) for p in report.flagged}
    assert {(frozenset(pair[:2]), pair[2]) for pair in flagged} == {
        (frozenset({COPIER, COPIED}), ASSIGNMENTS[0])
    }
    run = autograder("similarity", "submitted", "--out", "similarity", cwd=term)
    assert run.returncode == 0, run.stderr
    page = (term / "similarity" / "similarity.html").read_text(encoding="utf-8")
    assert COPIER in page and COPIED in page and "carol" not in page.split("<table", 1)[-1]


@pytest.fixture(scope="module")
def on_gradescope(term, tmp_path_factory) -> dict[tuple[str, str], tuple[int, dict]]:
    """The class graded by the Gradescope bundle's ``run_autograder`` as Gradescope runs it
    (as root, one submission per container): (exit status, results.json). Each run starts
    a sandbox of its own (about 15 s here), so each student hands in one assignment, in
    turn: every assignment is covered, and every student."""
    from tests import test_gradescope as gs

    if os.geteuid() != 0:
        pytest.skip("Gradescope runs its grader as root")
    bundle = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    built = autograder("gradescope", "--out", str(bundle), cwd=REPO_ROOT)
    assert built.returncode == 0, built.stderr
    root = gs.new_root()
    try:
        gs.unpack(bundle, root)
        gs.nobody_readable_python(root)
        found = {}
        for number, student in enumerate(STUDENTS):
            assignment = ASSIGNMENTS[number % len(ASSIGNMENTS)]
            notebook = term / "submitted" / student / assignment / f"{NOTEBOOKS[assignment]}.ipynb"  # fmt: skip
            status, results, _ = gs.run_autograder(root, notebook)
            found[student, assignment] = status, results
        return found
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_gradescope_grades_the_class_as_ci_does_with_visibility_set(on_gradescope, graded):
    from tests.test_gradescope import spec_problems

    for key, (status, results) in on_gradescope.items():
        assert status == 0 and spec_problems(results) == [], key
        assert results["score"] == graded[key]["score"], key
        assert results["stdout_visibility"] == "hidden" and results["output_format"] == "text"
        assert all(t.get("visibility") in {"visible", "after_published", "hidden"} for t in results["tests"])  # fmt: skip
        ci_tests = {t["name"]: t["score"] for t in graded[key]["tests"]}
        assert {
            t["name"]: t["score"] for t in results["tests"] if t["name"] in ci_tests
        } == ci_tests


def test_every_submission_has_a_feedback_page_and_the_ta_an_index(term, graded):
    """Beside each results.json its feedback page (one file, no request: images are data
    URIs); the index links every page. The browser opens such pages in
    tests/test_feedback_browser.py."""
    index = (term / "grading" / "feedback.html").read_text(encoding="utf-8")
    pages = sorted((term / "grading").rglob("results.json"))
    assert len(pages) == len(STUDENTS) * len(ASSIGNMENTS)
    for results in pages:
        page = results.with_name("feedback.html")
        text = page.read_text(encoding="utf-8")
        assert "<script" not in text and not re.search(r"""(src|href)=["']https?:""", text)
        assert page.relative_to(term / "grading").as_posix() in index
    failed = graded["erin", "03_interpolate"]  # nearest rounds: wrong values get figures
    assert failed["score"] < 100
    erin = (term / "grading" / "erin" / "03_interpolate").rglob("feedback.html")
    assert "data:image/png;base64," in next(erin).read_text(encoding="utf-8")
