"""nbgrader's gradebook as a CSV that Canvas's gradebook import takes.

``nbgrader export --exporter=autograder.canvas_export.CanvasExport --to canvas.csv``
(nbgrader imports the class by name; it is an ``ExportPlugin``, like nbgrader's own CSV
exporter). The layout is the one Canvas itself exports and reads back (Instructure's
``lib/gradebook_exporter.rb`` and ``lib/gradebook_importer.rb``):

- a header ``Student, ID, SIS User ID, SIS Login ID, Section``, then one column per
  assignment, named ``title`` or ``title (Canvas assignment id)``;
- a second row starting ``    Points Possible``: each assignment's points (nbgrader's
  maximum, the autograded and the hand-graded points together);
- one row per student: ``Last, First`` (Canvas's sortable name), the Canvas user id
  (nbgrader's ``lms_user_id``), the nbgrader id in the SIS column chosen by
  ``student_id_column``, the section, and each assignment's score (after nbgrader's late
  penalty), to two decimals as Canvas writes them.

Canvas finds each student by ID, then SIS User ID, then SIS Login ID, then name, and each
assignment by its id in the header, then by title (an unknown title makes a new one).
A blank score changes nothing in Canvas; ``missing_score`` says what a student without a
submission gets.
"""

from __future__ import annotations

import csv
from typing import Any

from nbgrader.api import MissingEntry
from nbgrader.plugins import ExportPlugin
from traitlets import Dict, Enum, Unicode

from autograder.grading import printable
from autograder.reports import FORMULA_STARTS

STUDENT_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
POINTS_POSSIBLE = "    Points Possible"  # Canvas's own spelling; its importer looks for it


def canvas_number(value: float) -> str:
    """A score as Canvas writes one: at most two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def plain_cell(value: Any) -> str:
    """Printable text that no spreadsheet runs as a formula (a leading ``'`` if it could)."""
    text = printable(str(value or ""), 200, unique=False)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def student_name(student: Any) -> str:
    """Canvas's sortable name, ``Last, First``; the nbgrader id when no name is known."""
    last, first = (student.last_name or "").strip(), (student.first_name or "").strip()
    if last and first:
        return f"{last}, {first}"
    return last or first or student.id


class CanvasExport(ExportPlugin):
    """Export the gradebook in Canvas's gradebook import format."""

    student_id_column = Enum(
        ["SIS Login ID", "SIS User ID"],
        default_value="SIS Login ID",
        help="the Canvas column that holds nbgrader's student id (a JupyterHub login is "
        "usually Canvas's SIS Login ID)",
    ).tag(config=True)

    section = Unicode("", help="the Section column for every student").tag(config=True)

    canvas_assignment_ids = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="nbgrader assignment -> Canvas assignment id, so Canvas updates that assignment "
        "rather than matching (or creating) one by title",
    ).tag(config=True)

    missing_score = Unicode(
        "",
        help="the score of a student without a submission: '' leaves Canvas's as it is, "
        "'0' gives zero (nbgrader's CSV export does), 'EX' excuses",
    ).tag(config=True)

    def _title(self, assignment: str) -> str:
        canvas_id = self.canvas_assignment_ids.get(assignment)
        return f"{assignment} ({canvas_id})" if canvas_id else assignment

    def _score(self, gradebook: Any, assignment: str, student: str) -> str:
        try:
            submission = gradebook.find_submission(assignment, student)
        except MissingEntry:
            return self.missing_score
        penalty = submission.late_submission_penalty or 0.0
        return canvas_number(max(0.0, submission.score - penalty))

    def rows(self, gradebook: Any) -> list[list[str]]:
        """The CSV's rows: header, points possible, then one per student (by id)."""
        wanted_assignments = {str(a) for a in self.assignment}
        wanted_students = {str(s) for s in self.student}
        assignments = [
            a
            for a in gradebook.assignments
            if not wanted_assignments or a.name in wanted_assignments
        ]
        students = [s for s in gradebook.students if not wanted_students or s.id in wanted_students]
        header = STUDENT_COLUMNS + [plain_cell(self._title(a.name)) for a in assignments]
        points = [POINTS_POSSIBLE, "", "", "", ""] + [
            canvas_number(a.max_score) for a in assignments
        ]
        rows = [header, points]
        sis_column = STUDENT_COLUMNS.index(self.student_id_column)
        for student in sorted(students, key=lambda s: s.id):
            row = [plain_cell(student_name(student)), plain_cell(student.lms_user_id), "", ""]
            row.append(plain_cell(self.section))
            row[sis_column] = plain_cell(student.id)
            row += [self._score(gradebook, a.name, student.id) for a in assignments]
            rows.append(row)
        return rows

    def export(self, gradebook: Any) -> None:
        destination = self.to or "canvas_grades.csv"
        rows = self.rows(gradebook)
        self.log.info("Exporting %d students to %s (Canvas's format)", len(rows) - 2, destination)
        with open(destination, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)
