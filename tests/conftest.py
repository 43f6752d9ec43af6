"""Fixtures shared by the test suite: the repository, the venv's tools, the built book."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (tests run from any working directory)."""
    return REPO_ROOT


def tool_env() -> dict[str, str]:
    """The environment for the venv's command-line tools: its bin/ first on PATH.

    nbgrader calls ``alembic`` by name and Jupyter finds kernels through PATH, so the venv
    must come first even when the test suite runs without activating it.
    """
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONHASHSEED", "0")
    return env


@pytest.fixture(scope="session")
def venv_env() -> dict[str, str]:
    """``tool_env()`` as a fixture."""
    return tool_env()


@pytest.fixture(scope="session")
def built_book() -> Path:
    """Build the book exactly as the README does and return ``_build/html``.

    Execution is cached, so this takes seconds when the chapters have not changed. The
    build runs with ``-W``: any warning or cell error fails it, and the test with it.
    """
    result = subprocess.run(
        [str(VENV_BIN / "jupyter-book"), "build", ".", "-W", "-n", "--keep-going"],
        cwd=REPO_ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode != 0:
        pytest.fail(
            "jupyter-book build failed:\n" + result.stdout[-6000:] + "\n" + result.stderr[-6000:],
            pytrace=False,
        )
    return REPO_ROOT / "_build" / "html"
