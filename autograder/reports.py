"""The batch reports: ``grades.csv`` and ``summary.md`` (fit for ``$GITHUB_STEP_SUMMARY``).

Both are built from the ``results.json`` files alone (their ``extra_data`` names the
student and the assignment), so ``merge`` can join the outputs of several shards.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import statistics
import string
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograder import feedback
from autograder.grading import printable, write_atomic

#: A spreadsheet reads a cell starting with one of these as a formula (or may).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Characters with a meaning in Markdown or HTML; a name shows them as plain text.
_MARKDOWN_SPECIAL = frozenset(string.punctuation)
_PLAIN_BETWEEN_WORDS = frozenset("_-/")  # no meaning between two letters or digits
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
MAX_RESULTS_FILE = 64 << 20
MAX_RESULTS_DEPTH = 12  # results folders are at most MAX_FOLDERS + 1 deep, or hashed


@dataclass
class Row:
    """One graded (or refused) notebook, as the reports see it."""

    rel: str  # results.json's folder relative to the output folder
    student: str
    assignment: str
    score: float
    max_score: float
    results: dict[str, Any]
    not_graded: str | None = None  # why this is no grade (refused, or the grader failed)
    notebook: str = ""  # the notebook's path below its root: decides which one is first


def _number_from(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def row_from_results(rel: str, results: dict[str, Any]) -> Row:
    extra = results.get("extra_data") if isinstance(results.get("extra_data"), dict) else {}
    output = str(results.get("output") or "")
    reason = extra.get("not_graded")
    if not reason and output.startswith("Not graded"):
        reason = output.removeprefix("Not graded").lstrip(": ").split("\n", 1)[0] or "see output"
    return Row(
        rel,
        str(extra.get("student") or rel),
        str(extra.get("assignment") or ""),
        _number_from(results.get("score")),
        _number_from(extra.get("max_score")),
        results,
        str(reason) if reason else None,
        str(extra.get("notebook") or rel),
    )


def _read_results(path: Path) -> dict[str, Any] | None:
    try:
        if path.stat().st_size > MAX_RESULTS_FILE:
            return None
        results = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError, RecursionError):
        return None
    return results if isinstance(results, dict) else None


def collect(out_dir: Path) -> list[Row]:
    """Every ``results.json`` under ``out_dir`` (links not followed, depth bounded)."""
    rows = []
    pending = [(out_dir, 0)]
    while pending:
        folder, depth = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False) and depth < MAX_RESULTS_DEPTH:
                    pending.append((Path(entry.path), depth + 1))
                elif entry.name == "results.json" and entry.is_file(follow_symlinks=False):
                    results = _read_results(Path(entry.path))
                    if results is not None:
                        rel = folder.relative_to(out_dir).as_posix()
                        rows.append(row_from_results(rel, results))
            except OSError:
                continue
    return sorted(rows, key=lambda row: row.rel)


def _path_order(row: Row) -> tuple[str, str]:
    """Discovery's order: by path, ``.ipynb`` left out (``nb`` before ``nb-Copy1``)."""
    return row.notebook.removesuffix(".ipynb"), row.rel


def not_graded_reasons(rows: list[Row]) -> dict[str, str]:
    """Why each row that is no grade is not, by ``rel``: refused, failed, or a second notebook.

    Of two graded notebooks for one (student, assignment) the first by path counts, the
    later one is listed here; so no notebook ever silently replaces another's grade.
    """
    reasons = {row.rel: row.not_graded for row in rows if row.not_graded}
    first: dict[tuple[str, str], Row] = {}
    for row in sorted(rows, key=_path_order):
        if row.rel in reasons or not row.assignment:
            continue
        owner = first.setdefault((row.student, row.assignment), row)
        if owner is not row:
            reasons[row.rel] = (
                f"a second notebook for {row.assignment}; the first, {owner.notebook}, counts"
            )
    return reasons


def _number(value: float) -> str:
    return f"{value:g}"


def _csv_cell(value: Any) -> str:
    """A cell no spreadsheet runs: printable, and a leading ``'`` before a formula start."""
    text = printable(str(value), 300, unique=False)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def grades_csv(rows: list[Row]) -> str:
    """``student,assignment,score,max_score``, one line per notebook, sorted.

    A row that is no grade has ``not graded: <why>`` as its score, never a number.
    """
    reasons = not_graded_reasons(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "assignment", "score", "max_score"])
    for row in sorted(rows, key=lambda r: (r.student, r.assignment, r.rel)):
        if row.rel in reasons:
            score, max_score = f"not graded: {reasons[row.rel]}", ""
        else:
            score, max_score = _number(row.score), _number(row.max_score)
        writer.writerow([_csv_cell(v) for v in (row.student, row.assignment, score, max_score)])
    return buffer.getvalue()


def _cell(text: Any) -> str:
    """``text`` as plain Markdown text: no link, image, HTML, emphasis, code or table cell.

    ``& < >`` become entities, every other ASCII punctuation mark is backslash-escaped
    (``_ - /`` between two letters or digits, where they mean nothing, excepted), and
    newlines and other unprintable characters are shown as escapes.
    """
    text = printable(str(text), 300, unique=False)
    shown = []
    for index, char in enumerate(text):
        between_words = 0 < index < len(text) - 1 and (
            text[index - 1].isalnum() and text[index + 1].isalnum()
        )
        if char in _HTML:
            shown.append(_HTML[char])
        elif char in _MARKDOWN_SPECIAL and not (char in _PLAIN_BETWEEN_WORDS and between_words):
            shown.append("\\" + char)
        else:
            shown.append(char)
    return "".join(shown)


def _extra(row: Row) -> dict[str, Any]:
    extra = row.results.get("extra_data")
    return extra if isinstance(extra, dict) else {}


def _scores_section(groups: dict[str, list[Row]], reasons: dict[str, str]) -> list[str]:
    lines = [
        "## Scores by assignment",
        "",
        "| assignment | notebooks | not graded | mean | median | min | max | out of |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for assignment, group in sorted(groups.items()):
        graded = [r for r in group if r.rel not in reasons]
        scores = [r.score for r in graded]
        figures = ["–"] * 5
        if scores:
            figures = [
                f"{statistics.mean(scores):.1f}",
                f"{statistics.median(scores):g}",
                f"{min(scores):g}",
                f"{max(scores):g}",
                f"{max(r.max_score for r in graded):g}",
            ]
        lines.append(
            f"| {_cell(assignment)} | {len(group)} | {len(group) - len(graded)} | "
            + " | ".join(figures)
            + " |"
        )
    return lines


def _tests_section(groups: dict[str, list[Row]], reasons: dict[str, str]) -> list[str]:
    lines = ["", "## Tests: how many passed", ""]
    for assignment, group in sorted(groups.items()):
        counts: dict[str, list[int]] = {}
        for row in group:
            tests = row.results.get("tests") if row.rel not in reasons else None
            for test in tests if isinstance(tests, list) else []:
                if isinstance(test, dict):
                    tally = counts.setdefault(str(test.get("name")), [0, 0])
                    tally[1] += 1
                    tally[0] += test.get("status") == "passed"
        if not counts:
            continue
        lines += [f"**{_cell(assignment)}**", "", "| test | passed |", "|---|---:|"]
        for name, (passed, total) in counts.items():
            lines.append(f"| {_cell(name)} | {passed} / {total} |")
        lines.append("")
    return lines


def _reasons_to_look(row: Row, not_graded: str | None) -> list[str]:
    """Why a TA should open this notebook's results (none: nothing unusual)."""
    extra = _extra(row)
    reasons = [f"not graded: {not_graded}"] if not_graded else []
    if not row.assignment and not not_graded:
        reasons.append("not graded (unknown assignment or grader error)")
    if extra.get("timed_out"):
        reasons.append("timed out")
    output = str(row.results.get("output", ""))
    if "forbidden kernel" in json.dumps(row.results.get("tests", []), default=str):
        reasons.append("forbidden kernel reached")
    if "The sandbox failed" in output:
        reasons.append("the sandbox worker died (killed by the submission?)")
    if "modified the grader" in output:
        reasons.append("tampered with the checks")
    if "The notebook" in output and "score 0" in output:
        reasons.append("unreadable notebook")
    if extra.get("blank"):
        reasons.append("blank: the release as handed out")
    if extra.get("cell_errors"):
        reasons.append(f"{extra['cell_errors']} cell(s) raised an error")
    if extra.get("needs_a_look"):
        reasons.append("a route the kernel guard cannot watch (native code?): read the code")
    if "seen by the grader from outside" in output:
        reasons.append("a forbidden kernel seen from outside the sandbox")
    if "The graded calls did not run" in output:
        reasons.append("the graded calls did not run (threads left by the cells)")
    protections = extra.get("protections")
    if isinstance(protections, list) and any("no kernel watch" in str(p) for p in protections):
        if extra.get("static_scan"):
            reasons.append("no kernel watch here, and the static scan found something")
    scan = extra.get("static_scan")
    if scan:
        reasons.append(f"{len(scan) if isinstance(scan, list) else 1} static-scan warning(s)")
    return reasons


def _attention_section(rows: list[Row], reasons: dict[str, str]) -> list[str]:
    attention = []
    for row in sorted(rows, key=lambda r: (r.student, r.assignment, r.rel)):
        why = _reasons_to_look(row, reasons.get(row.rel))
        if why:
            score = "not graded" if row.rel in reasons else f"{row.score:g}"
            attention.append(
                f"| {_cell(row.student)} | {_cell(row.assignment)} | {score} | "
                f"{_cell('; '.join(why))} | {_cell(row.rel)} |"
            )
    lines = ["", "## Needs a look", ""]
    if not attention:
        return lines + ["Nothing unusual."]
    lines += ["| student | assignment | score | why | results |", "|---|---|---:|---|---|"]
    return lines + attention


def _grades_section(rows: list[Row], reasons: dict[str, str], assignments: list[str]):
    grid: dict[str, dict[str, str]] = defaultdict(dict)
    for row in sorted(rows, key=_path_order):
        shown = "not graded" if row.rel in reasons else _number(row.score)
        grid[row.student].setdefault(row.assignment or "(unknown)", shown)
    lines = ["", "## Grades", "", "| student | " + " | ".join(map(_cell, assignments)) + " |"]
    lines.append("|---|" + "---:|" * len(assignments))
    for student in sorted(grid):
        cells = [grid[student].get(a, "") for a in assignments]
        lines.append(f"| {_cell(student)} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(rows: list[Row], title: str = "Autograder results") -> str:
    """A Markdown summary: per assignment, per test, the grades, and what needs a look.

    Every text that comes from a submission (a folder name, a reason) is shown as plain
    text (``_cell``); a notebook that is no grade says "not graded" and counts in no mean.
    """
    reasons = not_graded_reasons(rows)
    sandboxes = sorted({str(_extra(r).get("sandbox")) for r in rows} - {"None"})
    lines = [f"# {title}", ""]
    lines.append(
        f"{len(rows)} notebooks: {len(rows) - len(reasons)} graded, {len(reasons)} not graded; "
        f"sandbox: {_cell(', '.join(sandboxes)) or 'n/a'}."
    )
    lines.append("")
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row.assignment or "(unknown)"].append(row)
    lines += _scores_section(groups, reasons)
    lines += _tests_section(groups, reasons)
    lines += _attention_section(rows, reasons)
    lines += _grades_section(rows, reasons, sorted(groups))
    return "\n".join(lines) + "\n"


def feedback_index(rows: list[Row], out_dir: Path) -> str:
    """The TA's ``feedback.html``: each notebook's score, a relative link to its page
    beside its ``results.json`` (when there is one), and why it needs a look."""
    reasons = not_graded_reasons(rows)
    entries = []
    for row in sorted(rows, key=lambda r: (r.student, r.assignment, r.rel)):
        graded = row.rel not in reasons
        page = f"{row.rel}/{feedback.PAGE_NAME}"
        entries.append(
            feedback.SummaryEntry(
                row.student,
                row.assignment,
                _number(row.score) if graded else "not graded",
                _number(row.max_score) if graded else "",
                page if (out_dir / page).is_file() else None,
                "; ".join(_reasons_to_look(row, reasons.get(row.rel))),
            )
        )
    return feedback.summary_page(entries)


def write_reports(rows: list[Row], out_dir: Path) -> None:
    """``grades.csv``, ``summary.md`` and the index of the feedback pages, ``feedback.html``,
    in ``out_dir`` (each written atomically)."""
    write_atomic(out_dir / "grades.csv", grades_csv(rows))
    write_atomic(out_dir / "summary.md", summary_markdown(rows))
    write_atomic(out_dir / feedback.PAGE_NAME, feedback_index(rows, out_dir))


def merge(sources: list[Path], out_dir: Path) -> list[Row]:
    """Join shard outputs: copy their ``results.json`` into ``out_dir``, then the reports."""
    rows: dict[str, Row] = {}
    for source in sources:
        for row in collect(source):
            target = out_dir / row.rel / "results.json"
            origin = source / row.rel / "results.json"
            if origin.resolve() != target.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(origin, target)
                # Its feedback page goes with it (a link is not followed); none: none.
                page = target.with_name(feedback.PAGE_NAME)
                origin_page = origin.with_name(feedback.PAGE_NAME)
                if origin_page.is_file() and not origin_page.is_symlink():
                    shutil.copyfile(origin_page, page)
                else:
                    page.unlink(missing_ok=True)
            rows[row.rel] = row
    merged = [rows[key] for key in sorted(rows)]
    write_reports(merged, out_dir)
    return merged
