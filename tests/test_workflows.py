"""The GitHub workflows: YAML that parses, jobs that run the README's commands, no secrets.

CI and the newcomer's instructions must never drift apart: the book workflow runs the
README's first Quick start line verbatim, and the tests workflow runs ``.ci/run``, which
reads both lines from the README.
"""

import re
import shutil
import subprocess

import pytest
import yaml

# Values that must never sit in a workflow's text.
LITERAL_SECRETS = {
    "GitHub token": re.compile(r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}|github_pat_\w{20,}"),
    "AWS key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "PyPI token": re.compile(r"\bpypi-[A-Za-z0-9_-]{20,}"),
}
SECRET_NAMED_KEY = re.compile(r"(token|password|passwd|secret|api[_-]?key|private[_-]?key)", re.I)
EXPRESSION = re.compile(r"^\$\{\{.*\}\}$", re.S)
# owner/repo[/path]@v1, @v1.2.3, or a full commit SHA.
# A package manager named as a command (not "pipefail").
INSTALLER = re.compile(r"\b(apt-get|apt|aptitude|dpkg|sudo|pip3?|conda)\b")
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")


def quick_start_lines(readme: str) -> list[str]:
    """The command lines of the first fenced block after the "Quick start" heading.

    The same reading as ``.ci/run``'s awk: blank lines and ``#`` comments are skipped.
    """
    lines = readme.splitlines()
    heading = next(i for i, line in enumerate(lines) if re.match(r"^#+ .*quick ?start", line, re.I))
    commands, inside = [], False
    for line in lines[heading + 1 :]:
        if line.startswith("```"):
            if inside:
                break
            inside = True
        elif inside and line.strip() and not line.startswith("#"):
            commands.append(line)
    return commands


@pytest.fixture(scope="module")
def quick_start(repo_root):
    return quick_start_lines((repo_root / "README.md").read_text(encoding="utf-8"))


def load_workflows(folder):
    return {
        path.name: (path.read_text(encoding="utf-8"), yaml.safe_load(path.read_text("utf-8")))
        for path in sorted(folder.glob("*.y*ml"))
    }


@pytest.fixture(scope="module")
def workflows(repo_root):
    found = load_workflows(repo_root / ".github" / "workflows")
    assert {"book.yml", "tests.yml"} <= set(found), f"workflows found: {sorted(found)}"
    return found


def triggers(workflow: dict) -> dict:
    """The ``on:`` block (YAML 1.1 reads the bare key ``on`` as ``True``)."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on or {}


def steps_of(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def run_commands(workflow: dict) -> list[str]:
    return [step["run"] for _, step in steps_of(workflow) if "run" in step]


def uses_of(workflow: dict) -> list[str]:
    return [step["uses"] for _, step in steps_of(workflow) if "uses" in step]


def test_quick_start_reader():
    readme = "# Course\n\n## Quick start\n\n```bash\n# set up\npython -m venv .venv\n\n"
    readme += "pytest\n```\n\n```bash\nnot this\n```\n"
    assert quick_start_lines(readme) == ["python -m venv .venv", "pytest"]


def test_readme_quick_start_is_build_then_test(quick_start):
    assert len(quick_start) == 2, quick_start
    build, test = quick_start
    # The machine first (Debian packages, venv; tests/test_setup.py), then the book.
    assert build.startswith("bash .ci/setup.sh && "), build
    assert "jupyter-book build . -W -n --keep-going" in build
    assert "-m pytest" in test


def test_ci_run_installs_nothing_of_its_own(repo_root):
    """Whatever a fresh machine needs, the Quick start's first line installs: CI has no
    install step that a newcomer would miss."""
    script = (repo_root / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    installing = [line for line in commands if INSTALLER.search(line)]
    assert not installing, f".ci/run installs things itself: {installing}"


def test_chapter_8_shows_the_readme_quick_start(repo_root, quick_start):
    """The instructors' chapter repeats the Quick start: it must be the README's, verbatim."""
    chapter = (repo_root / "book" / "08_for_instructors.md").read_text(encoding="utf-8")
    setting_up = chapter[chapter.index("## Setting up") :]
    assert quick_start_lines("## Quick start\n" + setting_up) == quick_start


def test_ci_run_reads_the_same_quick_start(repo_root, quick_start):
    """`.ci/run` extracts the README's commands with awk: it must find the same two lines."""
    if shutil.which("awk") is None:
        pytest.skip("awk is not installed")
    script = (repo_root / ".ci" / "run").read_text(encoding="utf-8")
    program = re.search(r"awk '(.*?)' README\.md", script, re.S)
    assert program, ".ci/run no longer reads the Quick start from README.md with awk"
    result = subprocess.run(
        ["awk", program.group(1), "README.md"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == quick_start
    assert 'bash -c "${quick_start[0]}"' in script and 'bash -c "${quick_start[1]}"' in script


def test_every_workflow_parses_and_every_job_has_steps(workflows):
    for name, (_, workflow) in workflows.items():
        assert isinstance(workflow, dict), f"{name} is not a YAML mapping"
        assert triggers(workflow), f"{name} has no 'on:' triggers"
        assert workflow.get("jobs"), f"{name} has no jobs"
        for job_name, job in workflow["jobs"].items():
            assert job.get("runs-on") or job.get("uses"), f"{name}:{job_name} has no runner"
            if "uses" not in job:  # a reusable workflow's call has no steps of its own
                steps = job.get("steps")
                assert steps and isinstance(steps, list), f"{name}:{job_name} has no steps"
                for step in steps:
                    assert ("run" in step) != ("uses" in step), f"{name}:{job_name}: {step}"


def test_actions_are_pinned_to_a_version(workflows):
    for name, (_, workflow) in workflows.items():
        for action in uses_of(workflow):
            if action.startswith(("./", "docker://")):
                continue
            assert PINNED_ACTION.match(action), f"{name}: {action!r} is not pinned to a version"


def literal_secret_values(node, path: str):
    """Paths of values under secret-like keys that are literals instead of ``${{ }}``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "permissions":  # scopes (`id-token: write`), not credentials
                continue
            if (
                SECRET_NAMED_KEY.search(str(key))
                and isinstance(value, str)
                and not EXPRESSION.match(value.strip())
            ):
                yield f"{path}.{key}"
            yield from literal_secret_values(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from literal_secret_values(value, f"{path}[{index}]")


def test_no_secrets_in_the_workflows(workflows):
    for name, (text, workflow) in workflows.items():
        for kind, pattern in LITERAL_SECRETS.items():
            assert not pattern.search(text), f"{name} holds a literal {kind}"

        literals = list(literal_secret_values(workflow, name))
        assert not literals, f"{name}: literal values under secret-like keys: {literals}"
        # A secret in a shell command ends up in logs and process lists: pass it via env.
        for command in run_commands(workflow):
            assert "secrets." not in command, f"{name}: a run command uses a secret: {command}"


def test_secret_checks_can_fail():
    """The secret patterns catch a planted token and a literal password."""
    planted = "ghp_" + "a1B2" * 9
    assert LITERAL_SECRETS["GitHub token"].search(f"run: curl -H 'token {planted}'")
    leaky = {"env": {"API_KEY": "hunter2", "TOKEN": "${{ secrets.TOKEN }}"}}
    assert list(literal_secret_values(leaky, "w")) == ["w.env.API_KEY"]
    assert list(literal_secret_values({"permissions": {"id-token": "write"}}, "w")) == []


def test_book_workflow_builds_with_the_readme_command_and_deploys(workflows, quick_start):
    _, book = workflows["book.yml"]
    on = triggers(book)
    assert "main" in on["push"]["branches"]
    assert "workflow_dispatch" in on
    assert quick_start[0] in [line.strip() for line in run_commands(book)], (
        "book.yml must run the README's first Quick start line verbatim"
    )
    setup_python = [s for _, s in steps_of(book) if s.get("uses", "").startswith("actions/setup")]
    assert setup_python, "book.yml does not set up Python"
    python = setup_python[0]["with"]
    assert str(python["python-version"]) == "3.11"
    assert python["cache"] == "pip" and "requirements.txt" in python["cache-dependency-path"]
    caches = [s for _, s in steps_of(book) if s.get("uses", "").startswith("actions/cache@")]
    assert any("_build/.jupyter_cache" in s["with"]["path"] for s in caches), (
        "book.yml does not keep Jupyter Book's execution cache"
    )
    actions = {action.split("@")[0] for action in uses_of(book)}
    assert {
        "actions/configure-pages",
        "actions/upload-pages-artifact",
        "actions/deploy-pages",
    } <= actions
    uploads = [s for _, s in steps_of(book) if "upload-pages-artifact" in s.get("uses", "")]
    assert uploads[0]["with"]["path"] == "_build/html"
    deploy = next(job for job in book["jobs"].values() if "deploy-pages" in str(job["steps"]))
    permissions = {**book.get("permissions", {}), **deploy.get("permissions", {})}
    assert permissions.get("pages") == "write" and permissions.get("id-token") == "write"
    assert deploy["environment"]["name"] == "github-pages"


def test_tests_workflow_runs_the_readme_through_ci_run(workflows):
    _, tests = workflows["tests.yml"]
    on = triggers(tests)
    assert "push" in on and "pull_request" in on
    assert "bash .ci/run" in [line.strip() for line in run_commands(tests)]
    uploads = [s for _, s in steps_of(tests) if s.get("uses", "").startswith("actions/upload")]
    assert any(
        "_build/screenshots" in s["with"]["path"] and s.get("if") == "always()" for s in uploads
    ), "tests.yml must keep the screenshots as an artifact, even when tests fail"
    # The browser tests fail (not skip) without chromium only when CI is set.
    job_env = [job.get("env", {}) for job in tests["jobs"].values()]
    assert any(env.get("CI") for env in job_env) or tests.get("env", {}).get("CI")


@pytest.mark.parametrize("name", ["book.yml", "tests.yml"])
def test_weekly_schedule(workflows, name):
    """A weekly run catches dependency rot: a valid cron with one day of the week."""
    schedule = triggers(workflows[name][1]).get("schedule")
    assert schedule, f"{name} has no schedule"
    for entry in schedule:
        fields = entry["cron"].split()
        assert len(fields) == 5, entry
        minute, hour, day_of_month, month, day_of_week = fields
        assert minute.isdigit() and hour.isdigit(), entry
        assert day_of_month == "*" and month == "*", entry
        assert re.fullmatch(r"[0-6]", day_of_week), f"{name}: not weekly: {entry}"
