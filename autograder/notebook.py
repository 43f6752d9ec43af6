"""Reading assignment notebooks: which cells are the instructor's tests, which are the student's code.

The one notebook loader of the project: the CI grader, the sweep tests and the benchmark all
take a notebook's code through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class NotebookError(ValueError):
    """A notebook that cannot be read as one (the message names the file and the problem)."""


@dataclass(frozen=True)
class TestCell:
    """An autograded test cell of a release notebook: its nbgrader ``grade_id`` and points."""

    grade_id: str
    points: float
    source: str


@dataclass(frozen=True)
class CodeCell:
    """A code cell to run: where it came from (for tracebacks) and its source."""

    label: str
    source: str


def read_notebook(path: str | Path) -> dict[str, Any]:
    """Parse ``path`` as a notebook (nbformat 4 JSON) or raise ``NotebookError`` saying why."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise NotebookError(f"{path}: cannot be read ({error})") from error
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as error:
        raise NotebookError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise NotebookError(f"{path}: not a notebook (no list of cells)")
    return notebook


def cell_source(cell: dict[str, Any]) -> str:
    """A cell's source as one string (nbformat allows a string or a list of lines)."""
    source = cell.get("source", "")
    if isinstance(source, list):
        return "".join(str(line) for line in source)
    return str(source)


def _nbgrader(cell: dict[str, Any]) -> dict[str, Any]:
    metadata = cell.get("metadata")
    if not isinstance(metadata, dict):
        return {}
    nbgrader = metadata.get("nbgrader")
    return nbgrader if isinstance(nbgrader, dict) else {}


def test_cells(release: dict[str, Any]) -> list[TestCell]:
    """The autograded test cells of a release (trusted) notebook, in order.

    nbgrader marks them ``grade: true, solution: false`` on a code cell; their ``points``
    are the assignment's points. Written answers (markdown, graded by hand) are not here.
    """
    found = []
    for cell in release["cells"]:
        meta = _nbgrader(cell)
        if cell.get("cell_type") == "code" and meta.get("grade") and not meta.get("solution"):
            found.append(
                TestCell(meta["grade_id"], float(meta.get("points", 0)), cell_source(cell))
            )
    return found


def manual_cells(release: dict[str, Any]) -> list[TestCell]:
    """The cells graded by hand (written answers): ``grade: true, solution: true``."""
    found = []
    for cell in release["cells"]:
        meta = _nbgrader(cell)
        if meta.get("grade") and meta.get("solution"):
            found.append(
                TestCell(meta["grade_id"], float(meta.get("points", 0)), cell_source(cell))
            )
    return found


def student_code(submission: dict[str, Any], release: dict[str, Any]) -> list[CodeCell]:
    """Every code cell of ``submission`` except the instructor's test cells.

    Test cells are matched by nbgrader ``grade_id`` against the release, and the student's
    copy of each is dropped, edited or not. Cells the student added count (nbgrader runs
    them too). The submission's metadata is otherwise ignored: points come from the release.
    """
    test_ids = {cell.grade_id for cell in test_cells(release)}
    code = []
    for index, cell in enumerate(submission["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        if _nbgrader(cell).get("grade_id") in test_ids:
            continue
        source = cell_source(cell)
        code.append(CodeCell(cell_label(index, source), source))
    return code


def cell_label(index: int, source: str) -> str:
    """How a report names a cell: its number and first line (a TA finds it by its text)."""
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    first = "".join(ch if ch.isprintable() and ch not in "<>`" else " " for ch in first)
    if len(first) > 40:
        first = first[:39] + "…"
    return f"cell {index + 1} ({first})" if first else f"cell {index + 1} (empty)"


def assignment_name(notebook: dict[str, Any]) -> str | None:
    """The assignment a notebook declares (``metadata.course.assignment``), if any."""
    metadata = notebook.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("course"), dict):
        name = metadata["course"].get("assignment")
        return name if isinstance(name, str) else None
    return None


def load_namespace(path: str | Path) -> dict[str, Any]:
    """Run a trusted notebook's code cells, tests excluded, and return the namespace.

    For the instructor's own notebooks (sweep tests, benchmarks): no sandbox. IPython magics
    and shell escapes are not supported, as in the grader.
    """
    notebook = read_notebook(path)
    namespace: dict[str, Any] = {"__name__": "__course_notebook__"}
    for cell in student_code(notebook, notebook):
        exec(compile(cell.source, f"{Path(path).name} {cell.label}", "exec"), namespace)
    return namespace
