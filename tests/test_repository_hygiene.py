"""The repository's habits: clean notebooks, ruff-clean code, no answers in the release.

Committed notebooks carry no outputs (they would leak answers and bloat diffs), the code
passes ``ruff check`` and ``ruff format --check``, the students' ``exercises/`` hold no
nbgrader solution or hidden-test markers, and pre-commit runs the pinned tools.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

RUFF = Path(sys.executable).parent / "ruff"
# The grader's test data (students' submissions as handed in), not the course's notebooks.
FIXTURES = "tests/fixtures/"
# nbgrader's markers: in a released notebook they mean an answer reached the students.
SOLUTION_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def notebook_leftovers(notebook: dict) -> list[str]:
    """Where a notebook still holds what nbstripout removes: outputs and execution counts."""
    found = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {index}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"cell {index}: execution_count {cell['execution_count']}")
    return found


def committed_notebooks(repo_root: Path) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "*.ipynb"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The grader's fixture submissions are what students hand in: outputs, broken JSON.
    return [
        repo_root / name for name in listed.split("\0") if name and not name.startswith(FIXTURES)
    ]


def test_leftover_detection_flags_outputs_and_counts():
    """The check can fail: an executed cell is caught, a stripped one is not."""
    executed = {
        "cell_type": "code",
        "execution_count": 3,
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "tensor([1.])\n"}],
        "source": "print(y)",
    }
    stripped = {**executed, "execution_count": None, "outputs": []}
    assert notebook_leftovers({"cells": [stripped, executed]}) == [
        "cell 1: 1 output(s)",
        "cell 1: execution_count 3",
    ]
    assert notebook_leftovers({"cells": [stripped, {"cell_type": "markdown"}]}) == []


def test_committed_notebooks_carry_no_outputs(repo_root):
    notebooks = committed_notebooks(repo_root)
    dirty = {}
    for path in notebooks:
        leftovers = notebook_leftovers(json.loads(path.read_text(encoding="utf-8")))
        if leftovers:
            dirty[str(path.relative_to(repo_root))] = leftovers[:3]
    assert not dirty, f"strip these notebooks (nbstripout, or pre-commit): {dirty}"


@pytest.mark.parametrize(
    "command", [["check", "--output-format", "concise", "."], ["format", "--check", "."]]
)
def test_ruff_is_clean(repo_root, command):
    if not RUFF.exists():
        pytest.fail(f"{RUFF} is missing: ruff is pinned in requirements.txt")
    result = subprocess.run(
        [str(RUFF), *command, "--no-cache"], cwd=repo_root, capture_output=True, text=True
    )
    # Name the offending files first: ruff's full diff of many files drowns them.
    files = sorted(
        set(
            re.findall(
                r"^(?:\s*-->\s*)?([\w./-]+\.(?:py|ipynb)):(?:cell \d+:)?\d+", result.stdout, re.M
            )
        )
    )
    assert result.returncode == 0, (
        f"ruff {' '.join(command)} fails in {files}:\n{result.stdout[-4000:]}{result.stderr}"
    )


def test_exercises_hold_no_solutions(repo_root):
    files = [p for p in (repo_root / "exercises").rglob("*") if p.is_file()]
    assert files, "exercises/ is empty: run nbgrader generate_assignment '*' --force"
    leaks = {
        str(path.relative_to(repo_root)): marker
        for path in files
        for marker in SOLUTION_MARKERS
        if marker in path.read_text(encoding="utf-8", errors="ignore")
    }
    assert not leaks, f"solution or hidden-test markers in the students' release: {leaks}"


def pinned_versions(requirements: str) -> dict[str, str]:
    return {
        name.lower(): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", requirements, re.M)
    }


def test_pre_commit_runs_the_pinned_tools(repo_root):
    config = yaml.safe_load((repo_root / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    repos = {repo["repo"].rstrip("/").split("/")[-1]: repo for repo in config["repos"]}
    pins = pinned_versions((repo_root / "requirements.txt").read_text(encoding="utf-8"))

    ruff = repos["ruff-pre-commit"]
    assert ruff["rev"] == f"v{pins['ruff']}", "the ruff hook and requirements.txt disagree"
    assert {"ruff-check", "ruff-format"} <= {hook["id"] for hook in ruff["hooks"]}

    nbstripout = repos["nbstripout"]
    assert nbstripout["rev"].lstrip("v") == pins["nbstripout"]
    hook = next(hook for hook in nbstripout["hooks"] if hook["id"] == "nbstripout")
    assert re.match(hook.get("exclude", "(?!)"), FIXTURES), "nbstripout must skip the fixtures"
