"""Gradescope: the autograder bundle, and what it runs in Gradescope's container.

``python -m autograder gradescope --out autograder.zip`` builds the zip Gradescope takes:
``setup.sh`` and ``run_autograder`` (``templates/gradescope/``) at its root, the grader
(``autograder/``, with the hidden cases and the term's seeds), the release's notebooks
(``exercises/``), ``requirements.txt`` and ``pyproject.toml``. Gradescope unpacks it into
``/autograder/source``, runs ``setup.sh`` once for its image, and ``run_autograder`` (which
runs ``python -m autograder.gradescope``) for each submission, as root, in a container of
its own. The root ``/autograder`` is one variable, ``AUTOGRADER_ROOT``.

A submission is graded only in a sandbox: bubblewrap where the container allows it, else
Landlock with the submission's process as ``nobody`` (both with the seccomp filter and the
limits of the CI grader). Either way the submission never sees ``source/`` (the grader, the
hidden cases, the seeds), ``results/`` or ``submission/``. Where neither can be had the
result says "not graded" and why, and ``run_autograder`` exits 2.

The result is Gradescope's ``results.json``: the CI grader's scores, every text ``text``
(a student's answer is never rendered), each test ``visible`` with no hidden case's call in
it, the hidden cases' calls in an ``after_published`` entry of 0 points, the sandbox and the
protections in force in a ``hidden`` entry, stdout ``hidden``. Seeds never leave the grader.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from autograder import grading, sandbox
from autograder import term as term_module

ROOT_VARIABLE = "AUTOGRADER_ROOT"
DEFAULT_ROOT = "/autograder"
#: The sandboxes to try, in order; a test sets ``landlock`` to stand for a container that
#: refuses namespaces. ``none`` is never one: the bundle does not grade unprotected.
SANDBOXES_VARIABLE = "AUTOGRADER_SANDBOXES"
SANDBOXES = ("bwrap", "landlock")
TEMPLATES = Path(__file__).with_name("templates") / "gradescope"
SCRIPTS = ("setup.sh", "run_autograder")
STUDENT = "submission"  # the folder the CI grader sees the one submission under
MAX_NOTEBOOK_BYTES = 64 << 20
NOT_GRADED = 2  # run_autograder's exit status when nothing was graded (no sandbox)
INCOMPLETE = 3  # the grader failed on the notebook twice: rerun it on Gradescope
HIDDEN_DETAIL = "{name}: hidden cases"
PROTECTIONS_TEST = "sandbox and protections in force (instructors only)"
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
FORMATS = ("text", "html", "simple_format", "md", "ansi")


# --------------------------------------------------------------------------- the bundle


def bundle_files(repo_root: Path, release: Path) -> dict[str, Path]:
    """Every file of the zip, by its name in the zip (never solutions/, tests/ or a venv)."""
    package = repo_root / "autograder"
    if not term_module.TERM_FILE.is_file():
        raise grading.GraderError(
            f"{term_module.TERM_FILE}: no term; make one with `python -m autograder new-term "
            "NAME` (the bundle grades the term's hidden cases)"
        )
    files = {name: TEMPLATES / name for name in SCRIPTS}
    files |= {name: repo_root / name for name in ("requirements.txt", "pyproject.toml")}
    for path in sorted(package.glob("*.py")) + sorted(package.glob("*.json")):
        files[f"autograder/{path.name}"] = path
    for assignment, notebook in grading.Release(release).notebooks.items():
        files[f"exercises/{assignment}/{notebook.name}"] = notebook
    return files


def build_bundle(out: Path, release: Path = grading.DEFAULT_RELEASE) -> list[str]:
    """Write the zip to ``out`` (the same bytes for the same files) and list its names."""
    files = bundle_files(grading.REPO_ROOT, release)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            mode = 0o755 if name in SCRIPTS else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return list(files)


# --------------------------------------------------------------------------- the container


class Layout:
    """Gradescope's folders below one root (``/autograder``, or a test's folder)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.source = self.root / "source"
        self.submission = self.root / "submission"
        self.results = self.root / "results"
        # Gradescope's: the student's name and earlier results, hidden cases' calls included.
        self.metadata = self.root / "submission_metadata.json"

    @property
    def protected(self) -> list[Path]:
        """What the submission's code must never read or write."""
        return [self.source, self.results, self.submission, self.metadata]


def exposed_folders(read_paths: list[str], protected: list[Path]) -> list[str]:
    """The protected folders that a sandbox reading ``read_paths`` would show."""
    shown = []
    for folder in protected:
        real = os.path.realpath(folder)
        for path in map(os.path.realpath, read_paths):
            if real == path or real.startswith(path.rstrip("/") + "/"):
                shown.append(f"{folder} (under {path})")
    return shown


def _why_not(mode: str, protected: list[Path]) -> str | None:
    """Why ``mode`` cannot grade here (None: it can)."""
    if mode not in SANDBOXES:
        return f"{mode}: not a sandbox this bundle grades in (only {', '.join(SANDBOXES)})"
    works, why = sandbox._probe(mode)  # its own reason, without the CI grader's advice
    if not works:
        return f"{mode}: {why}"
    if mode == "landlock" and sandbox.fallback_drop_uid() is None:
        # As root a submission keeps every capability (modules, mounts): Landlock is no wall.
        return (
            "landlock: the submission would run as root, since nobody cannot read the Python "
            f"install ({sys.prefix}, {sys.base_prefix}); setup.sh makes it readable"
        )
    placeholder = "/nonexistent/grader"  # the grader's own folder is a new one in /tmp
    paths = [p for p in sandbox._read_paths(placeholder) if p != placeholder]
    shown = exposed_folders(paths, protected)
    if shown:
        return f"{mode}: the sandbox would show {', '.join(shown)}"
    return None


def choose_sandbox(order: list[str], protected: list[Path]) -> tuple[str | None, list[str]]:
    """The first sandbox of ``order`` that can be had here and hides ``protected``, and why
    each one tried before it could not (None: none can)."""
    reasons = []
    for mode in order:
        why = _why_not(mode, protected)
        if why is None:
            return mode, reasons
        reasons.append(why)
    return None, reasons


def find_notebook(folder: Path) -> tuple[Path | None, str]:
    """The one notebook Gradescope put in ``folder`` (a regular file), or why there is none."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        return None, f"the submission folder cannot be read ({error.strerror})"
    notebooks = [e for e in entries if e.name.endswith(".ipynb") and not e.is_symlink()]
    notebooks = [e for e in notebooks if e.is_file(follow_symlinks=False)]
    if len(notebooks) == 1:
        return Path(notebooks[0].path), ""
    names = ", ".join(grading.printable(e.name, 60) for e in entries[:10]) or "nothing"
    if not notebooks:
        return None, f"no notebook (.ipynb) was submitted (found: {names})"
    return None, f"submit one notebook, not {len(notebooks)} (found: {names})"


def grade_notebook(notebook: Path, release: Path, mode: str) -> dict[str, Any]:
    """The CI grader's result for ``notebook`` (hidden cases, the term's seeds), in ``mode``."""
    with tempfile.TemporaryDirectory(prefix="gradescope-") as scratch:
        submitted = Path(scratch) / grading.SUBMITTED
        copy = submitted / STUDENT / grading.printable(notebook.name, 100, unique=False)
        copy.parent.mkdir(parents=True)
        with open(notebook, "rb") as handle:
            copy.write_bytes(handle.read(MAX_NOTEBOOK_BYTES + 1)[:MAX_NOTEBOOK_BYTES])
        grader = grading.Grader(
            grading.Release(release),
            grading.Checks.default(with_hidden=True),
            None,
            jobs=1,
            sandbox_mode=mode,
        )
        return grader.run(grading.discover([submitted]))[0].results


def _sandbox_paragraph(output: str, extra: dict[str, Any]) -> tuple[str, str]:
    """``output`` without the grader's sandbox paragraph (``Grader._finish`` appends it
    last), and the paragraph. When it is not where it should be, nothing of ``output`` is
    shown rather than the sandbox."""
    paragraph = f"\nSandbox: {extra.get('sandbox_details')}."
    if extra.get("protections"):
        paragraph += "\nIn force while this notebook ran: " + "; ".join(extra["protections"]) + "."
    if output.endswith(paragraph):
        return output[: -len(paragraph)], paragraph.strip()
    if extra.get("sandbox_details") and str(extra["sandbox_details"]) in output:
        return "Graded: your instructor has the grader's report.", output
    return output, ""


def _text_entry(name: str, output: str, visibility: str, **fields: Any) -> dict[str, Any]:
    entry = {"name": name, "output": output, "output_format": "text", "name_format": "text"}
    return entry | fields | {"visibility": visibility}


def to_gradescope(result: dict[str, Any]) -> dict[str, Any]:
    """Gradescope's ``results.json`` from the CI grader's ``result``: the same score.

    Each test stays one ``visible`` entry with its points: a test cell scores only when
    every case passes, public and hidden alike (as in nbgrader), so its points cannot be
    split between a visible and a hidden part without changing the grade. Its output names
    no hidden case's call; those are in a second, 0-point entry shown ``after_published``.
    """
    extra = result.get("extra_data") if isinstance(result.get("extra_data"), dict) else {}
    output, paragraph = _sandbox_paragraph(str(result.get("output", "")), extra)
    tests = []
    for test in result.get("tests", []):
        fields = {k: test[k] for k in ("score", "max_score", "status") if k in test}
        tests.append(_text_entry(test["name"], test.get("output", ""), "visible", **fields))
        hidden = (test.get("extra_data") or {}).get(grading.HIDDEN_CASES_KEY)
        if hidden:
            passed = all(line.startswith("[passed]") for line in hidden)
            status = "passed" if passed else "failed"
            name = HIDDEN_DETAIL.format(name=test["name"])
            detail = "\n".join(hidden)
            tests.append(
                _text_entry(name, detail, "after_published", score=0, max_score=0, status=status)
            )
    if paragraph:
        tests.append(_text_entry(PROTECTIONS_TEST, paragraph, "hidden", score=0, max_score=0))
    graded = {
        "score": result.get("score", 0),
        "execution_time": result.get("execution_time", 0),
    }
    return graded | _frame(output, tests, extra)


def _frame(output: str, tests: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """The top level every result shares: plain text everywhere, stdout for instructors."""
    return {
        "output": output,
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": extra,
    }


def not_graded(why: str, **extra: Any) -> dict[str, Any]:
    """A result that grades nothing (no tests, so no score of 0 that looks like a grade)."""
    return _frame(f"Not graded: {why}", [], {"not_graded": why, **extra})


def _write(layout: Layout, results: dict[str, Any]) -> None:
    layout.results.mkdir(parents=True, exist_ok=True)
    grading.write_atomic(layout.results / "results.json", json.dumps(results, indent=1) + "\n")


def _lock_down(layout: Layout) -> None:
    """The protected folders root's alone: a second wall behind the sandbox's."""
    layout.results.mkdir(parents=True, exist_ok=True)
    for path in layout.protected:
        if path.is_dir() and not path.is_symlink():
            os.chmod(path, 0o700)
        elif path.is_file() and not path.is_symlink():
            os.chmod(path, 0o600)


def run(layout: Layout, order: list[str]) -> int:
    """Grade the submission below ``layout`` into its results.json; the exit status."""
    start = time.monotonic()
    bundled = layout.source / "autograder"
    if Path(grading.__file__).resolve().parent != bundled.resolve():
        raise grading.GraderError(f"the grader imported is not the bundle's ({bundled})")
    _lock_down(layout)
    mode, reasons = choose_sandbox(order, layout.protected)
    print("sandbox probes:", "; ".join(reasons) or "none failed", f"-> {mode or 'none'}")
    if mode is None:
        why = f"no sandbox could be set up here ({'; '.join(reasons)}); nothing of it was run"
        _write(layout, not_graded(why, sandbox=None, tried=order))
        return NOT_GRADED
    notebook, problem = find_notebook(layout.submission)
    if notebook is None:
        _write(layout, not_graded(problem, sandbox=mode))
        return 0
    result = grade_notebook(notebook, layout.source / "exercises", mode)
    extra = result.get("extra_data") or {}
    print(f"graded in {time.monotonic() - start:.1f} s: {result.get('score')} points")
    print("sandbox:", extra.get("sandbox_details"))
    print("in force:", "; ".join(extra.get("protections") or []))
    _write(layout, to_gradescope(result))
    return INCOMPLETE if extra.get("retry") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.gradescope", description=run.__doc__
    )
    parser.parse_args(argv)
    layout = Layout(os.environ.get(ROOT_VARIABLE) or DEFAULT_ROOT)
    order = os.environ.get(SANDBOXES_VARIABLE, " ".join(SANDBOXES)).split()
    try:
        return run(layout, order)
    except (grading.GraderError, term_module.TermError, RuntimeError) as error:
        _write(layout, not_graded(f"the grader could not run ({error})"))
        print(f"autograder: {error}", file=sys.stderr)
        return NOT_GRADED


if __name__ == "__main__":
    sys.exit(main())
