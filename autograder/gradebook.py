"""The CI grader's scores into nbgrader's gradebook, through nbgrader's own API.

``python -m autograder import-grades grading --gradebook sqlite:///gradebook.db`` reads
every ``results.json`` under ``grading/`` and writes each test's score into the
``auto_score`` of the nbgrader grade with the same ``grade_id``. The written answers'
grades are left to formgrader: nbgrader then totals both (CI's 100 plus the hand-graded
points), with the same maximum as the release. A result that is no grade (refused, the
grader failed, a second notebook) imports nothing and is listed; a student or an
assignment nbgrader does not know is created, the assignment with its notebook and cells
made by nbgrader's own ``SaveCells`` from the release, as ``generate_assignment`` makes
them. A grade set by hand (``manual_score``) is never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder import grading, reports
from autograder import notebook as nb

CONFIG_FILE = Path("nbgrader_config.py")  # in the working folder, where nbgrader looks
MAX_ID_LENGTH = 128  # nbgrader's String(128) columns for student and assignment ids


@dataclass
class ImportReport:
    """What an import did, for the command's output and the tests."""

    # (student, assignment, CI's score) per submission written
    imported: list[tuple[str, str, float]] = field(default_factory=list)
    not_imported: list[tuple[str, str]] = field(default_factory=list)  # results folder, why
    not_for_formgrader: list[tuple[str, str]] = field(default_factory=list)  # imported, no copy
    created_students: list[str] = field(default_factory=list)
    created_assignments: list[str] = field(default_factory=list)
    # (student, assignment, grade_id): a hand grade kept although CI's score changed under it
    review: list[tuple[str, str, str]] = field(default_factory=list)


def database_url(text: str) -> str:
    """A SQLAlchemy URL: ``sqlite:///gradebook.db`` as given, a bare path made into one."""
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


def _alembic_on_path() -> None:
    """nbgrader's Gradebook runs ``alembic`` by name: let it find the venv's own."""
    venv_bin = Path(sys.executable).parent
    if shutil.which("alembic") is None and (venv_bin / "alembic").is_file():
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"


def course_config(config_file: Path = CONFIG_FILE) -> tuple[str, Path]:
    """The course id and root in ``nbgrader_config.py``, loaded as nbgrader loads it
    (nbgrader's defaults, ``default_course`` and the file's folder, where it says nothing)."""
    from traitlets.config.loader import PyFileConfigLoader

    if not config_file.is_file():
        return "default_course", config_file.parent
    config = PyFileConfigLoader(config_file.name, path=str(config_file.parent)).load_config()
    course = config.CourseDirectory
    return str(course.get("course_id", "default_course")), Path(
        course.get("root", config_file.parent)
    )


def _save_cells(db_url: str, release_notebook: Path, assignment: str) -> None:
    """The notebook and its grade, solution and source cells, by nbgrader's ``SaveCells``."""
    import nbformat
    from nbgrader.preprocessors import SaveCells

    notebook = nbformat.read(release_notebook, as_version=nbformat.NO_CONVERT)
    resources = {
        "nbgrader": {"notebook": release_notebook.stem, "assignment": assignment, "db_url": db_url}
    }
    SaveCells().preprocess(notebook, resources)


def _grade_cells(gradebook: Any, notebook_id: str, assignment: str) -> dict[str, tuple[float, str]]:
    found = gradebook.find_notebook(notebook_id, assignment)
    return {cell.name: (float(cell.max_score), cell.cell_type) for cell in found.grade_cells}


def ensure_assignment(
    gradebook: Any, db_url: str, release: grading.Release, assignment: str
) -> bool:
    """Make ``assignment`` exist with its release notebook's cells; True when it was made.

    Raises ``GraderError`` when the gradebook's grade cells are not the release's (another
    version of the assignment): CI's scores would then land on the wrong cells.
    """
    from nbgrader.api import MissingEntry

    release_notebook = release.notebooks[assignment]
    created = False
    try:
        gradebook.find_assignment(assignment)
    except MissingEntry:
        gradebook.add_assignment(assignment)
        created = True
    try:
        gradebook.find_notebook(release_notebook.stem, assignment)
    except MissingEntry:
        _save_cells(db_url, release_notebook, assignment)
        created = True
    gradebook.db.expire_all()  # SaveCells wrote through its own connection
    release_nb = release.notebook(assignment)
    planned = {t.grade_id: (float(t.points), "code") for t in nb.test_cells(release_nb)}
    planned |= {t.grade_id: (float(t.points), "markdown") for t in nb.manual_cells(release_nb)}
    recorded = _grade_cells(gradebook, release_notebook.stem, assignment)
    if recorded != planned:
        differ = sorted(set(recorded.items()) ^ set(planned.items()))
        raise grading.GraderError(
            f"the gradebook's {assignment} has other grade cells than the release "
            f"{release_notebook} (differing: {differ[:6]}); regenerate it with "
            "`nbgrader generate_assignment` from the same source"
        )
    return created


def _tests_of(row: reports.Row, cells: dict[str, tuple[float, str]]) -> dict[str, float] | str:
    """CI's score per autograded grade_id, or why this result cannot be imported."""
    tests = row.results.get("tests")
    if not isinstance(tests, list) or not tests:
        return "no tests in results.json"
    scores: dict[str, float] = {}
    for test in tests:
        if not isinstance(test, dict):
            return "a test that is not an object"
        name = str(test.get("name"))
        points, cell_type = cells.get(name, (None, None))
        if cell_type != "code":
            return f"test {name!r} is no autograded cell of the gradebook's {row.assignment}"
        try:
            score, max_score = float(test["score"]), float(test["max_score"])
        except (KeyError, TypeError, ValueError):
            return f"test {name!r} has no numeric score"
        if max_score != points or not 0 <= score <= max_score:
            return f"test {name!r}: {score:g} / {max_score:g}, the gradebook's cell is out of {points:g}"
        scores[name] = score
    missing = sorted(n for n, (_, kind) in cells.items() if kind == "code" and n not in scores)
    if missing:
        return f"no score for {', '.join(missing)}"
    return scores


def _ensure_student(gradebook: Any, student: str, report: ImportReport) -> None:
    from nbgrader.api import MissingEntry

    try:
        gradebook.find_student(student)
    except MissingEntry:
        gradebook.add_student(student)
        report.created_students.append(student)


def _write_scores(gradebook: Any, row: reports.Row, notebook_id: str, scores, report) -> None:
    """CI's scores as ``auto_score``; a hand grade stays, and is flagged if CI changed."""
    from nbgrader.api import MissingEntry

    _ensure_student(gradebook, row.student, report)
    try:
        gradebook.find_submission(row.assignment, row.student)
    except MissingEntry:
        with gradebook.db.no_autoflush:  # nbgrader builds the rows before it adds them
            gradebook.add_submission(row.assignment, row.student)
    submitted = gradebook.find_submission_notebook(notebook_id, row.assignment, row.student)
    for grade in submitted.grades:
        if grade.name not in scores:
            # A written answer: formgrader's, waiting for a hand grade until it has one.
            grade.needs_manual_grade = grade.manual_score is None
            continue
        changed = grade.auto_score is not None and grade.auto_score != scores[grade.name]
        grade.auto_score = scores[grade.name]
        if grade.manual_score is None:
            grade.needs_manual_grade = False
        elif changed:
            grade.needs_manual_grade = True
            report.review.append((row.student, row.assignment, grade.name))
    gradebook.db.commit()
    report.imported.append((row.student, row.assignment, sum(scores.values())))


def _graded_notebook(row: reports.Row, submitted: Path) -> tuple[Path | None, str]:
    """The notebook CI graded, under ``submitted``, or why it is not there any more."""
    extra = row.results.get("extra_data") or {}
    source = submitted / str(extra.get("notebook"))
    try:
        inside = source.resolve().is_relative_to(submitted.resolve())
        data = source.read_bytes() if inside and not source.is_symlink() else None
    except OSError:
        data = None
    if data is None:
        return None, f"{source} cannot be read"
    if hashlib.sha256(data).hexdigest() != extra.get("notebook_sha256"):
        return None, f"{source} is not the notebook CI graded (it changed since)"
    return source, ""


def place_for_formgrader(gradebook: Any, row: reports.Row, submitted: Path, autograded: Path):
    """The graded notebook, outputs cleared, where formgrader shows it for hand grading:
    ``autograded/<student>/<assignment>/<notebook>.ipynb``; None, or why it could not.

    Its ``timestamp.txt`` goes with it and into the gradebook, as nbgrader's autograde
    does: formgrader shows a submission as graded only when the two agree.
    """
    import nbformat
    from nbgrader.utils import parse_utc

    source, why = _graded_notebook(row, submitted)
    if source is None:
        return why
    notebook = nbformat.reads(source.read_text(encoding="utf-8"), as_version=nbformat.NO_CONVERT)
    for cell in notebook.cells:
        if cell.cell_type == "code":  # the student's own outputs prove nothing
            cell.outputs, cell.execution_count = [], None
    release_name = gradebook.find_assignment(row.assignment).notebooks[0].name
    target = autograded / row.student / row.assignment
    target.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target / f"{release_name}.ipynb")
    stamp = source.parent / "timestamp.txt"
    if stamp.is_file() and not stamp.is_symlink():
        shutil.copyfile(stamp, target / "timestamp.txt")
        submission = gradebook.find_submission(row.assignment, row.student)
        submission.timestamp = parse_utc(stamp.read_text(encoding="utf-8").strip())
        gradebook.db.commit()
    return None


def _why_not(row: reports.Row, reasons: dict[str, str], release: grading.Release) -> str | None:
    if row.rel in reasons:
        return f"not graded: {reasons[row.rel]}"
    if row.assignment not in release.notebooks:
        return f"unknown assignment {row.assignment or '(none)'}"
    if not row.student or len(row.student) > MAX_ID_LENGTH:
        return "no student id nbgrader can hold"
    return None


def import_results(
    results_dir: Path,
    db_url: str,
    release: grading.Release,
    *,
    course_id: str,
    assignments: set[str] | None = None,
    submitted: Path | None = None,
    autograded: Path | None = None,
) -> ImportReport:
    """Write every graded ``results.json`` under ``results_dir`` into the gradebook.

    Only ``assignments`` (all, when None). Each submission is committed on its own, so
    an import stopped half-way leaves whole submissions, and running it again is safe.
    With ``submitted`` (the folder CI graded) and ``autograded``, each graded notebook is
    placed for formgrader too (``place_for_formgrader``).
    """
    from nbgrader.api import Gradebook

    rows = reports.collect(results_dir)
    if not rows:
        raise grading.GraderError(f"{results_dir}: no results.json found")
    reasons = reports.not_graded_reasons(rows)
    report = ImportReport()
    _alembic_on_path()
    with Gradebook(db_url, course_id) as gradebook:
        cells: dict[str, dict[str, tuple[float, str]]] = {}
        for row in rows:
            if assignments is not None and row.assignment not in assignments:
                continue
            why = _why_not(row, reasons, release)
            if why is None and row.assignment not in cells:
                if ensure_assignment(gradebook, db_url, release, row.assignment):
                    report.created_assignments.append(row.assignment)
                notebook_id = release.notebooks[row.assignment].stem
                cells[row.assignment] = _grade_cells(gradebook, notebook_id, row.assignment)
            scores = _tests_of(row, cells[row.assignment]) if why is None else why
            if isinstance(scores, str):
                report.not_imported.append((row.rel, scores))
                continue
            notebook_id = release.notebooks[row.assignment].stem
            _write_scores(gradebook, row, notebook_id, scores, report)
            if submitted is not None and autograded is not None:
                why = place_for_formgrader(gradebook, row, submitted, autograded)
                if why:
                    report.not_for_formgrader.append((row.rel, why))
    return report
