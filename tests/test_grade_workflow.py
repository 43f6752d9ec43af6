"""The grading workflow, linted with actionlint and dry-run here, step by step.

``.github/workflows/grade.yml`` is how an instructor grades a submissions repository from
the course's private copy. GitHub cannot run here, so each step is played as the runner
would play it: ``actions/checkout`` of the submissions repository clones a local repository
instead, artifacts are folders, ``${{ ... }}`` expressions are evaluated from the event's
inputs, the matrix and the job's environment, and every ``run:`` step runs in bash with
``-e``. Only the steps that install packages (named "Install ...") are left out: this venv
stands in for theirs. What is checked is what can break: the commands, the flags, the paths
from one step and one job to the next, and the expressions.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
TEMPLATES = REPO_ROOT / "autograder" / "templates"
CORPUS = REPO_ROOT / "tests" / "fixtures" / "submissions"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
CLASS = {"ada": "instructor", "linus": "release_untouched", "grace": "naive_loops"}
ASSIGNMENT, NOTEBOOK = "01_conv_transpose1d", "conv_transpose1d.ipynb"


def test_the_workflows_pass_actionlint():
    """actionlint (the action's inputs, the expressions, the runtimes: node20 actions
    stopped running in September 2026) finds nothing in the workflows or the template."""
    files = sorted(WORKFLOWS.glob("*.yml")) + sorted(TEMPLATES.glob("*.yml"))
    done = subprocess.run(
        [str(VENV_BIN / "actionlint"), "-no-color", *map(str, files)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path):
    """The check above can fail: an unknown input and an old runtime are reported."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with:\n          no-such-input: 1\n"
    )
    done = subprocess.run(
        [str(VENV_BIN / "actionlint"), "-no-color", str(broken)], capture_output=True, text=True
    )
    assert done.returncode == 1 and "no-such-input" in done.stdout and "node20" in done.stdout


def evaluate(expression: str, context: dict) -> str:
    """The few forms the workflows use: ``a.b``, ``'text'``, ``x || y``, ``x != y``."""
    if "!=" in expression:
        left, right = (evaluate(part, context) for part in expression.split("!=", 1))
        return "true" if left != right else ""
    for part in (p.strip() for p in expression.split("||")):
        if part.startswith("'") and part.endswith("'"):
            value = part[1:-1]
        else:
            scope, _, name = part.partition(".")
            value = context.get(scope, {}).get(name, "")
        if value:
            return str(value)
    return ""


def substitute(text: str, context: dict) -> str:
    return EXPRESSION.sub(lambda match: evaluate(match.group(1), context), text)


def submissions_repository(root: Path) -> Path:
    """A private submissions repository in nbgrader's layout, as students pushed to it."""
    work = root / "submissions-work"
    for student, fixture in CLASS.items():
        target = work / student / ASSIGNMENT / NOTEBOOK
        target.parent.mkdir(parents=True)
        shutil.copyfile(CORPUS / fixture / ASSIGNMENT / NOTEBOOK, target)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "submissions"], check=True)
    bare = root / "submissions.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


def course_workspace(root: Path) -> Path:
    """The course repository as ``actions/checkout`` leaves it (what the steps read)."""
    workspace = root / "workspace"
    workspace.mkdir()
    for name in ("autograder", "exercises", "pyproject.toml", "requirements.txt"):
        (workspace / name).symlink_to(REPO_ROOT / name)
    return workspace


class Runner:
    """Plays a job's steps the way GitHub's runner does, on this machine."""

    def __init__(self, workspace: Path, artifacts: Path, remote: Path, inputs: dict):
        self.workspace, self.artifacts, self.remote, self.inputs = (
            workspace,
            artifacts,
            remote,
            inputs,
        )
        self.summary = workspace.parent / "step-summary.md"

    def job(self, job: dict, matrix: dict) -> dict:
        """Run ``job``'s steps for one cell of its matrix; the job's environment."""
        context = {"inputs": self.inputs, "matrix": matrix, "secrets": {"SUBMISSIONS_TOKEN": "t"}}
        env = {key: substitute(str(value), context) for key, value in job.get("env", {}).items()}
        context["env"] = env
        for step in job["steps"]:
            condition = step.get("if")
            if condition is not None and not evaluate(EXPRESSION.sub(r"\1", condition), context):
                continue
            if "uses" in step:
                self.action(step["uses"], step.get("with", {}), context)
            elif not step.get("name", "").startswith("Install"):
                self.run(substitute(step["run"], context), env)
        return env

    def action(self, uses: str, given: dict, context: dict) -> None:
        action = uses.split("@")[0]
        given = {key: substitute(str(value), context) for key, value in given.items()}
        if action == "actions/checkout" and "repository" in given:
            assert given["repository"] == self.inputs["repository"]
            assert given["token"] and given["persist-credentials"] == "False"
            target = self.workspace / given["path"]
            subprocess.run(["git", "clone", "-q", str(self.remote), str(target)], check=True)
        elif action == "actions/upload-artifact":
            shutil.copytree(self.workspace / given["path"], self.artifacts / given["name"])
        elif action == "actions/download-artifact":
            pattern = re.compile(given["pattern"].replace("*", ".*") + "$")
            for artifact in sorted(self.artifacts.iterdir()):
                if pattern.match(artifact.name):
                    shutil.copytree(artifact, self.workspace / given["path"] / artifact.name)
        else:  # the course's own checkout (made above) and setup-python (this Python)
            assert action in {"actions/checkout", "actions/setup-python"}, uses

    def run(self, script: str, env: dict) -> None:
        script = script.replace(".venv/bin/", f"{VENV_BIN}/")  # this venv stands in for theirs
        environment = dict(os.environ, **env, GITHUB_STEP_SUMMARY=str(self.summary))
        environment["PATH"] = f"{VENV_BIN}{os.pathsep}{environment.get('PATH', '')}"
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=self.workspace,
            env=environment,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="the workflow grades in bubblewrap")
def test_the_grade_workflow_grades_a_submissions_repository(tmp_path):
    workflow = yaml.safe_load((WORKFLOWS / "grade.yml").read_text(encoding="utf-8"))
    inputs = {"repository": "course-staff/submissions", "submissions": ""}
    runner = Runner(
        course_workspace(tmp_path), tmp_path / "artifacts", submissions_repository(tmp_path), inputs
    )
    runner.artifacts.mkdir()
    grade = workflow["jobs"]["grade"]
    for shard in grade["strategy"]["matrix"]["shard"]:
        env = runner.job(grade, {"shard": shard})
        # Each shard runs on a fresh machine: nothing of this one is left for the next.
        shutil.rmtree(runner.workspace / env["SUBMISSIONS"])
        shutil.rmtree(runner.workspace / "grading")
    assert workflow["jobs"]["merge"]["needs"] == "grade"
    runner.job(workflow["jobs"]["merge"], {})

    grading = runner.workspace / "grading"
    with open(grading / "grades.csv", newline="") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(CLASS) and all(
        r["assignment"] == ASSIGNMENT for r in rows.values()
    )
    assert float(rows["ada"]["score"]) == 100 and float(rows["linus"]["score"]) == 0
    assert "ada" in runner.summary.read_text(encoding="utf-8")
    assert (runner.artifacts / "grading" / "summary.md").is_file()
