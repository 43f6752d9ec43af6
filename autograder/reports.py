"""The batch reports: ``grades.csv`` and ``summary.md`` (fit for ``$GITHUB_STEP_SUMMARY``).

Both are built from the ``results.json`` files alone (their ``extra_data`` names the
student and the assignment), so ``merge`` can join the outputs of several shards.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograder.grading import write_atomic


@dataclass
class Row:
    """One graded notebook, as the reports see it."""

    rel: str  # results.json's folder relative to the output folder
    student: str
    assignment: str
    score: float
    max_score: float
    results: dict[str, Any]


def row_from_results(rel: str, results: dict[str, Any]) -> Row:
    extra = results.get("extra_data") if isinstance(results.get("extra_data"), dict) else {}
    return Row(
        rel,
        str(extra.get("student") or rel),
        str(extra.get("assignment") or ""),
        float(results.get("score") or 0),
        float(extra.get("max_score") or 0),
        results,
    )


def collect(out_dir: Path) -> list[Row]:
    """Every ``results.json`` under ``out_dir``."""
    rows = []
    for path in sorted(out_dir.rglob("results.json")):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(results, dict):
            rows.append(row_from_results(path.parent.relative_to(out_dir).as_posix(), results))
    return rows


def _number(value: float) -> str:
    return f"{value:g}"


def grades_csv(rows: list[Row]) -> str:
    """``student,assignment,score,max_score``, one line per notebook, sorted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "assignment", "score", "max_score"])
    for row in sorted(rows, key=lambda r: (r.student, r.assignment, r.rel)):
        writer.writerow([row.student, row.assignment, _number(row.score), _number(row.max_score)])
    return buffer.getvalue()


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(rows: list[Row], title: str = "Autograder results") -> str:
    """A Markdown summary: per assignment, per test, the grades, and what needs a look."""
    lines = [f"# {title}", ""]
    sandboxes = sorted(
        {str(r.results.get("extra_data", {}).get("sandbox")) for r in rows} - {"None"}
    )
    lines.append(f"{len(rows)} notebooks graded; sandbox: {', '.join(sandboxes) or 'n/a'}.")
    lines.append("")
    by_assignment: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_assignment[row.assignment or "(unknown)"].append(row)

    lines += [
        "## Scores by assignment",
        "",
        "| assignment | notebooks | mean | median | min | max | out of |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for assignment, group in sorted(by_assignment.items()):
        scores = [r.score for r in group]
        lines.append(
            f"| {_cell(assignment)} | {len(group)} | {statistics.mean(scores):.1f} | "
            f"{statistics.median(scores):g} | {min(scores):g} | {max(scores):g} | "
            f"{max(r.max_score for r in group):g} |"
        )

    lines += ["", "## Tests: how many passed", ""]
    for assignment, group in sorted(by_assignment.items()):
        counts: dict[str, list[int]] = {}
        for row in group:
            for test in row.results.get("tests", []):
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

    attention = []
    for row in sorted(rows, key=lambda r: (r.student, r.assignment)):
        extra = row.results.get("extra_data", {})
        reasons = []
        if not row.assignment:
            reasons.append("not graded (unknown assignment or grader error)")
        if extra.get("timed_out"):
            reasons.append("timed out")
        output = str(row.results.get("output", ""))
        if "forbidden kernel" in json.dumps(row.results.get("tests", [])):
            reasons.append("forbidden kernel reached")
        if "The sandbox failed" in output:
            reasons.append("the sandbox worker died (killed by the submission?)")
        if "modified the grader" in output:
            reasons.append("tampered with the checks")
        if "The notebook" in output and "score 0" in output:
            reasons.append("unreadable notebook")
        if extra.get("static_scan"):
            reasons.append(f"{len(extra['static_scan'])} static-scan warning(s)")
        if reasons:
            attention.append(
                f"| {_cell(row.student)} | {_cell(row.assignment)} | {row.score:g} | "
                f"{_cell('; '.join(reasons))} | `{_cell(row.rel)}` |"
            )
    lines += ["## Needs a look", ""]
    if attention:
        lines += ["| student | assignment | score | why | results |", "|---|---|---:|---|---|"]
        lines += attention
    else:
        lines.append("Nothing unusual.")

    assignments = sorted(by_assignment)
    grid: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        grid[row.student][row.assignment or "(unknown)"] = _number(row.score)
    lines += ["", "## Grades", "", "| student | " + " | ".join(map(_cell, assignments)) + " |"]
    lines.append("|---|" + "---:|" * len(assignments))
    for student in sorted(grid):
        cells = [grid[student].get(a, "") for a in assignments]
        lines.append(f"| {_cell(student)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_reports(rows: list[Row], out_dir: Path) -> None:
    """``grades.csv`` and ``summary.md`` in ``out_dir`` (each written atomically)."""
    write_atomic(out_dir / "grades.csv", grades_csv(rows))
    write_atomic(out_dir / "summary.md", summary_markdown(rows))


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
            rows[row.rel] = row
    merged = [rows[key] for key in sorted(rows)]
    write_reports(merged, out_dir)
    return merged
