"""``python -m autograder``: grade a batch, self-check a notebook, merge shard outputs.

Exit status: ``grade`` and ``merge`` return 0 when grading worked, whatever the scores,
2 when the grader itself could not run (bad arguments, no notebooks, release missing, no
sandbox: nothing is recorded then), and ``grade`` 3 when the batch is incomplete (a
notebook the sandbox failed on twice is "not graded"; run the same command again). ``check`` returns 0 when every public case passes, 1 when some fail, 2 when it
could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from autograder import grading, reports, sandbox
from autograder import notebook as nb
from autograder import term as term_module

CANNOT_RUN = 2
INCOMPLETE = 3


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\rgrading [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _limits(args: argparse.Namespace) -> sandbox.Limits:
    # A limit of 0 or less would give the whole class 0: a mistake, never a grading.
    if not args.timeout > 0:
        raise grading.GraderError(f"--timeout {args.timeout:g}: must be more than 0 seconds")
    if args.memory_mb < 64:
        raise grading.GraderError(f"--memory-mb {args.memory_mb}: must be at least 64")
    return sandbox.Limits(timeout=args.timeout, memory_bytes=args.memory_mb << 20)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--release",
        type=Path,
        default=grading.DEFAULT_RELEASE,
        help="the release folder (trusted): <assignment>/<notebook>.ipynb (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=sandbox.Limits.timeout,
        help="wall-clock seconds per submission (default: %(default)s)",
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=sandbox.Limits.memory_bytes >> 20,
        help="address space a submission may add to the worker's (default: %(default)s)",
    )
    parser.add_argument(
        "--sandbox",
        choices=["auto", "bwrap", "landlock", "none"],
        default="auto",
        help="bubblewrap with seccomp (auto, bwrap: the grader refuses to run without it); "
        "landlock: Landlock and seccomp without bubblewrap, where namespaces are refused "
        "(a container); none: NO sandbox, only for a trusted class (written into every result)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    grade = commands.add_parser("grade", help="grade notebooks into results.json files")
    grade.add_argument("paths", nargs="+", help="notebooks, or folders searched for *.ipynb")
    grade.add_argument("--out", type=Path, required=True, help="the output folder")
    grade.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="parallel sandboxes (default: cores)"
    )
    grade.add_argument("--force", action="store_true", help="regrade notebooks already graded")
    grade.add_argument("--shard", help="grade only shard K of N (K/N), split by path")
    grade.add_argument(
        "--seed",
        type=int,
        help="one hidden-case seed for every assignment (default: the term's, in "
        "autograder/term.json, the same in every run and shard)",
    )
    grade.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="progress bar on stderr (auto: only on a terminal)",
    )
    grade.add_argument(
        "--feedback-shows-hidden",
        action="store_true",
        help="the feedback pages show the hidden cases' calls, messages and figures (default: "
        "only their verdict and likely bug; allow it once the grades are published)",
    )
    _common(grade)

    check = commands.add_parser("check", help="a student's self-check: public cases only")
    check.add_argument("notebook", type=Path)
    _common(check)

    term = commands.add_parser(
        "new-term", help="start a term: new hidden-case seeds for every assignment"
    )
    term.add_argument("name", help="the term's name, e.g. 2027-spring")
    term.add_argument("--release", type=Path, default=grading.DEFAULT_RELEASE)

    merge = commands.add_parser("merge", help="join the outputs of several shards")
    merge.add_argument("dirs", nargs="+", type=Path)
    merge.add_argument("--out", type=Path, required=True)
    gradescope = commands.add_parser(
        "gradescope", help="build Gradescope's autograder zip (setup.sh, run_autograder, grader)"
    )
    gradescope.add_argument("--out", type=Path, default=Path("autograder.zip"))
    gradescope.add_argument("--release", type=Path, default=grading.DEFAULT_RELEASE)
    import_grades = commands.add_parser(
        "import-grades", help="write the CI grader's scores into nbgrader's gradebook"
    )
    import_grades.add_argument("dir", type=Path, help="the grader's output folder (--out)")
    import_grades.add_argument(
        "--gradebook", required=True, help="nbgrader's database: sqlite:///gradebook.db, or a path"
    )
    import_grades.add_argument(
        "--assignment", action="append", help="import only this assignment (repeatable)"
    )
    import_grades.add_argument(
        "--course-id", help="nbgrader's course id (default: nbgrader_config.py's)"
    )
    import_grades.add_argument(
        "--submitted",
        type=Path,
        help="the folder CI graded: its notebooks go to the course's autograded/ (outputs "
        "cleared), where formgrader shows them for the written answers",
    )
    import_grades.add_argument("--release", type=Path, default=grading.DEFAULT_RELEASE)
    similar = commands.add_parser(
        "similarity", help="find similar submissions of an assignment (an HTML report)"
    )
    similar.add_argument("paths", nargs="+", help="submissions roots, or notebooks")
    similar.add_argument("--out", type=Path, required=True, help="the report's folder")
    similar.add_argument(
        "--threshold", type=float, help="share of one side's code that flags a pair (0.5)"
    )
    similar.add_argument("--release", type=Path, default=grading.DEFAULT_RELEASE)
    return parser


def _report_refused(found: list[grading.Submission]) -> None:
    """Say on stderr what discovery refused (each is "not graded" in the reports)."""
    refused = [s for s in found if s.problem]
    if not refused:
        return
    lines = [f"autograder: {len(refused)} of {len(found)} entries refused, reported as not graded:"]
    lines += [f"  {grading.printable(s.rel.as_posix())}: {s.problem}" for s in refused[:20]]
    if len(refused) > 20:
        lines.append(f"  ... and {len(refused) - 20} more (see summary.md)")
    print("\n".join(lines), file=sys.stderr)


def run_grade(args: argparse.Namespace) -> int:
    shard = grading.parse_shard(args.shard) if args.shard else None
    release = grading.Release(args.release)
    found = grading.discover(args.paths)
    if not found:
        raise grading.GraderError(f"no notebooks found in {' '.join(args.paths)}")
    _report_refused(found)
    # A shard may be empty (few notebooks, many shards): that is not an error.
    submissions = [s for s in found if grading.in_shard(s, shard)]
    if args.jobs < 1:
        raise grading.GraderError("--jobs must be at least 1")
    grader = grading.Grader(
        release,
        grading.Checks.default(with_hidden=True),
        args.out,
        jobs=args.jobs,
        limits=_limits(args),
        sandbox_mode=args.sandbox,
        seed=args.seed,
        force=args.force,
        feedback_shows_hidden=args.feedback_shows_hidden,
    )
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    start = time.monotonic()
    results = grader.run(submissions, _progress_bar if show else None)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [
        reports.row_from_results(s.out_rel.as_posix(), r.results)
        for s, r in zip(submissions, results, strict=True)
    ]
    reports.write_reports(rows, args.out)
    skipped = sum(r.skipped for r in results)
    print(
        f"graded {len(results) - skipped} notebooks, {skipped} unchanged since the last run, "
        f"in {time.monotonic() - start:.1f} s (sandbox: {grader.mode}); "
        f"results in {args.out}"
    )
    failed = [r for r in results if r.results.get("extra_data", {}).get("retry")]
    if failed:
        print(
            f"autograder: {len(failed)} notebook(s) not graded (the sandbox failed on them "
            "twice); run the same command again to grade them",
            file=sys.stderr,
        )
        return INCOMPLETE
    return 0


def run_check(args: argparse.Namespace) -> int:
    release = grading.Release(args.release)
    if not args.notebook.is_file():
        raise grading.GraderError(f"{args.notebook}: no such notebook")
    submission = grading.Submission(args.notebook, Path(args.notebook.name))
    grader = grading.Grader(
        release,
        grading.Checks.default(with_hidden=False),
        None,
        jobs=1,
        limits=_limits(args),
        sandbox_mode=args.sandbox,
        seed=0,
    )
    result = grader.run([submission])[0].results
    if not result.get("extra_data", {}).get("assignment"):
        raise grading.GraderError(result["output"])
    print(result["output"])
    print()
    failed = 0
    for test in result["tests"]:
        mark = "PASS" if test["status"] == "passed" else "FAIL"
        failed += mark == "FAIL"
        print(f"{mark}  {test['name']}  ({test['score']:g}/{test['max_score']:g})")
        if mark == "FAIL":
            print("      " + test["output"].replace("\n", "\n      "))
    total = sum(t["max_score"] for t in result["tests"])
    print(f"\npublic checks: {result['score']:g} / {total:g} (the hidden cases are graded later)")
    return 1 if failed or not result["tests"] else 0


def _grading_of(results: dict) -> tuple[str, str] | None:
    """What decides a result's grade besides the notebook: its term and grader version."""
    extra = results.get("extra_data") if isinstance(results.get("extra_data"), dict) else {}
    if not extra.get("assignment"):
        return None  # not graded at all (refused, unknown assignment)
    return str(extra.get("term")), str(extra.get("grader_version"))


def _check_shards_agree(dirs: list[Path]) -> None:
    """Refuse to join shards graded with other seeds or another grader, per assignment."""
    seen: dict[str, tuple[tuple[str, str], Path]] = {}
    for directory in dirs:
        for row in reports.collect(directory):
            grading_of = _grading_of(row.results)
            if grading_of is None:
                continue
            first = seen.setdefault(row.assignment, (grading_of, directory))
            if first[0] != grading_of:
                raise grading.GraderError(
                    f"{first[1]} and {directory} graded {row.assignment} differently (term "
                    f"{first[0][0]} vs {grading_of[0]}, or another grader version or seed): "
                    "regrade them with the same grader and term"
                )


def run_merge(args: argparse.Namespace) -> int:
    for directory in args.dirs:
        if not directory.is_dir():
            raise grading.GraderError(f"{directory}: no such folder")
    _check_shards_agree(args.dirs)
    rows = reports.merge(args.dirs, args.out)
    print(f"merged {len(rows)} results into {args.out}")
    return 0


def run_new_term(args: argparse.Namespace) -> int:
    assignments = list(grading.Release(args.release).notebooks)
    made = term_module.new_term(args.name, assignments)
    print(
        f"term {made.name}: new hidden-case seeds for {', '.join(assignments)} in "
        f"{term_module.TERM_FILE}; commit it (it never ships to students)"
    )
    return 0


def run_gradescope(args: argparse.Namespace) -> int:
    from autograder import gradescope

    names = gradescope.build_bundle(args.out, args.release)
    print(
        f"wrote {args.out} ({len(names)} files: the grader, its hidden cases and the term's "
        "seeds, the release's notebooks): upload it as the assignment's autograder, never "
        "to students"
    )
    return 0


def run_import_grades(args: argparse.Namespace) -> int:
    from autograder import gradebook

    if not args.dir.is_dir():
        raise grading.GraderError(f"{args.dir}: no such folder")
    course_id, course_root = gradebook.course_config()
    report = gradebook.import_results(
        args.dir,
        gradebook.database_url(args.gradebook),
        grading.Release(args.release),
        course_id=args.course_id or course_id,
        assignments=set(args.assignment) if args.assignment else None,
        submitted=args.submitted,
        autograded=course_root / "autograded" if args.submitted else None,
    )
    print(
        f"imported {len(report.imported)} submissions into {args.gradebook}; created "
        f"{len(report.created_students)} students and {len(report.created_assignments)} "
        "assignments; the written answers stay for formgrader"
    )
    for rel, why in report.not_imported:
        print(f"  not imported: {grading.printable(rel)}: {why}", file=sys.stderr)
    for rel, why in report.not_for_formgrader:
        print(f"  imported, not placed for formgrader: {grading.printable(rel)}: {why}")
    for student, assignment, grade_id in report.review:
        print(f"  hand grade kept, CI's score changed: {student} {assignment} {grade_id}")
    return 0


def run_similarity(args: argparse.Namespace) -> int:
    from autograder import similarity

    threshold = similarity.DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    report = similarity.find_similar(args.paths, grading.Release(args.release), threshold)
    path = similarity.write_report(report, args.out)
    print(
        f"compared {report.pairs_compared} pairs; {len(report.flagged)} share "
        f"{threshold:.0%} or more of one side's code; report in {path}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "grade":
            return run_grade(args)
        if args.command == "check":
            return run_check(args)
        if args.command == "new-term":
            return run_new_term(args)
        if args.command == "gradescope":
            return run_gradescope(args)
        if args.command == "import-grades":
            return run_import_grades(args)
        if args.command == "similarity":
            return run_similarity(args)
        return run_merge(args)
    except (grading.GraderError, term_module.TermError, nb.NotebookError, RuntimeError) as error:
        print(f"autograder: {error}", file=sys.stderr)
        return CANNOT_RUN
    except KeyboardInterrupt:
        print("\nautograder: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
