"""Every page runs on its own: its downloaded notebook, in an empty folder, outside the repository.

A student downloads a page's ``.ipynb`` (the page's download button) and runs it in a fresh
Jupyter or Colab with torch, numpy and matplotlib installed, and nothing of this repository:
no ``book/plotting.py`` beside it, no ``autograder`` package. This test does exactly that with
the course's venv: the notebook the built page links to is copied into an empty temporary
folder, and a ``python3`` kernel from the venv runs it there with no ``PYTHONPATH`` and with the
venv's editable install of this repository switched off, so a page that leans on the
repository fails here as it fails for the student.
"""

from __future__ import annotations

import os
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse

import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.test_browser import toc_files

pytestmark = [pytest.mark.book, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = toc_files(yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8")))
DOWNLOAD_TITLE = "Download notebook file"
# The book's own limit per cell (_config.yml, execute.timeout).
CELL_TIMEOUT = 300
# setuptools' editable install hooks the repository into every venv python through a finder
# whose module is named `__editable__...`; dropping it is what "not installed" looks like.
FORGET_EDITABLE_INSTALL = (
    "import sys as _sys; "
    "_sys.meta_path[:] = [f for f in _sys.meta_path "
    "if not getattr(f, '__module__', '').startswith('__editable__')]; "
    "_sys.path_hooks[:] = [h for h in _sys.path_hooks "
    "if not getattr(h, '__module__', '').startswith('__editable__')]; "
    "_sys.path_importer_cache.clear(); del _sys"
)


class _LinkFinder(HTMLParser):
    """Collects the ``href`` of every ``<a>`` whose ``title`` is the one asked for."""

    def __init__(self, title: str):
        super().__init__()
        self.title = title
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "a" and attributes.get("title") == self.title and attributes.get("href"):
            self.hrefs.append(attributes["href"])


def download_link(built_book: Path, chapter: str) -> Path:
    """The file in the built site that the chapter's 'Download notebook file' link points to."""
    page = built_book / f"{chapter}.html"
    finder = _LinkFinder(DOWNLOAD_TITLE)
    finder.feed(page.read_text(encoding="utf-8"))
    assert len(finder.hrefs) == 1, f"{chapter}: expected one notebook download, got {finder.hrefs}"
    site = "http://site/"
    target = urlparse(urljoin(site + f"{chapter}.html", finder.hrefs[0]))
    assert target.netloc == "site", f"{chapter}: the download leaves the site: {finder.hrefs[0]}"
    return built_book / target.path.lstrip("/")


def student_environment() -> dict[str, str]:
    """The venv's tools first on PATH, and no path into this repository."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run_alone(notebook_file: Path, folder: Path) -> nbformat.NotebookNode:
    """Copy the notebook into `folder` (empty) and run it there with the venv's python3 kernel.

    Raises nbclient's CellExecutionError at the first cell that fails.
    """
    assert not any(folder.iterdir()), f"{folder} is not empty"
    assert REPO_ROOT not in folder.resolve().parents, f"{folder} is inside the repository"
    copy = folder / notebook_file.name
    shutil.copyfile(notebook_file, copy)
    notebook = nbformat.read(copy, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        allow_errors=False,
        resources={"metadata": {"path": str(folder)}},
        extra_arguments=[f"--IPKernelApp.exec_lines={FORGET_EDITABLE_INSTALL!r}"],
    )
    client.execute(cwd=str(folder), env=student_environment())
    return notebook


def probe_notebook(source: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source)]
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    return notebook


@pytest.mark.parametrize(
    "module",
    ["autograder", "plotting", "torch"],
)
def test_the_student_kernel_sees_only_installed_packages(tmp_path_factory, module):
    """The runner itself: torch is there; the repository's `autograder` and `book/` are not."""
    source = tmp_path_factory.mktemp("probe_source") / "probe.ipynb"
    nbformat.write(probe_notebook(f"import {module}"), source)
    folder = tmp_path_factory.mktemp("probe_run")
    if module == "torch":
        run_alone(source, folder)
        return
    with pytest.raises(CellExecutionError, match=f"No module named '{module}'"):
        run_alone(source, folder)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_downloaded_page_runs_on_its_own(built_book, tmp_path_factory, chapter):
    notebook_file = download_link(built_book, chapter)
    assert notebook_file.is_file(), f"{chapter}: its download link is broken: {notebook_file}"
    folder = tmp_path_factory.mktemp(Path(chapter).name)
    try:
        run_alone(notebook_file, folder)
    except CellExecutionError as error:
        pytest.fail(f"{chapter}'s notebook fails on its own:\n{error}", pytrace=False)


# --- the launch buttons -----------------------------------------------------------------

CONFIG = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))


def page_links(built_book: Path, chapter: str, title: str) -> list[str]:
    finder = _LinkFinder(title)
    finder.feed((built_book / f"{chapter}.html").read_text(encoding="utf-8"))
    return finder.hrefs


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_colab_button_opens_the_pages_notebook(built_book, chapter):
    """Colab gets the downloaded notebook's path on the branch CI publishes `_sources/` to."""
    org, repo = urlparse(CONFIG["repository"]["url"]).path.strip("/").split("/")
    branch = CONFIG["sphinx"]["config"]["colab_notebooks_branch"]
    download = download_link(built_book, chapter).relative_to(built_book / "_sources")
    links = page_links(built_book, chapter, "Launch on Colab")
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    assert links == [f"{colab}/github/{org}/{repo}/blob/{branch}/{download.as_posix()}"]
    assert download.suffix == ".ipynb"
    nbformat.validate(nbformat.read(built_book / "_sources" / download, as_version=4))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_binder_button_still_opens_the_pages_source(built_book, chapter):
    """Binder runs the repository itself, where jupytext opens the chapter's `.md`."""
    org, repo = urlparse(CONFIG["repository"]["url"]).path.strip("/").split("/")
    branch = CONFIG["repository"]["branch"]
    binder = CONFIG["launch_buttons"]["binderhub_url"].rstrip("/")
    links = page_links(built_book, chapter, "Launch on Binder")
    assert links == [f"{binder}/v2/gh/{org}/{repo}/{branch}?urlpath=tree/{chapter}.md"]
    assert (REPO_ROOT / f"{chapter}.md").is_file()
