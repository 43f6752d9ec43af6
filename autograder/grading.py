"""The trusted side of the grader: find notebooks, build cases, run them in the sandbox, score.

Everything here runs in the grader's own process and trusts only the release
(``exercises/<assignment>/<notebook>.ipynb``: grade_ids and points), ``course_checks``
and ``hidden_cases``. Cases, their inputs and torch's reference outputs are computed here,
once per assignment and run, before any student code runs. The sandbox (``sandbox.py``,
``runner.py``) only executes the student's code and hands back tensors, which are read
with safetensors and compared here.

Scoring: a test cell scores its points only when every one of its cases passes (as in
nbgrader, where a test cell passes or fails as a whole), so the instructor's answers get
100 and the release 0. Hand-graded questions are listed, never scored.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder import notebook as nb
from autograder import sandbox, static_scan

#: Bump when the grading logic changes in a way the source hashes below would not show.
GRADER_VERSION = "1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RELEASE = REPO_ROOT / "exercises"
MAX_OUTPUT_FILE = 256 << 20  # bytes of one case's outputs read back at most
MAX_MESSAGE = 1500


class GraderError(RuntimeError):
    """The grader itself cannot run (bad arguments, no notebooks, release missing)."""


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Submission:
    """A notebook to grade, and where its results go (``rel`` without the suffix)."""

    path: Path
    rel: Path  # relative to the PATH argument it was found under, e.g. alice/01_x/nb.ipynb

    @property
    def out_rel(self) -> Path:
        return self.rel.with_suffix("")


def discover(paths: Iterable[str | Path]) -> list[Submission]:
    """The notebooks named by ``paths`` (files, or folders searched recursively), sorted."""
    found: dict[Path, Submission] = {}
    for raw in paths:
        root = Path(raw)
        if root.is_file():
            # A notebook named on the command line keeps its relative path (a shell glob
            # such as submitted/*/01_x/nb.ipynb must not collide); an absolute one, its name.
            plain = not root.is_absolute() and ".." not in root.parts
            candidates = [(root, root if plain else Path(root.name))]
        elif root.is_dir():
            candidates = [
                (path, path.relative_to(root))
                for path in sorted(root.rglob("*.ipynb"))
                if ".ipynb_checkpoints" not in path.parts and path.is_file()
            ]
        else:
            raise GraderError(f"{raw}: no such file or folder")
        for path, rel in candidates:
            submission = Submission(path, rel)
            other = found.get(submission.out_rel)
            if other is not None and other.path.resolve() != path.resolve():
                raise GraderError(
                    f"{other.path} and {path} would write the same results "
                    f"({submission.out_rel}/results.json): grade them in separate runs"
                )
            found[submission.out_rel] = submission
    return [found[key] for key in sorted(found)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 ≤ K ≤ N) as a pair."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError as error:
        raise GraderError(f"--shard {text!r}: expected K/N, e.g. 1/4") from error
    if not 1 <= k <= n:
        raise GraderError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def in_shard(submission: Submission, shard: tuple[int, int] | None) -> bool:
    """Deterministic split by path: shard K of N holds the paths whose hash is K-1 mod N."""
    if shard is None:
        return True
    k, n = shard
    digest = hashlib.sha256(submission.rel.as_posix().encode()).digest()
    return int.from_bytes(digest[:8], "big") % n == k - 1


# --------------------------------------------------------------------------- the release


class Release:
    """The trusted release folder: ``<root>/<assignment>/<notebook>.ipynb``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.notebooks: dict[str, Path] = {}
        if self.root.is_dir():
            for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
                notebooks = sorted(folder.glob("*.ipynb"))
                if notebooks:
                    self.notebooks[folder.name] = notebooks[0]
        if not self.notebooks:
            raise GraderError(f"release {self.root}: no <assignment>/<notebook>.ipynb found")
        self._cache: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def notebook(self, assignment: str) -> dict[str, Any]:
        with self._lock:
            if assignment not in self._cache:
                self._cache[assignment] = nb.read_notebook(self.notebooks[assignment])
            return self._cache[assignment]

    def identify(self, notebook: dict[str, Any] | None, path: Path) -> tuple[str | None, str]:
        """The assignment of a submission, and how it was found.

        The notebook's ``metadata.course.assignment`` first, then the file name, then a
        folder of the path (nbgrader's ``submitted/<student>/<assignment>/``).
        """
        declared = nb.assignment_name(notebook) if notebook is not None else None
        if declared in self.notebooks:
            return declared, "notebook metadata"
        for assignment, release_path in self.notebooks.items():
            if path.stem == release_path.stem:
                return assignment, "file name"
        for part in reversed(path.parts[:-1]):
            if part in self.notebooks:
                return part, "folder name"
        return None, ""


def student_name(submission: Submission, assignment: str | None) -> str:
    """The student: nbgrader's ``submitted/<student>/<assignment>/``, else the path."""
    parts = submission.path.parts
    if "submitted" in parts[:-1]:
        index = len(parts) - 1 - parts[::-1].index("submitted")
        if index + 1 < len(parts) - 1:
            return parts[index + 1]
    rel_parts = submission.rel.parts
    if assignment and len(rel_parts) >= 3 and rel_parts[-2] == assignment:
        return rel_parts[-3]
    return submission.out_rel.as_posix()


# --------------------------------------------------------------------------- cases


@dataclass
class PlannedCase:
    case: Any
    origin: str  # "public" or "hidden"
    inputs: dict[str, Any]
    expected: dict[str, Any]


@dataclass
class Plan:
    """One assignment's graded work for this run: tests, their points, cases, references."""

    assignment: str
    release_path: Path
    tests: list[nb.TestCell]
    manual: list[nb.TestCell]
    cases: list[PlannedCase]
    inputs_file: Path  # every case's inputs, keys "<index>/<name>" (safetensors)
    version: str  # hash of everything that decides a grade, with GRADER_VERSION
    setup_errors: dict[str, str] = field(default_factory=dict)  # grade_id -> why no cases


def _source_hash(paths: Iterable[Path], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()


def _description(case: Any) -> str:
    try:
        return str(case.describe())
    except Exception:  # a description is a courtesy: never let it stop grading
        return f"{case.target} with {json.dumps(case.params, default=str)[:300]}"


def _test_title(test: nb.TestCell) -> str:
    """The first line of a test cell's docstring (what it checks), else its grade_id."""
    for line in test.source.splitlines():
        text = line.strip().strip('"').strip("'").strip()
        if text:
            return text if not line.strip().startswith(("from", "import", "check")) else ""
    return ""


class Checks:
    """The trusted checks: ``course_checks`` and the hidden cases (swappable for tests)."""

    def __init__(self, module: Any = None, hidden: Callable[[str, int], list] | None = None):
        if module is None:
            from autograder import course_checks as module
        self.module = module
        self.hidden = hidden
        self.path = Path(module.__file__)

    @classmethod
    def default(cls, with_hidden: bool) -> Checks:
        hidden = None
        if with_hidden:
            from autograder import hidden_cases

            hidden = hidden_cases.hidden_cases
        return cls(hidden=hidden)

    def source_files(self) -> list[Path]:
        files = [self.path]
        if self.hidden is not None:
            files.append(Path(self.hidden.__code__.co_filename))
        return files


def build_plan(
    assignment: str, release: Release, checks: Checks, seed: int, work_root: Path
) -> Plan:
    """Cases, inputs and torch's outputs for one assignment, in the trusted process."""
    import torch
    from safetensors.torch import save_file

    module = checks.module
    release_nb = release.notebook(assignment)
    tests = nb.test_cells(release_nb)
    planned: list[PlannedCase] = []
    errors: dict[str, str] = {}
    for test in tests:
        try:
            cases = [(case, "public") for case in module.PUBLIC_CASES.get(test.grade_id, [])]
            if checks.hidden is not None:
                cases += [(case, "hidden") for case in checks.hidden(test.grade_id, seed)]
        except Exception as error:
            errors[test.grade_id] = f"the grader could not build its cases: {error!r}"
            continue
        if not cases:
            errors[test.grade_id] = "the grader has no cases for this test (tell the instructor)"
        for case, origin in cases:
            try:
                inputs = module.make_inputs(case)
                copies = {
                    k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()
                }
                expected = module.reference_outputs(case, copies)
            except Exception as error:
                errors[test.grade_id] = f"the grader could not compute torch's answer: {error!r}"
                break
            planned.append(PlannedCase(case, origin, inputs, expected))
    tensors = {}
    for index, item in enumerate(planned):
        for name, value in item.inputs.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{name}"] = value.detach().clone().contiguous()
    inputs_file = work_root / f"inputs-{assignment}.safetensors"
    save_file(tensors, str(inputs_file))
    files = checks.source_files() + [
        release.notebooks[assignment],
        sandbox.RUNNER,
        Path(__file__),
    ]
    # Not the seed: it changes every run, and a re-run must still recognise finished work.
    version = _source_hash(files, f"{GRADER_VERSION}:{'hidden' if checks.hidden else 'public'}")
    return Plan(
        assignment,
        release.notebooks[assignment],
        tests,
        nb.manual_cells(release_nb),
        planned,
        inputs_file,
        version,
        errors,
    )


def case_to_json(case: Any) -> dict[str, Any]:
    """A case as the sandbox gets it: without its seed (the inputs travel as tensors, and
    the seed of the hidden cases stays in the trusted process)."""
    data = case.to_json()
    data["seed"] = 0
    return data


# --------------------------------------------------------------------------- results


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 20] + " … (cut)"


def _read_json(path: Path, limit: int = 1 << 20) -> Any:
    """An untrusted JSON file written by the child (None when absent, too big or invalid)."""
    try:
        if not path.is_file() or path.stat().st_size > limit:
            return None
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return None


def _read_tensors(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The child's outputs, through safetensors only (no code can run while loading)."""
    from safetensors.torch import load_file

    try:
        if not path.is_file():
            return None, None
        if path.stat().st_size > MAX_OUTPUT_FILE:
            return None, "the outputs are too large"
        return load_file(str(path)), None
    except Exception as error:  # a corrupt file is the submission's problem, not the batch's
        return None, f"the outputs could not be read ({type(error).__name__})"


@dataclass
class CaseResult:
    passed: bool
    description: str
    message: str
    diagnosis: str | None = None
    kernel: str | None = None


def _student_exception(type_name: Any, message: Any) -> Exception:
    """An exception standing for the one the student's call raised in the sandbox.

    Only its type's name and message crossed the boundary (as text); ``compare`` judges
    it: a pass when torch raises too.
    """
    name = str(type_name or "Exception")
    if not name.isidentifier() or len(name) > 60:
        name = "Exception"
    return type(name, (Exception,), {})(_clip(str(message or ""), 600))


def judge_case(
    checks: Checks,
    item: PlannedCase,
    status: Any,
    outputs: dict[str, Any] | None,
    read_error: str | None,
    tampered: list[str],
    stopped: str,
) -> CaseResult:
    """One case's verdict from what the sandbox left (``status`` is untrusted JSON)."""
    import torch

    module = checks.module
    describe = _description(item.case)
    if tampered:
        return CaseResult(
            False,
            describe,
            "not graded: the submission modified the grader's checks "
            f"({', '.join(map(str, tampered[:5]))})",
        )
    if not isinstance(status, dict):
        return CaseResult(False, describe, f"not run: {stopped}")
    if status.get("state") != "finished":
        return CaseResult(False, describe, f"this case was running when {stopped}")
    kernel = status.get("kernel")
    trace = ""
    if kernel:
        kernel = _clip(str(kernel), 200)
        actual: Any = module.ForbiddenKernelError(kernel)
    elif status.get("missing"):
        return CaseResult(False, describe, f"{describe}: {_clip(status.get('error'), 200)}")
    elif status.get("error") is not None:
        actual = _student_exception(status.get("error_type"), status.get("error"))
        trace = _clip(status.get("traceback") or "", 1200)
    elif read_error:
        return CaseResult(False, describe, f"{describe}: {read_error}")
    else:
        others = status.get("others")
        others = {str(k): str(v) for k, v in others.items()} if isinstance(others, dict) else {}
        actual = module.import_outputs(dict(outputs or {}), others)
    inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in item.inputs.items()}
    try:
        verdict = module.compare(item.case, inputs, item.expected, actual)
    except Exception as error:
        return CaseResult(False, describe, f"{describe}: could not be compared: {error!r}")
    message = _clip(verdict.message)
    if trace and not verdict.passed:
        message += "\n" + trace
    return CaseResult(
        bool(verdict.passed),
        describe,
        message,
        getattr(verdict, "diagnosis", None),
        kernel or None,
    )


@dataclass
class SubmissionResult:
    results: dict[str, Any]
    student: str
    assignment: str
    score: float
    max_score: float
    skipped: bool = False


def _result_json(
    score: float,
    seconds: float,
    output: str,
    tests: list[dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "score": round(score, 4),
        "execution_time": round(seconds, 3),
        "output": output,
        "tests": tests,
        "extra_data": extra,
    }


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- the grader


class Grader:
    """Grades submissions with ``jobs`` sandbox workers; one instance per run."""

    def __init__(
        self,
        release: Release,
        checks: Checks,
        out_dir: Path | None,
        *,
        jobs: int = 1,
        limits: sandbox.Limits | None = None,
        sandbox_mode: str = "auto",
        seed: int | None = None,
        force: bool = False,
    ):
        self.release = release
        self.checks = checks
        self.out_dir = out_dir
        self.jobs = max(1, jobs)
        self.limits = limits or sandbox.Limits()
        self.mode, note = sandbox.choose_sandbox(sandbox_mode)
        self.sandbox_text = sandbox.describe_sandbox(self.mode, note)
        self.seed = secrets.randbits(62) if seed is None else seed
        self.force = force
        self.work_root = Path(tempfile.mkdtemp(prefix="autograder-"))
        os.chmod(self.work_root, 0o711)
        self.grader_dir = self.work_root / "grader"
        self.grader_dir.mkdir()
        shutil.copy(sandbox.RUNNER, self.grader_dir / "runner.py")
        shutil.copy(checks.path, self.grader_dir / "course_checks.py")
        os.chmod(self.grader_dir, 0o755)
        for name in ("runner.py", "course_checks.py"):
            os.chmod(self.grader_dir / name, 0o644)
        self.plans: dict[str, Plan] = {}
        self.plan_lock = threading.Lock()
        self.workers: list[sandbox.Worker] = []
        self.stopping = False

    # -- plans

    def plan(self, assignment: str) -> Plan:
        with self.plan_lock:
            if assignment not in self.plans:
                self.plans[assignment] = build_plan(
                    assignment, self.release, self.checks, self.seed, self.work_root
                )
            return self.plans[assignment]

    # -- one submission

    def results_path(self, submission: Submission) -> Path | None:
        if self.out_dir is None:
            return None
        return self.out_dir / submission.out_rel / "results.json"

    def grade(self, submission: Submission, worker: sandbox.Worker) -> SubmissionResult:
        start = time.monotonic()
        try:
            data = submission.path.read_bytes()
        except OSError as error:
            data = b""
            read_problem = f"cannot be read ({error})"
        else:
            read_problem = None
        digest = hashlib.sha256(data).hexdigest()
        notebook = None
        problem = read_problem
        if problem is None:
            try:
                notebook = nb.read_notebook(submission.path)
            except nb.NotebookError as error:
                problem = str(error)
        assignment, how = self.release.identify(notebook, submission.path)
        student = student_name(submission, assignment)
        if assignment is None:
            output = (
                f"Not graded: cannot tell which assignment {submission.rel} is "
                f"(known: {', '.join(self.release.notebooks)})."
            )
            if problem:
                output += f"\nThe notebook {problem}."
            extra = self._extra(submission, digest, None, student, "none")
            return SubmissionResult(
                _result_json(0, time.monotonic() - start, output, [], extra),
                student,
                "",
                0,
                0,
            )
        plan = self.plan(assignment)
        previous = self._previous(submission, digest, plan)
        if previous is not None:
            return previous
        extra = self._extra(submission, digest, plan, student, how)
        if problem is not None:
            tests = [
                self._test_json(test, False, [f"not graded: the notebook {problem}"], [])
                for test in plan.tests
            ]
            output = self._header(plan, submission, 0) + f"\nThe notebook {problem}: score 0."
            output += self._manual_text(plan, None)
            return self._finish(submission, plan, student, tests, output, extra, start)

        cells = nb.student_code(notebook, self.release.notebook(assignment))
        findings = static_scan.scan_cells(cells)
        job_name = secrets.token_hex(8)
        job_dir = Path(worker.new_job_dir(job_name))
        try:
            (job_dir / "cells.json").write_text(
                json.dumps([{"label": c.label, "source": c.source} for c in cells])
            )
            (job_dir / "cases.json").write_text(
                json.dumps([case_to_json(item.case) for item in plan.cases])
            )
            shutil.copy(plan.inputs_file, job_dir / "inputs.safetensors")
            outcome = worker.run(job_name, self.limits)
            tests, notes = self._collect(plan, job_dir, outcome)
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        output = self._header(plan, submission, sum(t["score"] for t in tests))
        if notes:
            output += "\n" + "\n".join(notes)
        if findings:
            output += (
                "\nStatic scan (a warning only: no point is taken for it; the kernel guard "
                "at torch's dispatcher decides):\n" + "\n".join(f"  {f}" for f in findings[:30])
            )
        output += self._manual_text(plan, notebook)
        extra["static_scan"] = [str(f) for f in findings[:100]]
        extra["timed_out"] = outcome.timed_out
        if outcome.worker_error:
            extra["retry"] = True  # the sandbox failed: a re-run grades this one again
        return self._finish(submission, plan, student, tests, output, extra, start)

    def _previous(self, submission: Submission, digest: str, plan: Plan) -> SubmissionResult | None:
        path = self.results_path(submission)
        if self.force or path is None or not path.is_file():
            return None
        old = _read_json(path, limit=64 << 20)
        if not isinstance(old, dict) or not isinstance(old.get("extra_data"), dict):
            return None
        extra = old["extra_data"]
        if extra.get("notebook_sha256") != digest or extra.get("grader_version") != plan.version:
            return None
        if extra.get("retry"):
            return None
        return SubmissionResult(
            old,
            str(extra.get("student")),
            str(extra.get("assignment")),
            float(old.get("score", 0)),
            float(extra.get("max_score", 0)),
            skipped=True,
        )

    def _extra(self, submission, digest, plan, student, how) -> dict[str, Any]:
        return {
            "notebook": submission.rel.as_posix(),
            "notebook_sha256": digest,
            "grader_version": plan.version if plan else GRADER_VERSION,
            "assignment": plan.assignment if plan else None,
            "assignment_from": how,
            "student": student,
            "max_score": sum(t.points for t in plan.tests) if plan else 0,
            "sandbox": self.mode,
            "sandbox_details": self.sandbox_text,
            "seed": self.seed,
        }

    def _header(self, plan: Plan, submission: Submission, score: float) -> str:
        total = sum(t.points for t in plan.tests)
        return (
            f"Assignment {plan.assignment}, notebook {submission.rel.as_posix()}: "
            f"{score:g} / {total:g} autograded points.\n"
            "Each test scores its points only when all its cases pass."
        )

    def _manual_text(self, plan: Plan, notebook: dict[str, Any] | None) -> str:
        if not plan.manual:
            return ""
        lines = ["", "Graded by hand (not in this score; for a TA to read):"]
        answers = {}
        if notebook is not None:
            for cell in notebook.get("cells", []):
                if isinstance(cell, dict):
                    meta = (cell.get("metadata") or {}).get("nbgrader") or {}
                    if isinstance(meta, dict) and meta.get("grade_id"):
                        answers[meta["grade_id"]] = nb.cell_source(cell)
        for test in plan.manual:
            lines.append(f"- {test.grade_id} ({test.points:g} points)")
            answer = answers.get(test.grade_id)
            if answer is not None:
                quoted = _clip(answer.strip(), 2000).replace("\n", "\n    ")
                lines.append(f"    {quoted}")
            else:
                lines.append("    (answer cell not found)")
        return "\n".join(lines)

    def _test_json(self, test, passed, lines, case_results) -> dict[str, Any]:
        title = _test_title(test)
        header = [title] if title else []
        return {
            "name": test.grade_id,
            "score": test.points if passed else 0,
            "max_score": test.points,
            "status": "passed" if passed else "failed",
            "output": "\n".join(header + lines),
        }

    def _collect(self, plan: Plan, job_dir: Path, outcome: sandbox.JobOutcome):
        notes = []
        if outcome.timed_out:
            stopped = f"the time limit ({self.limits.timeout:g} s wall clock) was reached"
            notes.append(f"The submission was stopped after {self.limits.timeout:g} s (timeout).")
        elif outcome.worker_error:
            stopped = f"the sandbox failed ({outcome.worker_error})"
            notes.append(f"The sandbox failed: {outcome.worker_error}")
        else:
            stopped = "the submission's process ended (os._exit, a crash, or a limit)"
        if outcome.stray_processes:
            notes.append(
                f"Your cells left {outcome.stray_processes} process(es) running: they were "
                "stopped before the graded calls, which run alone."
            )
        report = _read_json(job_dir / "cells_report.json")
        if isinstance(report, list):
            for entry in report[:200]:
                if not isinstance(entry, dict):
                    continue
                label = _clip(entry.get("label"), 40)
                if entry.get("running"):
                    notes.append(f"{label} did not finish: {stopped}.")
                if entry.get("error"):
                    notes.append(
                        f"{label} raised (the next cells still ran):\n  "
                        + _clip(entry["error"], 800).replace("\n", "\n  ")
                    )
                if entry.get("unsupported"):
                    notes.append(
                        f"{label}: IPython lines are not supported and were skipped: "
                        + _clip(", ".join(map(str, entry["unsupported"])), 300)
                    )
        tampered = _read_json(job_dir / "tamper.json")
        tampered = [str(t) for t in tampered] if isinstance(tampered, list) else []
        if tampered:
            notes.append("The submission modified the grader's checks: no case is graded.")
        by_test: dict[str, list[CaseResult]] = {t.grade_id: [] for t in plan.tests}
        for index, item in enumerate(plan.cases):
            status = _read_json(job_dir / f"case_{index}.json")
            outputs, read_error = _read_tensors(job_dir / f"case_{index}.safetensors")
            result = judge_case(self.checks, item, status, outputs, read_error, tampered, stopped)
            by_test.setdefault(item.case.grade_id, []).append(result)
        tests = []
        for test in plan.tests:
            results = by_test.get(test.grade_id, [])
            lines = []
            if test.grade_id in plan.setup_errors:
                lines.append(plan.setup_errors[test.grade_id])
            passed = bool(results) and all(r.passed for r in results)
            passed = passed and test.grade_id not in plan.setup_errors
            for result in results:
                mark = "passed" if result.passed else "FAILED"
                message = result.message
                if not message.startswith(result.description):
                    message = f"{result.description}: {message}"
                if result.diagnosis and not result.passed and result.diagnosis not in message:
                    message += f"\n  likely bug: {result.diagnosis}"
                lines.append(f"[{mark}] " + message.replace("\n", "\n    "))
            tests.append(self._test_json(test, passed, lines, results))
        return tests, notes

    def _finish(self, submission, plan, student, tests, output, extra, start) -> SubmissionResult:
        score = sum(t["score"] for t in tests)
        max_score = sum(t.points for t in plan.tests)
        output += f"\nSandbox: {self.sandbox_text}."
        results = _result_json(score, time.monotonic() - start, output, tests, extra)
        return SubmissionResult(results, student, plan.assignment, score, max_score)

    # -- the batch

    def run(
        self, submissions: list[Submission], progress: Callable[[int, int], None] | None = None
    ) -> list[SubmissionResult]:
        """Grade every submission (each result written as soon as it is known)."""
        self.workers = [
            sandbox.Worker(self.mode, str(self.grader_dir), str(self.work_root))
            for _ in range(min(self.jobs, max(1, len(submissions))))
        ]
        free = list(self.workers)
        free_lock = threading.Lock()
        results: list[SubmissionResult | None] = [None] * len(submissions)

        def one(index: int) -> int:
            with free_lock:
                worker = free.pop()
            try:
                result = self.grade(submissions[index], worker)
            except Exception as error:  # never lose the batch to one notebook
                result = SubmissionResult(
                    _result_json(
                        0,
                        0,
                        f"Not graded: the grader failed on this notebook ({error!r}).",
                        [],
                        {"notebook": submissions[index].rel.as_posix(), "error": repr(error)},
                    ),
                    student_name(submissions[index], None),
                    "",
                    0,
                    0,
                )
            finally:
                with free_lock:
                    free.append(worker)
            if self.stopping:
                return index  # interrupted: a result of a killed sandbox is not a grade
            path = self.results_path(submissions[index])
            if path is not None and not result.skipped:
                write_atomic(path, json.dumps(result.results, indent=1) + "\n")
            results[index] = result
            return index

        pool = ThreadPoolExecutor(max_workers=len(self.workers))
        try:
            futures = [pool.submit(one, i) for i in range(len(submissions))]
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                if progress:
                    progress(done, len(submissions))
        except BaseException:
            # Interrupted (Ctrl-C, a failure of the grader): queued notebooks stay ungraded,
            # running ones are killed and not recorded, so that a re-run resumes cleanly.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            self.close()
            pool.shutdown(wait=True)
        # Outside bubblewrap a submission can write wherever the grader can, other students'
        # results.json included: now that none runs, rewrite them all from the grader's record.
        for submission, result in zip(submissions, results, strict=True):
            path = self.results_path(submission)
            if path is not None and result is not None and not result.skipped:
                write_atomic(path, json.dumps(result.results, indent=1) + "\n")
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.stopping = True
        for worker in self.workers:
            worker.close()
        self.workers = []
        shutil.rmtree(self.work_root, ignore_errors=True)
