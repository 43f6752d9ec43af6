"""How long ``python -m autograder similarity`` takes for a class: 300 students x 3 assignments.

The class is synthesised from the fixture corpus: each student starts from one of its honest
or partly correct notebooks and gets variations of their own (a line dropped here, a
statement of their own added there, names renamed); students who start from the same
notebook keep much of it and are flagged, as they should be. The last few students hand
in a classmate's notebook with the names renamed and the answer cells reversed. Prints the time to read, fingerprint and compare every
pair, and to write the report (wall and CPU time: on a shared machine the CPU
time is the figure to quote), and how many planted copies were flagged.

    python benchmarks/similarity_class.py [--students 300] [--copies 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

from autograder import grading, similarity

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT / "tests" / "fixtures" / "submissions"
#: The corpus's answers a synthetic student starts from (correct, partly correct, blank),
#: where the corpus has them for the assignment.
BASES = [
    "instructor",
    "naive_loops",
    "partial_no_groups",
    "partial_bias_ignored",
    "partial_no_dilation",
    "partial_nearest_only",
    "wrong_shapes",
    "release_untouched",
]
NAME = re.compile(r"\b(input|weight|bias|stride|padding|output|kernel|length|value|total)\b")


def _own_statement(rng: random.Random, indent: str) -> str:
    """A line a student might add: a check, a temporary, a print."""
    a, b, c = (rng.randint(0, 99) for _ in range(3))
    name = f"t{rng.randint(0, 999)}"
    return rng.choice([
        f"{indent}{name} = {a} * {b} - {c}",
        f"{indent}assert {a} <= {b} + {c}, 'check {a}'",
        f"{indent}print('step', {a}, {b})",
        f"{indent}{name} = [k * {a} for k in range({b})]",
        f"{indent}if {a} > {b}:\n{indent}    {name} = {c}",
    ])  # fmt: skip


def _vary(source: str, rng: random.Random) -> str:
    """``source`` with names renamed, some lines dropped and statements of its own added."""
    suffix = rng.choice(["_", "2", "_v", "x"])
    lines = []
    for line in source.splitlines():
        if line.strip() and rng.random() < 0.1:
            continue
        lines.append(NAME.sub(lambda m: m.group(1) + suffix, line))
        if rng.random() < 0.4:
            lines.append(_own_statement(rng, line[: len(line) - len(line.lstrip())]))
    return "\n".join(lines) + "\n"


def _is_answer(cell: dict) -> bool:
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and not nbgrader.get("grade", False)


def _student_notebook(base: Path, rng: random.Random) -> dict:
    notebook = json.loads(base.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if _is_answer(cell):
            cell["source"] = _vary("".join(cell["source"]), rng)
    return notebook


def _copy_of(notebook: dict) -> dict:
    """A classmate's notebook handed in as one's own: names renamed, answer cells reversed."""
    copied = json.loads(json.dumps(notebook))
    answers = [i for i, cell in enumerate(copied["cells"]) if _is_answer(cell)]
    cells = [copied["cells"][i] for i in answers]
    for i, cell in zip(answers, reversed(cells), strict=True):
        cell["source"] = NAME.sub(lambda m: m.group(1) + "_mine", "".join(cell["source"]))
        copied["cells"][i] = cell
    return copied


def synthesise_class(
    root: Path, students: int, copies: int, seed: int
) -> set[tuple[str, frozenset[str]]]:
    """Write the class under ``root``; return the planted (assignment, {copier, source})."""
    rng = random.Random(seed)
    planted: set[tuple[str, frozenset[str]]] = set()
    for assignment_dir in sorted(p for p in (CORPUS / "instructor").iterdir() if p.is_dir()):
        assignment = assignment_dir.name
        bases = sorted((CORPUS / base / assignment) for base in BASES)
        bases = [next(folder.glob("*.ipynb")) for folder in bases if folder.is_dir()]
        made: dict[str, dict] = {}
        for number in range(students):
            student = f"student{number:03d}"
            if number >= students - copies:
                source = rng.choice(sorted(made))
                notebook = _copy_of(made[source])
                planted.add((assignment, frozenset((student, source))))
            else:
                notebook = _student_notebook(rng.choice(bases), rng)
            made[student] = notebook
            target = root / student / assignment / f"{assignment.split('_', 1)[1]}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(notebook), encoding="utf-8")
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--copies", type=int, default=10, help="copiers per assignment")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    release = grading.Release(REPO_ROOT / "exercises")
    work = Path(tempfile.mkdtemp(prefix="similarity-class-"))
    try:
        root = work / "submitted"
        planted = synthesise_class(root, args.students, args.copies, args.seed)
        start, cpu_start = time.perf_counter(), time.process_time()
        report = similarity.find_similar([root], release)
        compared = time.perf_counter()
        page = similarity.write_report(report, work / "out")
        written, cpu = time.perf_counter(), time.process_time() - cpu_start
        size = page.stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = {
        (p.first.assignment, frozenset((p.first.student, p.second.student))) for p in report.flagged
    }
    print(
        f"{args.students} students x 3 assignments: {sum(report.answers.values())} answers, "
        f"{report.pairs_compared} pairs compared in {compared - start:.1f} s, report "
        f"({size >> 10} KiB) written in {written - compared:.1f} s: "
        f"{written - start:.1f} s in all, {cpu:.1f} s of CPU (one core)"
    )
    print(
        f"{len(report.flagged)} pairs flagged; planted copies flagged: {len(found & planted)} "
        f"of {len(planted)}"
    )


if __name__ == "__main__":
    main()
