"""The CI grader against ``nbgrader autograde``: the same class, graded both ways, in one run.

The class is 8 students x 3 assignments, made from the fixture corpus (the instructor's
answers and partly correct ones, so that both graders see passing and failing cells). It is
graded by ``python -m autograder grade`` with ``--jobs 1`` and ``--jobs 2``, and by
``nbgrader autograde '*'`` in a temporary course folder (``nbgrader_config.py`` and
``solutions/`` copied, ``generate_assignment`` run first, not timed). Prints the wall
times and the ratio. The goal: the grader at least 10x faster, while checking far more.

    python benchmarks/grader_vs_nbgrader.py [--students 8]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT / "tests" / "fixtures" / "submissions"
NOTEBOOKS = {
    "01_conv_transpose1d": "conv_transpose1d.ipynb",
    "02_conv_transpose2d": "conv_transpose2d.ipynb",
    "03_interpolate": "interpolate.ipynb",
}
#: Fixtures the students' notebooks are copied from, in turn (honest and partly correct).
SOURCES = {
    "01_conv_transpose1d": [
        "instructor",
        "partial_no_groups",
        "instructor",
        "partial_bias_ignored",
    ],
    "02_conv_transpose2d": ["instructor", "partial_no_dilation", "instructor", "syntax_error_cell"],
    "03_interpolate": ["instructor", "partial_nearest_only", "instructor", "release_untouched"],
}


def tool_env() -> dict[str, str]:
    """The venv's bin first on PATH (nbgrader calls alembic and jupyter by name)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def make_class(submitted: Path, students: int) -> None:
    """``submitted/<student>/<assignment>/<notebook>``, nbgrader's layout."""
    for index in range(students):
        student = f"student{index + 1:02d}"
        for assignment, notebook in NOTEBOOKS.items():
            sources = SOURCES[assignment]
            source = CORPUS / sources[index % len(sources)] / assignment / notebook
            target = submitted / student / assignment / notebook
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def timed(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return seconds, done


def grade_with_grader(submitted: Path, out: Path, jobs: int) -> tuple[float, dict[str, float]]:
    seconds, _ = timed(
        [sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(out)]
        + ["--jobs", str(jobs), "--progress", "never"],
        REPO_ROOT,
    )
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        scores = {
            f"{r['student']}/{r['assignment']}": float(r["score"]) for r in csv.DictReader(handle)
        }
    return seconds, scores


def grade_with_nbgrader(course: Path, submitted: Path) -> tuple[float, dict[str, float]]:
    shutil.copy(REPO_ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    shutil.copytree(REPO_ROOT / "solutions", course / "solutions", symlinks=False)
    nbgrader = str(Path(sys.executable).parent / "nbgrader")
    timed([nbgrader, "generate_assignment", "*", "--force"], course)
    shutil.copytree(submitted, course / "submitted")
    seconds, _ = timed([nbgrader, "autograde", "*", "--force"], course)
    timed([nbgrader, "export", "--to", str(course / "grades.csv")], course)
    with open(course / "grades.csv", newline="", encoding="utf-8") as handle:
        scores = {
            f"{r['student_id']}/{r['assignment']}": float(r["raw_score"] or 0)
            for r in csv.DictReader(handle)
        }
    return seconds, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=8)
    args = parser.parse_args()
    # Both graders share the machine's cores: a busy machine skews the ratio, so say how busy.
    print("load average before (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="grader_vs_nbgrader_") as scratch:
        scratch = Path(scratch)
        submitted = scratch / "submitted"
        make_class(submitted, args.students)
        notebooks = args.students * len(NOTEBOOKS)
        print(
            f"class: {args.students} students x {len(NOTEBOOKS)} assignments = {notebooks} notebooks"
        )

        grader_times = {}
        for jobs in (1, 2):
            grader_times[jobs], grader_scores = grade_with_grader(
                submitted, scratch / f"out{jobs}", jobs
            )
            print(
                f"grader, --jobs {jobs}: {grader_times[jobs]:7.1f} s ({grader_times[jobs] / notebooks:.2f} s per notebook)"
            )
        course = scratch / "course"
        course.mkdir()
        nbgrader_time, nbgrader_scores = grade_with_nbgrader(course, submitted)
        print(
            f"nbgrader autograde:  {nbgrader_time:7.1f} s ({nbgrader_time / notebooks:.2f} s per notebook)"
        )

        best = min(grader_times.values())
        print(f"ratio nbgrader / grader (best): {nbgrader_time / best:.1f}x (goal >= 10x)")
        print(f"scaling --jobs 1 -> 2: {grader_times[1] / grader_times[2]:.2f}x")
        differ = {
            key: (score, nbgrader_scores.get(key))
            for key, score in sorted(grader_scores.items())
            if nbgrader_scores.get(key) is not None and abs(score - nbgrader_scores[key]) > 1e-9
        }
        print(f"scores that differ between the graders (grader, nbgrader): {differ or 'none'}")
    print("load average after (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
