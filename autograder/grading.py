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

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autograder import notebook as nb
from autograder import protocol, sandbox, static_scan
from autograder import term as term_module

#: Bump when the grading logic changes in a way the source hashes below would not show.
GRADER_VERSION = "1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RELEASE = REPO_ROOT / "exercises"
MAX_OUTPUT_FILE = 256 << 20  # bytes of one case's outputs read back at most
MAX_MESSAGE = 1500
CELL_RAISED = "raised (the next cells still ran)"


def _needs_a_look(finding: Any) -> bool:
    """A static-scan finding that marks a route the guard cannot see (native code)."""
    return getattr(finding, "severity", "") == "review"


class GraderError(RuntimeError):
    """The grader itself cannot run (bad arguments, no notebooks, release missing)."""


# --------------------------------------------------------------------------- discovery

#: nbgrader's name for the folder of submissions; never a folder below the root.
SUBMITTED = "submitted"
#: Folders discovery enters below the root: nbgrader's layout needs two (student, assignment).
MAX_FOLDERS = 4
#: Entries (notebooks and refusals) one student's folder may add to a batch.
MAX_ENTRIES_PER_STUDENT = 50
#: Results of names that are not mirrored go under this folder (``~`` is never mirrored).
HASHED_RESULTS = "~hashed"
NO_STUDENT = "(no student folder)"
_MIRRORABLE = re.compile(r"\w[\w.-]{0,63}")
_MIRRORED_LENGTH = 200
_NOT_FOLLOWED = "is a symbolic link: links in the submissions are never followed"


def printable(text: str, limit: int = 200, *, unique: bool = True) -> str:
    """``text`` with every character printable (and valid UTF-8), cut to ``limit``.

    An undecodable byte of a file name (Python's surrogate escape) shows as ``\\xff``, any
    other unprintable character (newline, bidi override, ...) as its Python escape; with
    ``unique`` a backslash shows as two, so that two different names never print alike. A
    text longer than ``limit`` is cut and ends with a short hash of the whole.
    """
    shown = []
    for char in str(text):
        if "\udc80" <= char <= "\udcff":
            shown.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char == "\\" and unique:
            shown.append("\\\\")
        elif char.isprintable():
            shown.append(char)
        else:
            shown.append(char.encode("unicode_escape").decode("ascii"))
    result = "".join(shown)
    if len(result) <= limit:
        return result
    digest = hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{result[: limit - 9]}…{digest}"


@dataclass(frozen=True)
class Submission:
    """A notebook to grade (or an entry refused on the way), and where its results go.

    ``rel`` is the path below the submissions root, ``student`` the printable name of its
    first folder; ``problem`` says why it is refused (then nothing of it is read or run).
    """

    path: Path
    rel: Path  # relative to the root it was found under, e.g. alice/01_x/nb.ipynb
    student: str = ""
    problem: str | None = None
    results_folder: Path | None = None  # below --out; discover sets one unique per batch

    @property
    def out_rel(self) -> Path:
        if self.results_folder is not None:
            return self.results_folder
        return _results_folder(self.rel)


def _results_folder(rel: Path, taken: int = 0) -> Path:
    """``rel`` without ``.ipynb`` while short and printable, else a hashed name."""
    mirrored = rel.with_name(rel.name.removesuffix(".ipynb")) if rel.parts else rel
    parts = mirrored.parts
    if (
        not taken
        and parts
        and len(mirrored.as_posix()) <= _MIRRORED_LENGTH
        and all(_MIRRORABLE.fullmatch(part) for part in parts)
    ):
        return mirrored
    digest = hashlib.sha256(os.fsencode(rel.as_posix()) + b"\0%d" % taken).hexdigest()
    return Path(HASHED_RESULTS) / digest[:24]


def _refusal(path: Path, rel: Path, problem: str) -> Submission:
    return Submission(path, rel, _student_of(rel), problem)


def _student_of(rel: Path) -> str:
    return printable(rel.parts[0]) if len(rel.parts) > 1 else NO_STUDENT


def _walk(root: Path) -> list[Submission]:
    """Every notebook below ``root``, and every entry refused on the way (never raises).

    Nothing below the root is followed through a symbolic link; a folder named
    ``submitted`` and folders deeper than ``MAX_FOLDERS`` are refused, not entered.
    """
    found: list[Submission] = []
    pending = [(root, Path())]
    while pending:
        folder, rel = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            if not rel.parts:
                raise GraderError(f"{root}: cannot be read ({error.strerror})") from error
            found.append(_refusal(folder, rel, f"cannot be read ({error.strerror})"))
            continue
        for entry in entries:
            found.extend(_look_at(entry, rel / entry.name, pending))
    return found


#: Folders that hold no submission: Jupyter's autosaves, and a submissions repository's
#: (or a student's cloned repository's) version control.
NOT_SUBMISSIONS = frozenset({".ipynb_checkpoints", ".git"})


def _look_at(entry: os.DirEntry, rel: Path, pending: list) -> list[Submission]:
    """What one folder entry adds: a notebook, a refusal, nothing (a folder is queued)."""
    path = Path(entry.path)
    is_notebook = entry.name.endswith(".ipynb")
    try:
        if entry.name in NOT_SUBMISSIONS:
            return []
        if entry.is_symlink():
            points_to_folder = entry.is_dir()  # a link to a folder could hold notebooks
            return [_refusal(path, rel, _NOT_FOLLOWED)] if is_notebook or points_to_folder else []
        if entry.is_dir(follow_symlinks=False):
            if entry.name.casefold() == SUBMITTED:
                return [_refusal(path, rel, _nested_submitted(rel))]
            if len(rel.parts) > MAX_FOLDERS:
                why = f"folders nested more than {MAX_FOLDERS} deep are not searched"
                return [_refusal(path, rel, why)]
            pending.append((path, rel))
            return []
        if not is_notebook:
            return []
        if not entry.is_file(follow_symlinks=False):
            return [_refusal(path, rel, "is not a regular file")]
    except OSError as error:
        return [_refusal(path, rel, f"cannot be read ({error.strerror})")]
    if len(rel.parts) < 2:
        why = "is not in a student's folder (<root>/<student>/<assignment>/<notebook>.ipynb)"
        return [_refusal(path, rel, why)]
    return [Submission(path, rel, _student_of(rel))]


def _nested_submitted(rel: Path) -> str:
    if len(rel.parts) == 1:  # most likely `grade .` run in the course folder
        return (
            f"a folder named {SUBMITTED} in the submissions root is not searched: name it "
            f"as the root (python -m autograder grade {SUBMITTED} --out grading)"
        )
    return (
        f"a folder named {SUBMITTED} inside a student's folder: the student is the first "
        "folder under the submissions root, so it is not searched"
    )


def _named_notebook(raw: str | Path) -> Submission:
    """A notebook named on the command line, placed as if found under its root.

    The root is the first folder called ``submitted`` on the path as typed (nbgrader's
    ``submitted/<student>/<assignment>/<notebook>.ipynb``), else the folder three above
    the notebook; below the root the same rules hold as for a folder searched.
    """
    typed = Path(os.path.normpath(raw))
    parts = typed.parts
    if SUBMITTED in parts[:-1]:
        root = Path(*parts[: parts.index(SUBMITTED) + 1])
    else:
        absolute = Path(os.path.abspath(typed))
        root = absolute.parents[min(2, len(absolute.parents) - 1)]
        typed = absolute
    rel = typed.relative_to(root)
    if any(part.casefold() == SUBMITTED for part in rel.parts[:-1]):
        return _refusal(typed, rel, _nested_submitted(rel))
    if len(rel.parts) - 1 > MAX_FOLDERS:
        return _refusal(typed, rel, f"folders nested more than {MAX_FOLDERS} deep")
    step = root
    for part in rel.parts:
        step = step / part
        if step.is_symlink():
            return _refusal(typed, rel, f"{printable(part)} {_NOT_FOLLOWED}")
    if len(rel.parts) < 2:
        return _refusal(typed, rel, "is not in a student's folder")
    return Submission(typed, rel, _student_of(rel))


def _slot(submission: Submission) -> tuple[str, ...]:
    """Where one notebook of a student goes: nbgrader's ``<student>/<assignment>/`` folder
    (this course has one notebook per assignment), or the notebook itself when it lies
    directly in the student's folder."""
    parts = submission.rel.parts
    return (parts[0], parts[1]) if len(parts) > 2 else (parts[0], "", parts[-1])


def _refuse_second_notebooks(found: list[Submission]) -> list[Submission]:
    """The first notebook (by path) of each slot is graded; any later one is refused."""
    first: dict[tuple[str, ...], Submission] = {}
    kept = []
    for submission in found:
        if submission.problem is None:
            owner = first.setdefault(_slot(submission), submission)
            if owner is not submission:
                why = (
                    "a second notebook for the same student and assignment: only the first, "
                    f"{printable(owner.rel.as_posix())}, is graded"
                )
                submission = replace(submission, problem=why)
        kept.append(submission)
    return kept


def _cap_per_student(found: list[Submission]) -> list[Submission]:
    """At most ``MAX_ENTRIES_PER_STUDENT`` entries per student folder; one says the rest."""
    counts: Counter[str] = Counter(s.rel.parts[0] if len(s.rel.parts) > 1 else "" for s in found)
    seen: Counter[str] = Counter()
    kept = []
    for submission in found:
        owner = submission.rel.parts[0] if len(submission.rel.parts) > 1 else ""
        seen[owner] += 1
        if seen[owner] < MAX_ENTRIES_PER_STUDENT:
            kept.append(submission)
        elif seen[owner] == MAX_ENTRIES_PER_STUDENT:
            why = (
                f"this folder holds {counts[owner]} notebooks or refused entries; the grader "
                f"looks at {MAX_ENTRIES_PER_STUDENT - 1} per student, the rest are not graded"
            )
            kept.append(replace(submission, problem=why))
    return kept


def _with_results_folders(found: list[Submission]) -> list[Submission]:
    """Each submission with its own results folder (no two alike, even case-insensitively)."""
    taken: set[str] = set()
    placed = []
    for submission in found:
        attempt = 0
        while (folder := _results_folder(submission.rel, attempt)).as_posix().casefold() in taken:
            attempt += 1
        taken.add(folder.as_posix().casefold())
        placed.append(replace(submission, results_folder=folder))
    return placed


def discover(paths: Iterable[str | Path]) -> list[Submission]:
    """The notebooks named by ``paths``, and every entry refused on the way, sorted by path.

    A folder is a submissions root (nbgrader's ``submitted/``): the student is the first
    folder under it, as in ``<root>/<student>/<assignment>/<notebook>.ipynb``. A notebook
    named on the command line is placed as ``_named_notebook`` says. Refused, with the
    reason in ``problem`` (reported as "not graded", never run): a symbolic link anywhere
    below the root (the root itself may be one), a folder named ``submitted`` below it,
    folders more than ``MAX_FOLDERS`` deep, a notebook outside any student's folder, and a
    second notebook in one student's assignment folder: the first by path (``.ipynb``
    left out, so that ``nb.ipynb`` comes before ``nb-Copy1.ipynb``) is graded.
    Only a path that does not exist, or a root that cannot be read, raises ``GraderError``.
    """
    entries: dict[tuple[str, str], tuple[int, Submission]] = {}
    for order, raw in enumerate(paths):
        root = Path(raw)
        try:
            if root.is_dir():
                found = _walk(root)
            elif root.is_file():
                if root.suffix != ".ipynb":  # `grade README.md` is a typo, not a grade of 0
                    raise GraderError(f"{raw}: not a notebook (.ipynb): nothing was graded")
                found = [_named_notebook(raw)]
            else:
                raise GraderError(f"{printable(str(raw))}: no such file or folder")
        except OSError as error:
            raise GraderError(f"{printable(str(raw))}: {error.strerror}") from error
        for submission in found:
            # the same notebook named twice (a folder and a file in it) is graded once
            key = (submission.rel.as_posix(), os.path.realpath(submission.path))
            entries.setdefault(key, (order, submission))
    # without ".ipynb", Jupyter's "nb-Copy1.ipynb" comes after "nb.ipynb"
    by_path = sorted(
        entries.items(), key=lambda entry: (entry[0][0].removesuffix(".ipynb"), entry[1][0])
    )
    ordered = [submission for _, (_, submission) in by_path]
    return _with_results_folders(_cap_per_student(_refuse_second_notebooks(ordered)))


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
    digest = hashlib.sha256(os.fsencode(submission.rel.as_posix())).digest()
    return int.from_bytes(digest[:8], "big") % n == k - 1


def student_name(submission: Submission, assignment: str | None = None) -> str:
    """The student: the printable name of the first folder under the submissions root.

    ``assignment`` is not used (the folder decides, whatever the notebook declares).
    """
    return submission.student or printable(submission.out_rel.as_posix())


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
    cases_blob: bytes  # the cases (without seeds) and every input, keys "<index>/<name>"
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
    from safetensors.torch import save

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
    # Kept in the grader's memory: never in a file a submission could find.
    blob = sandbox.cases_blob(
        json.dumps([case_to_json(item.case) for item in planned]).encode(), save(tensors)
    )
    files = checks.source_files() + [
        release.notebooks[assignment],
        sandbox.RUNNER,
        sandbox.PROTOCOL,
        Path(sandbox.__file__),
        Path(__file__),
    ]
    # With the seed: a result graded with other hidden cases is not this run's.
    kind = "hidden" if checks.hidden else "public"
    version = _source_hash(files, f"{GRADER_VERSION}:{kind}:{term_module.fingerprint(seed)}")
    return Plan(
        assignment,
        release.notebooks[assignment],
        tests,
        nb.manual_cells(release_nb),
        planned,
        blob,
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


def read_job_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a file the submission wrote (None: absent, not a regular file, or over
    ``limit``). Opened without following a link and without blocking, since a FIFO, a
    device or a link to one (``/sys/kernel/tracing/trace_pipe``) would hold the grader;
    checked for what it is once open; never read past ``limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks) if size <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _parsed(text: str) -> Any:
    """JSON from the submission's side, or None: any failure (a 200,000-deep nesting is a
    RecursionError, not a ValueError) is the submission's, never the batch's."""
    try:
        return json.loads(text)
    except Exception:
        return None


def _read_json(path: Path, limit: int = 1 << 20) -> Any:
    """An untrusted JSON file written by the child (None when absent, too big or invalid)."""
    data = read_job_file(path, limit)
    return None if data is None else _parsed(data.decode("utf-8", errors="replace"))


def _read_case_log(path: Path, cases: int) -> dict[int, Any]:
    """The last status line of each case in the child's (untrusted) log."""
    statuses: dict[int, Any] = {}
    data = read_job_file(path, 32 << 20)
    if data is None:
        return statuses
    for line in data.decode("utf-8", errors="replace").splitlines()[: 4 * cases + 10]:
        status = _parsed(line)
        if isinstance(status, dict) and type(status.get("case")) is int:
            if 0 <= status["case"] < cases:
                statuses[status["case"]] = status
    return statuses


#: A case's key in the outputs files: "<case>/<name>", the case's number in ASCII digits.
_OUTPUT_KEY = re.compile(r"([0-9]{1,6})/(.+)", re.ASCII | re.DOTALL)


def _read_outputs(job_dir: Path) -> tuple[dict[int, dict[str, Any]], str | None]:
    """Every case's outputs, from the per-test safetensors files (keys "<case>/<name>")."""
    by_case: dict[int, dict[str, Any]] = {}
    problem = None
    total = 0
    try:
        with os.scandir(job_dir) as entries:
            names = sorted(e.name for e in entries if e.name.startswith("outputs_"))
    except OSError:
        return by_case, None
    for name in [n for n in names if n.endswith(".safetensors")][:1000]:
        tensors, error, size = _read_tensors(job_dir / name, MAX_OUTPUT_FILE - total)
        total += size
        problem = problem or error
        for key, value in (tensors or {}).items():
            match = _OUTPUT_KEY.fullmatch(key)
            if match:
                by_case.setdefault(int(match[1]), {})[match[2]] = value
    return by_case, problem


def _read_tensors(path: Path, limit: int) -> tuple[dict[str, Any] | None, str | None, int]:
    """The child's outputs, through safetensors only (no code can run while loading), and
    the bytes read."""
    from safetensors.torch import load

    data = read_job_file(path, max(limit, 0))
    if data is None:
        exists = os.path.lexists(path)
        return None, ("the outputs are too large or not a file" if exists else None), 0
    try:
        return load(data), None, len(data)
    except Exception as error:  # a corrupt file is the submission's problem, not the batch's
        return None, f"the outputs could not be read ({type(error).__name__})", len(data)


@dataclass
class CaseResult:
    passed: bool
    description: str
    message: str
    diagnosis: str | None = None
    kernel: str | None = None
    hidden: bool = False  # a hidden case: its call is shown only once the grades are out
    evidence: Any = None  # a failed case's feedback.Evidence: what its feedback page draws


#: Where a test's hidden cases go in its results.json entry: its ``extra_data``, which
#: Gradescope stores and never shows a student (``gradescope.py`` publishes them later).
HIDDEN_CASES_KEY = "hidden_cases"


def _case_line(result: CaseResult) -> str:
    """One case's line in a test's output: verdict, call, message and likely bug."""
    mark = "passed" if result.passed else "FAILED"
    message = result.message
    if not message.startswith(result.description):
        message = f"{result.description}: {message}"
    if result.diagnosis and not result.passed and result.diagnosis not in message:
        message += f"\n  likely bug: {result.diagnosis}"
    return f"[{mark}] " + message.replace("\n", "\n    ")


def _hidden_case_line(number: int, count: int, result: CaseResult) -> str:
    """A hidden case as a student may see it before the grades are out: its verdict only
    (its call, shapes and message would tell the parameters the term's seed drew)."""
    mark = "passed" if result.passed else "FAILED"
    return f"[{mark}] hidden case {number} of {count} (its call is shown when grades are published)"


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
    found = None
    if not verdict.passed:  # torch's outputs and the student's are in hand only here
        from autograder import feedback

        found = feedback.evidence(item.expected, actual, trace)
    return CaseResult(
        bool(verdict.passed),
        describe,
        message,
        getattr(verdict, "diagnosis", None),
        kernel or None,
        evidence=found,
    )


@dataclass
class SubmissionResult:
    results: dict[str, Any]
    student: str
    assignment: str
    score: float
    max_score: float
    skipped: bool = False
    tests: list[Any] | None = None  # feedback.TestFeedback per test: what its page shows
    page: str | None = None  # its feedback page, once written


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
        feedback_shows_hidden: bool = False,
    ):
        self.release = release
        self.checks = checks
        self.out_dir = out_dir
        self.jobs = max(1, jobs)
        self.limits = limits or sandbox.Limits()
        self.mode, note = sandbox.choose_sandbox(sandbox_mode)
        self.sandbox_text = sandbox.describe_sandbox(self.mode, note)
        # The term's seeds (one per assignment, the same in every run and shard), or one
        # seed for every assignment when the caller names it.
        self.term = term_module.load() if seed is None else term_module.Term("--seed", {})
        self.seed = seed
        self.force = force
        # The instructor's choice: hidden cases' calls and figures on the feedback pages.
        self.feedback_shows_hidden = feedback_shows_hidden
        self.work_root = Path(tempfile.mkdtemp(prefix="autograder-"))
        os.chmod(self.work_root, 0o711)
        self.grader_dir = self.work_root / "grader"
        self.grader_dir.mkdir()
        shutil.copy(sandbox.RUNNER, self.grader_dir / "runner.py")
        shutil.copy(sandbox.PROTOCOL, self.grader_dir / "protocol.py")
        shutil.copy(checks.path, self.grader_dir / "course_checks.py")
        os.chmod(self.grader_dir, 0o755)
        for name in ("runner.py", "protocol.py", "course_checks.py"):
            os.chmod(self.grader_dir / name, 0o644)
        self.plans: dict[str, Plan] = {}
        self.plan_lock = threading.Lock()
        self.workers: list[sandbox.Worker] = []
        self.stopping = False
        self._record: dict[Path, Any] = {}
        self.watch: sandbox.SharedKernelWatch | None = None
        self.watch_text = ""

    # -- plans

    def plan(self, assignment: str) -> Plan:
        with self.plan_lock:
            if assignment not in self.plans:
                seed = self.seed_for(assignment)
                self.plans[assignment] = build_plan(
                    assignment, self.release, self.checks, seed, self.work_root
                )
            return self.plans[assignment]

    def seed_for(self, assignment: str) -> int:
        return self.seed if self.seed is not None else self.term.seed(assignment)

    # -- one submission

    def results_path(self, submission: Submission) -> Path | None:
        if self.out_dir is None:
            return None
        return self.out_dir / submission.out_rel / "results.json"

    def grade(self, submission: Submission, worker: sandbox.Worker) -> SubmissionResult:
        if submission.problem is not None:
            return self._refused(submission)
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
        outcome, tests, notes, checked = self._run_job(worker, plan, cells)
        release_nb = self.release.notebook(assignment)
        extra["blank"] = [c.source for c in cells] == [
            c.source for c in nb.student_code(release_nb, release_nb)
        ]
        extra["cell_errors"] = sum(CELL_RAISED in note for note in notes)
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
        extra["needs_a_look"] = [str(f) for f in findings if _needs_a_look(f)][:30]
        if outcome.said_twice:
            extra["needs_a_look"].insert(
                0, "the runner's end-of-cells signal came twice: a cell may have taken the cases"
            )
        if outcome.refused:  # a thread, a process or a frame of the cells where none may be
            extra["needs_a_look"].insert(0, f"the cases were refused: {outcome.refused}")
        extra["timed_out"] = outcome.timed_out
        extra["protections"] = outcome.protections + [self.watch_text]
        lost = [p for p in outcome.protections if p.startswith("the kernel watch was incomplete")]
        if lost:  # the outside watch may have missed a kernel: a TA decides, not silence
            extra["needs_a_look"].insert(0, lost[0])
        if outcome.worker_error or outcome.unprotected:
            # The grader's fault, twice: no grade (never a low one), and a re-run tries again.
            extra["not_graded"] = outcome.worker_error or "the sandbox's protections failed"
            extra["retry"] = True
            output = (
                f"Not graded: the grader failed on this notebook twice "
                f"({extra['not_graded']}). This is not the submission's fault: grade it again."
            )
            return SubmissionResult(
                _result_json(0, time.monotonic() - start, output, [], extra),
                student,
                plan.assignment,
                0,
                sum(t.points for t in plan.tests),
            )
        finished = self._finish(submission, plan, student, tests, output, extra, start)
        finished.tests = checked
        return finished

    def _run_job(self, worker: sandbox.Worker, plan: Plan, cells: list[nb.CodeCell]):
        """Run one submission in ``worker``; on a fault of the sandbox (not of the
        submission), once more on a fresh worker."""
        payload = [{"label": c.label, "source": c.source} for c in cells]
        for _attempt in range(2):
            outcome = worker.run(secrets.token_hex(8), payload, plan.cases_blob, self.limits)
            try:
                tests, notes, checked = self._collect(plan, worker.job_dir, outcome)
            finally:
                worker.clear_job()  # outputs and cells gone from the disk at once
            if not (outcome.worker_error or outcome.unprotected) or self.stopping:
                break
            worker.kill()
        return outcome, tests, notes, checked

    def _refused(self, submission: Submission) -> SubmissionResult:
        """A submission that discovery refused: "not graded", nothing of it read or run."""
        why = str(submission.problem)
        student = student_name(submission)
        extra = {
            "notebook": submission.rel.as_posix(),
            "student": student,
            "assignment": None,
            "not_graded": why,
            "max_score": 0,
            "grader_version": GRADER_VERSION,
            "sandbox": self.mode,
        }
        output = f"Not graded: {printable(submission.rel.as_posix())}: {why}."
        return SubmissionResult(_result_json(0, 0.0, output, [], extra), student, "", 0, 0)

    def _previous(self, submission: Submission, digest: str, plan: Plan) -> SubmissionResult | None:
        """The result of an earlier run, as the grader read it before any submission ran
        (a file a submission wrote during this run is never read back)."""
        old = self._record.get(submission.out_rel)
        if self.force or old is None:
            return None
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
            "term": self.term.name,
            "seed_fingerprint": term_module.fingerprint(self.seed_for(plan.assignment))
            if plan
            else None,
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
        """A test's entry: ``output`` holds no hidden case's call (``lines`` come without
        them), so the entry is ``visible``; the hidden calls stay in its ``extra_data``."""
        title = _test_title(test)
        header = [title] if title else []
        entry = {
            "name": test.grade_id,
            "score": test.points if passed else 0,
            "max_score": test.points,
            "status": "passed" if passed else "failed",
            "output": "\n".join(header + lines),
            "visibility": "visible",
        }
        hidden = [_case_line(r) for r in case_results if r.hidden]
        if hidden:
            entry["extra_data"] = {HIDDEN_CASES_KEY: hidden}
        return entry

    def _collect(self, plan: Plan, job_dir: Path, outcome: sandbox.JobOutcome):
        notes = []
        if outcome.timed_out:
            stopped = f"the time limit ({self.limits.timeout:g} s wall clock) was reached"
            notes.append(f"The submission was stopped after {self.limits.timeout:g} s (timeout).")
        elif outcome.worker_error:
            stopped = f"the sandbox failed ({outcome.worker_error})"
            notes.append(f"The sandbox failed: {outcome.worker_error}")
        elif outcome.refused:
            stopped = f"the graded calls were not run: {outcome.refused}"
            notes.append(f"The graded calls did not run: {outcome.refused}.")
        else:
            stopped = "the submission's process ended (os._exit, a crash, or a limit)"
        if outcome.memory_exceeded:
            notes.append(
                f"The submission reached its memory limit ({self.limits.memory_bytes >> 20} MiB "
                "for the whole submission)."
            )
        report = _read_json(job_dir / protocol.CELL_REPORT_FILE)
        if isinstance(report, list):
            for entry in report[:200]:
                if not isinstance(entry, dict):
                    continue
                label = _clip(entry.get("label"), 40)
                if entry.get("running"):
                    notes.append(f"{label} did not finish: {stopped}.")
                if entry.get("error"):
                    notes.append(
                        f"{label} {CELL_RAISED}:\n  "
                        + _clip(entry["error"], 800).replace("\n", "\n  ")
                    )
                if entry.get("unsupported"):
                    notes.append(
                        f"{label}: shell commands need a process, which the sandbox refuses; "
                        "not run: " + _clip(", ".join(map(str, entry["unsupported"])), 300)
                    )
        tampered = _read_json(job_dir / protocol.TAMPER_FILE)
        tampered = [str(t) for t in tampered] if isinstance(tampered, list) else []
        if tampered:
            notes.append(
                "The submission modified the grader's checks, or reached a forbidden kernel "
                f"between graded calls ({_clip(', '.join(tampered[:3]), 300)}): no case is graded."
            )
        if outcome.kernel_hits:
            tampered = [f"forbidden kernel {k} (seen from outside the sandbox)"
                        for k in outcome.kernel_hits[:5]]  # fmt: skip
            notes.append(
                "A forbidden kernel was reached while the cases were in the sandbox (seen by "
                f"the grader from outside it): {', '.join(outcome.kernel_hits[:5])}. "
                "No case is graded."
            )
        by_test: dict[str, list[CaseResult]] = {t.grade_id: [] for t in plan.tests}
        # What the job folder holds counts only when the cases went in: the grader cleared
        # those names then, so anything there before was written by the cells (a forgery).
        statuses, outputs_by_case, read_error = {}, {}, None
        if outcome.cases_delivered:
            statuses = _read_case_log(job_dir / protocol.CASES_LOG, len(plan.cases))
            outputs_by_case, read_error = _read_outputs(job_dir)
        for index, item in enumerate(plan.cases):
            status = statuses.get(index)
            outputs = outputs_by_case.get(index)
            result = judge_case(self.checks, item, status, outputs, read_error, tampered, stopped)
            result.hidden = item.origin == "hidden"
            by_test.setdefault(item.case.grade_id, []).append(result)
        tests = []
        for test in plan.tests:
            results = by_test.get(test.grade_id, [])
            lines = []
            if test.grade_id in plan.setup_errors:
                lines.append(plan.setup_errors[test.grade_id])
            passed = bool(results) and all(r.passed for r in results)
            passed = passed and test.grade_id not in plan.setup_errors
            hidden_count = sum(r.hidden for r in results)
            hidden_seen = 0
            for result in results:
                if result.hidden:
                    hidden_seen += 1
                    lines.append(_hidden_case_line(hidden_seen, hidden_count, result))
                else:
                    lines.append(_case_line(result))
            tests.append(self._test_json(test, passed, lines, results))
        from autograder import feedback

        checked = [
            feedback.TestFeedback(
                t.grade_id,
                _test_title(t),
                [plan.setup_errors[t.grade_id]] if t.grade_id in plan.setup_errors else [],
                by_test.get(t.grade_id, []),
            )
            for t in plan.tests
        ]
        return tests, notes, checked

    def _finish(self, submission, plan, student, tests, output, extra, start) -> SubmissionResult:
        score = sum(t["score"] for t in tests)
        max_score = sum(t.points for t in plan.tests)
        output += f"\nSandbox: {self.sandbox_text}."
        if extra.get("protections"):
            output += "\nIn force while this notebook ran: " + "; ".join(extra["protections"]) + "."
        results = _result_json(score, time.monotonic() - start, output, tests, extra)
        return SubmissionResult(results, student, plan.assignment, score, max_score)

    # -- the batch

    def run(
        self, submissions: list[Submission], progress: Callable[[int, int], None] | None = None
    ) -> list[SubmissionResult]:
        """Grade every submission (each result written as soon as it is known)."""
        self._record = {}
        for submission in submissions:
            path = self.results_path(submission)
            if path is not None and not self.force and path.is_file():
                self._record[submission.out_rel] = _read_json(path, limit=64 << 20)
        # Started before the workers: it attributes a hit to a process through the forks
        # it saw.
        self.watch, self.watch_text = sandbox.SharedKernelWatch.start()
        self.workers = [
            sandbox.Worker(self.mode, str(self.grader_dir), str(self.work_root), watch=self.watch)
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
                        {
                            "notebook": submissions[index].rel.as_posix(),
                            "error": repr(error),
                            "not_graded": "the grader failed",
                            "retry": True,
                        },
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
            if path is not None:
                self._write_results(path, result)
            results[index] = result
            return index

        pool = ThreadPoolExecutor(max_workers=len(self.workers))
        try:
            # The workers start (torch imports in the sandboxes) in the pool's threads, which
            # live as long as the batch (bubblewrap dies with the thread that started it),
            # while this thread builds the plans.
            for worker in self.workers:
                pool.submit(worker.warm)
            for assignment in self.release.notebooks:
                with contextlib.suppress(Exception):  # a plan that fails, fails its notebooks
                    self.plan(assignment)
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
                self._write_results(path, result)
        return [r for r in results if r is not None]

    def _write_results(self, path: Path, result: SubmissionResult) -> None:
        """``results.json`` and, beside it, the feedback page: drawn once, then written from
        memory again at the end (outside bubblewrap a submission could replace either). A
        result unchanged since an earlier run keeps its page, or gets one from its results."""
        from autograder import feedback

        page = path.with_name(feedback.PAGE_NAME)
        if result.skipped:
            if result.page is None and not page.is_file():
                result.page = feedback.page_for(result.results, None, self.feedback_shows_hidden)
                write_atomic(page, result.page)
            return
        write_atomic(path, json.dumps(result.results, indent=1) + "\n")
        if result.page is None:
            shows_hidden = self.feedback_shows_hidden
            result.page = feedback.page_for(result.results, result.tests, shows_hidden)
            result.tests = None  # drawn: the arrays it kept are no longer needed
        write_atomic(page, result.page)

    def close(self) -> None:
        self.stopping = True
        for worker in self.workers:
            worker.close()
        self.workers = []
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        shutil.rmtree(self.work_root, ignore_errors=True)
