"""The Gradescope bundle, run as Gradescope would run it, on real submissions.

The zip is built with ``python -m autograder gradescope``, unpacked into a folder that
stands for ``/autograder`` (``AUTOGRADER_ROOT``), and ``run_autograder`` grades the
instructor's, a partial and a hostile notebook, as this machine's root, in bubblewrap and
in Landlock (``AUTOGRADER_SANDBOXES=landlock`` stands for a container that refuses
namespaces). Each ``results.json`` is checked against Gradescope's specification, against
the CI grader's scores for the same notebooks, and for anything hidden a student could read.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from autograder import course_checks, gradescope, hidden_cases

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBMISSIONS = REPO_ROOT / "tests" / "fixtures" / "submissions"
ASSIGNMENT = "01_conv_transpose1d"
NOTEBOOK = "conv_transpose1d.ipynb"
TERM = json.loads((REPO_ROOT / "autograder" / "term.json").read_text())

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="Gradescope runs its grader as root")

# Gradescope's autograder specification (gradescope-autograders.readthedocs.io, "specs"):
# the keys of results.json and of each test, with the values each may take.
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
FORMAT = {"text", "html", "simple_format", "md", "ansi"}
NUMBER = (int, float)
TOP_KEYS = {
    "score": NUMBER, "execution_time": NUMBER, "output": str, "output_format": FORMAT,
    "test_output_format": FORMAT, "test_name_format": FORMAT, "visibility": VISIBILITY,
    "stdout_visibility": VISIBILITY, "extra_data": dict, "tests": list, "leaderboard": list,
}  # fmt: skip
TEST_KEYS = {
    "score": NUMBER, "max_score": NUMBER, "status": {"passed", "failed"}, "name": str,
    "name_format": FORMAT, "number": str, "output": str, "output_format": FORMAT,
    "tags": list, "visibility": VISIBILITY, "extra_data": dict,
}  # fmt: skip

# The hostile cell: setup.sh puts the venv at <root>/venv, so sys.prefix names the root.
# It reads and writes what it must not, and raises what it got (the output shows it).
PROBE = """
import os, sys
root = os.path.dirname(sys.prefix)
report = []
targets = ["source/autograder/hidden_cases.py", "source/autograder/term.json", "source",
           "source/exercises", "results", "submission", "submission_metadata.json",
           "/proc/1/cwd", "/proc/%d/cwd" % os.getppid()]
for target in targets:
    path = os.path.join(root, target)
    try:
        if os.path.isdir(path):
            seen = ",".join(sorted(os.listdir(path)))
        else:
            with open(path) as handle:
                seen = handle.read()
        report.append("%s=READ:%r" % (target, seen[:60]))
    except OSError as error:
        report.append("%s=%s" % (target, type(error).__name__))
for target in ["results/results.json", "results/planted.txt", "source/autograder/term.json"]:
    try:
        with open(os.path.join(root, target), "w") as handle:
            handle.write('{"score": 100, "tests": []}')
        report.append("write:%s=WROTE" % target)
    except OSError as error:
        report.append("write:%s=%s" % (target, type(error).__name__))
raise RuntimeError("hostile-probe " + " ".join(report))
"""
DENIED = {"PermissionError", "FileNotFoundError"}
METADATA = "canary-student-name"


def spec_problems(results: dict) -> list[str]:
    """What in ``results`` breaks Gradescope's specification (keys, types, values)."""
    problems = []

    def check(where: str, data: dict, keys: dict) -> None:
        for key, value in data.items():
            kind = keys.get(key)
            if kind is None:
                problems.append(f"{where}: unknown key {key!r}")
            elif isinstance(kind, set):
                if value not in kind:
                    problems.append(f"{where}: {key}={value!r} is not one of {sorted(kind)}")
            elif not isinstance(value, kind) or isinstance(value, bool):
                problems.append(f"{where}: {key} is a {type(value).__name__}")
            elif kind is NUMBER and not math.isfinite(value):
                problems.append(f"{where}: {key} is not finite")

    check("results", results, TOP_KEYS)
    tests = results.get("tests", [])
    if "score" not in results and ("tests" not in results or any("score" not in t for t in tests)):
        problems.append("no top-level score, and not every test has one")
    for number, test in enumerate(tests if isinstance(tests, list) else []):
        if not isinstance(test, dict):
            problems.append(f"tests[{number}] is not an object")
            continue
        check(f"tests[{number}] {test.get('name')!r}", test, TEST_KEYS)
    return problems


# --------------------------------------------------------------------------- setting up


def hostile_notebook() -> dict:
    notebook = json.loads((SUBMISSIONS / "release_untouched" / ASSIGNMENT / NOTEBOOK).read_text())
    cell = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": []}
    notebook["cells"].append(cell | {"id": "probe", "source": PROBE.strip().splitlines(True)})
    return notebook


def write_submissions(folder: Path) -> dict[str, Path]:
    """The three notebooks, as nbgrader's submitted/<student>/<assignment>/ for the CI grader."""
    found = {}
    for student, source in (
        ("instructor", SUBMISSIONS / "instructor" / ASSIGNMENT / NOTEBOOK),
        ("partial", SUBMISSIONS / "partial_bias_ignored" / ASSIGNMENT / NOTEBOOK),
        ("hostile", None),
    ):
        target = folder / student / ASSIGNMENT / NOTEBOOK
        target.parent.mkdir(parents=True)
        if source is None:
            target.write_text(json.dumps(hostile_notebook()))
        else:
            shutil.copyfile(source, target)
        found[student] = target
    return found


def link_copy(source: Path, target: Path, leave_out: Path) -> None:
    """A copy of ``source`` made of hard links, without ``leave_out``."""
    target.mkdir()
    for part in source.iterdir():
        if part == leave_out:
            continue
        if part in leave_out.parents:
            link_copy(part, target / part.name, leave_out)
        else:
            subprocess.run(["cp", "-al", str(part), str(target)], check=True)


def nobody_readable_python(root: Path) -> None:
    """``<root>/venv`` as setup.sh makes it, readable by nobody: hard links to this venv and
    its interpreter (this machine's live in /root, which nobody cannot enter). Files that
    differ are replaced, never written through a link."""
    base, venv = root / "python", root / "venv"
    interpreter = Path(os.path.realpath(sys.base_prefix))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    # Its own site-packages is not the venv's: fewer links to make and remove.
    link_copy(interpreter, base, interpreter / "lib" / version / "site-packages")
    subprocess.run(["cp", "-al", os.path.realpath(sys.prefix), str(venv)], check=True)
    config = venv / "pyvenv.cfg"
    lines = [ln for ln in config.read_text().splitlines() if not ln.startswith("home")]
    config.unlink()
    config.write_text("\n".join([f"home = {base / 'bin'}", *lines]) + "\n")
    for link in (venv / "bin").iterdir():
        if link.is_symlink() and os.path.isabs(os.readlink(link)):
            target = base / "bin" / Path(os.readlink(link)).name
            link.unlink()
            link.symlink_to(target)


def unpack(bundle: Path, root: Path) -> None:
    """What Gradescope does with the zip: unpacked into source/, run_autograder copied up."""
    with zipfile.ZipFile(bundle) as archive:
        for info in archive.infolist():
            path = Path(archive.extract(info, root / "source"))
            os.chmod(path, (info.external_attr >> 16) & 0o777)
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")


def new_root() -> Path:
    # Not in /tmp: the bubblewrap sandbox makes its own /tmp, so the Python it binds (the
    # venv below the root, as in /autograder/venv) must live elsewhere.
    root = Path(tempfile.mkdtemp(prefix="gradescope-root-", dir="/var/tmp"))
    os.chmod(root, 0o755)  # as /autograder: nobody may pass it to reach the venv
    return root


def run_autograder(root: Path, notebook: Path | None, **env: str) -> tuple[int, dict, str]:
    for folder in ("submission", "results"):
        shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder).mkdir()
    if notebook is not None:
        shutil.copyfile(notebook, root / "submission" / notebook.name)
    # Gradescope's, beside the folders: the student's name and earlier results.
    (root / "submission_metadata.json").write_text(json.dumps({"users": [{"name": METADATA}]}))
    done = subprocess.run(
        [str(root / "run_autograder")],
        env=os.environ | {"AUTOGRADER_ROOT": str(root)} | env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    path = root / "results" / "results.json"
    assert path.is_file(), f"no results.json\n{done.stdout}\n{done.stderr}"
    return done.returncode, json.loads(path.read_text()), done.stdout + done.stderr


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    built = subprocess.run(
        [sys.executable, "-m", "autograder", "gradescope", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return out


@pytest.fixture(scope="module")
def submissions(tmp_path_factory) -> dict[str, Path]:
    return write_submissions(tmp_path_factory.mktemp("class") / "submitted")


@pytest.fixture(scope="module")
def ci_results(submissions, tmp_path_factory) -> dict[str, dict]:
    """The CI grader's results for the same notebooks (one batch, as a class is graded)."""
    out = tmp_path_factory.mktemp("ci")
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    root = submissions["instructor"].parents[2]
    command = [sys.executable, "-m", "autograder", "grade", str(root), "--out", str(out)]
    done = subprocess.run(
        command + ["--jobs", "2"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stem = NOTEBOOK.removesuffix(".ipynb")
    return {
        student: json.loads((out / student / ASSIGNMENT / stem / "results.json").read_text())
        for student in submissions
    }


@pytest.fixture(scope="module")
def gradescope_root(bundle):
    root = new_root()
    try:
        unpack(bundle, root)
        nobody_readable_python(root)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def graded(gradescope_root, submissions):
    """run_autograder's (exit status, results.json, stdout) per (sandbox, student), cached."""
    cache: dict[tuple[str, str], tuple[int, dict, str]] = {}

    def grade(sandbox: str, student: str) -> tuple[int, dict, str]:
        if (sandbox, student) not in cache:
            cache[sandbox, student] = run_autograder(
                gradescope_root, submissions[student], AUTOGRADER_SANDBOXES=sandbox
            )
        return cache[sandbox, student]

    return grade


# --------------------------------------------------------------------------- checks


def student_visible_text(results: dict) -> str:
    """Everything a student sees before the grades are published."""
    shown = [results.get("output", "")]
    shown += [
        f"{t.get('name', '')}\n{t.get('output', '')}"
        for t in results.get("tests", [])
        if t.get("visibility", results.get("visibility", "visible")) == "visible"
    ]
    return "\n".join(shown)


def hidden_calls(assignment_prefix: str) -> set[str]:
    """The calls of this term's hidden cases that no public case shares (from the seed)."""
    seed = TERM["seeds"][ASSIGNMENT]
    public = {
        case.describe()
        for grade_id, cases in course_checks.PUBLIC_CASES.items()
        if grade_id.startswith(assignment_prefix)
        for case in cases
    }
    calls = set()
    for grade_id in hidden_cases.all_grade_ids():
        if grade_id.startswith(assignment_prefix):
            calls |= {case.describe() for case in hidden_cases.hidden_cases(grade_id, seed)}
    return {c for c in calls if not any(p.startswith(c) for p in public)}


def assert_graded_like_ci(results: dict, ci: dict, sandbox_word: str) -> None:
    assert spec_problems(results) == []
    assert results["stdout_visibility"] == "hidden"
    assert results["output_format"] == results["test_output_format"] == "text"
    assert all(t["output_format"] == "text" for t in results["tests"])
    by_name = {t["name"]: t for t in results["tests"]}
    for test in ci["tests"]:
        mine = by_name[test["name"]]
        assert (mine["score"], mine["max_score"]) == (test["score"], test["max_score"])
        assert mine["visibility"] == "visible"
    assert results["score"] == ci["score"] == sum(t["score"] for t in results["tests"])
    assert sum(t["max_score"] for t in results["tests"]) == ci["extra_data"]["max_score"]
    extra = [t for t in results["tests"] if t["name"] not in {c["name"] for c in ci["tests"]}]
    assert extra and all(t["max_score"] == 0 and t["visibility"] != "visible" for t in extra)
    protections = [t for t in extra if t["visibility"] == "hidden"]
    assert len(protections) == 1 and sandbox_word in protections[0]["output"]
    assert "seccomp" in protections[0]["output"] and "uid 65534" in protections[0]["output"]
    visible = student_visible_text(results)
    for word in ("Sandbox:", "bubblewrap", "Landlock", "seccomp", "In force"):
        assert word not in visible, f"{word!r} shown to the student"


def assert_hidden_cases_published_later(results: dict) -> None:
    calls = hidden_calls("ct1d_")
    assert calls, "the term draws no hidden case of its own"
    visible = student_visible_text(results)
    later = "\n".join(t["output"] for t in results["tests"] if t["visibility"] == "after_published")
    for call in calls:
        assert f"{call}:" not in visible, f"hidden case shown before publishing: {call}"
    assert any(f"{call}:" in later for call in calls)
    assert "hidden case 1 of" in visible  # the verdicts themselves are the student's


def assert_no_secret(results: dict) -> None:
    text = json.dumps(results)
    for seed in TERM["seeds"].values():
        assert str(seed) not in text
    assert "The hidden cases: more graded calls" not in text  # hidden_cases.py's docstring
    assert METADATA not in text


# --------------------------------------------------------------------------- tests


def test_the_zip_holds_the_grader_the_release_and_the_scripts_only(bundle):
    with zipfile.ZipFile(bundle) as archive:
        names = {info.filename: info for info in archive.infolist()}
    for script in ("setup.sh", "run_autograder"):
        assert (names[script].external_attr >> 16) & 0o111, f"{script} is not executable"
    assert {"requirements.txt", "pyproject.toml", "autograder/hidden_cases.py"} <= set(names)
    assert "autograder/term.json" in names
    for notebook in sorted((REPO_ROOT / "exercises").glob("*/*.ipynb")):
        assert notebook.relative_to(REPO_ROOT).as_posix() in names
    tops = {name.split("/")[0] for name in names}
    assert tops == {"setup.sh", "run_autograder", "requirements.txt", "pyproject.toml",
                    "autograder", "exercises"}  # fmt: skip
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


def test_setup_installs_the_pinned_requirements_and_the_sandbox_packages(tmp_path):
    """setup.sh on a stand-in for Gradescope's Ubuntu 22.04 (python3 is 3.10): apt-get,
    python3 and pip are stubs that log their calls; chmod is real."""
    root, stubs, log = tmp_path / "autograder", tmp_path / "stubs", tmp_path / "calls.log"
    (root / "source").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "requirements.txt", root / "source")
    stubs.mkdir()
    record = f'echo "$(basename "$0") $* (in $PWD)" >> {log}\n'
    venv_python = f"#!/bin/sh\n{record}"
    scripts = {
        "apt-get": f"#!/bin/sh\n{record}",
        "python3": "#!/bin/sh\nexit 1\n",  # 3.10: too old for pyproject.toml's >=3.11
        "python3.11": f'#!/bin/sh\n{record}mkdir -p "$3/bin"\n'
        f"printf '%s' '{venv_python}' > \"$3/bin/python\"\nchmod 700 \"$3/bin/python\"\n",
    }
    for name, text in scripts.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "AUTOGRADER_ROOT": str(root)}
    setup = REPO_ROOT / "autograder" / "templates" / "gradescope" / "setup.sh"
    done = subprocess.run(["bash", str(setup)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    install = next(c for c in calls if c.startswith("apt-get install"))
    assert {"bubblewrap", "libseccomp2", "python3.11", "python3.11-venv"} <= set(install.split())
    assert f"python3.11 -m venv {root}/venv" in "\n".join(calls)
    pip = next(c for c in calls if " -m pip install" in c)
    assert "-r requirements.txt" in pip and pip.endswith(f"(in {root}/source)")
    assert stat.S_IMODE((root / "source").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "venv" / "bin" / "python").stat().st_mode) & 0o005 == 0o005


def test_bwrap_grades_the_instructor_as_ci_does_and_hides_what_it_must(graded, ci_results):
    status, results, _ = graded("bwrap", "instructor")
    assert status == 0
    assert results["score"] == 100
    assert_graded_like_ci(results, ci_results["instructor"], "bubblewrap")
    assert_hidden_cases_published_later(results)
    assert_no_secret(results)


def test_landlock_grades_a_partial_submission_as_ci_does(graded, ci_results):
    status, results, _ = graded("landlock", "partial")
    assert status == 0
    assert 0 < results["score"] < 100
    assert_graded_like_ci(results, ci_results["partial"], "Landlock")
    failed = [t for t in results["tests"] if t["visibility"] == "visible" and t["score"] == 0]
    assert any("[FAILED]" in t["output"] for t in failed)
    assert_no_secret(results)


@pytest.mark.parametrize("sandbox", ["bwrap", "landlock"])
def test_a_submission_reaches_neither_source_results_nor_submission(
    graded, ci_results, gradescope_root, sandbox
):
    status, results, _ = graded(sandbox, "hostile")
    assert status == 0
    assert_graded_like_ci(results, ci_results["hostile"], sandbox.replace("bwrap", "bubblewrap"))
    raised = results["output"].split("RuntimeError: hostile-probe ", 1)[1]
    found = dict(re.findall(r"(\S+)=(\w+)", raised))
    assert len(found) == 12, results["output"]
    assert set(found.values()) <= DENIED, found
    assert sorted(p.name for p in (gradescope_root / "results").iterdir()) == ["results.json"]
    shipped = (REPO_ROOT / "autograder" / "term.json").read_bytes()
    assert (gradescope_root / "source" / "autograder" / "term.json").read_bytes() == shipped
    assert results["score"] == 0
    assert_no_secret(results)


def test_without_a_sandbox_that_hides_the_source_nothing_is_graded(
    bundle, submissions, gradescope_root
):
    """A root inside the venv (so that both sandboxes, which show the submission the venv,
    would show it source/ too): neither may grade; the result says so, has no tests, and
    run_autograder exits 2."""
    root = gradescope_root / "venv" / "misplaced"
    root.mkdir(mode=0o755)
    try:
        unpack(bundle, root)
        (root / "venv").symlink_to(gradescope_root / "venv")
        status, results, log = run_autograder(root, submissions["hostile"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert status == gradescope.NOT_GRADED, log
    assert spec_problems(results) == []
    assert results["tests"] == [] and "score" not in results
    assert results["output"].startswith("Not graded: no sandbox could be set up here (")
    for mode in ("bwrap", "landlock"):
        assert f"{mode}: the sandbox would show {root / 'source'}" in results["output"]
    assert "hostile-probe" not in json.dumps(results)  # the hostile cell never ran


def test_exposed_folders_names_a_protected_folder_under_a_read_path():
    assert gradescope.exposed_folders(["/autograder"], [Path("/autograder/source")])
    assert gradescope.exposed_folders(["/autograder/venv"], [Path("/autograder/source")]) == []
    assert gradescope.exposed_folders(["/autograder/source"], [Path("/autograder/source")])
    assert gradescope.exposed_folders(["/autograder/so"], [Path("/autograder/source")]) == []


def _nobody_cannot_enter(path: str) -> bool:
    folders = [Path(path), *Path(path).parents]
    return any(not folder.stat().st_mode & stat.S_IXOTH for folder in folders)


@pytest.mark.skipif(
    not _nobody_cannot_enter(os.path.realpath(sys.base_prefix)),
    reason="this machine's Python is readable by nobody",
)
def test_landlock_never_runs_a_submission_as_root(bundle, submissions):
    """This machine's own venv (its interpreter in /root): the submission could not drop to
    nobody, and as root Landlock and seccomp are no wall (modules, mounts): not graded."""
    root = new_root()
    try:
        unpack(bundle, root)
        (root / "venv").symlink_to(os.path.realpath(sys.prefix))
        status, results, log = run_autograder(
            root, submissions["hostile"], AUTOGRADER_SANDBOXES="landlock"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert status == gradescope.NOT_GRADED, log
    assert results["tests"] == [] and "landlock: the submission would run as root" in log
    assert "hostile-probe" not in json.dumps(results)
