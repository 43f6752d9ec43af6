"""nbgrader's configuration: run ``nbgrader generate_assignment '*'``, ``autograde``,
``generate_feedback`` and ``export`` from the repository root.

``solutions/`` is nbgrader's source folder (the instructor's notebooks) and ``exercises/``
its release folder (generated, committed, never edited by hand). The gradebook and the
``submitted/``, ``autograded/`` and ``feedback/`` folders live at the root and stay out of
git (``.gitignore``).
"""

from pathlib import Path

c = get_config()  # noqa: F821 (nbgrader defines get_config when it loads this file)

c.CourseDirectory.course_id = "transposed-convolutions"
c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"

# Seconds per cell: the hidden tests of one part run a few dozen small cases, and the
# course machines have two cores shared with other jobs.
c.Execute.timeout = 300

# nbgrader gives a test cell no points when it wrote anything to stderr, and a harmless
# torch warning (a deprecation, a UserWarning from the student's own code) would do that.
# The checks already silence warnings; this drops whatever stderr a cell still writes
# before grading. A failing check raises, which nbgrader records as an error output, so
# it still costs the cell's points.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"[\s\S]*"

# The gradebook's autograded scores are the CI grader's, loaded with
# `python -m autograder import-grades grading --gradebook sqlite:///gradebook.db`
# (autograder/gradebook.py); `nbgrader export` then totals them with formgrader's hand grades.
# For the LMS, `nbgrader export --exporter=autograder.canvas_export.CanvasExport --to canvas.csv`
# writes Canvas's gradebook import format; its options (the defaults shown):
# c.CanvasExport.student_id_column = "SIS Login ID"  # or "SIS User ID": where nbgrader's id goes
# c.CanvasExport.section = ""  # the Section column
# c.CanvasExport.canvas_assignment_ids = {}  # {"01_conv_transpose1d": "<Canvas assignment id>"}
# c.CanvasExport.missing_score = ""  # no submission: "" leaves Canvas's score, "0", or "EX"
