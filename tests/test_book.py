"""The built book: every chapter executed, the lecture's numbers printed by torch, nothing leaked.

The ``built_book`` fixture builds exactly as the README does (``-W``: a warning or a cell
error fails it). These tests then read the HTML, as a student's browser would get it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest
import yaml
from nbclient import NotebookClient

pytestmark = pytest.mark.book


def toc_pages(repo_root: Path) -> list[str]:
    """The pages of ``_toc.yml`` in reading order, as paths without suffix."""
    toc = yaml.safe_load((repo_root / "_toc.yml").read_text())
    return [toc["root"]] + [chapter["file"] for chapter in toc["chapters"]]


def page_html(built_book: Path, page: str) -> str:
    return (built_book / f"{page}.html").read_text(encoding="utf-8")


def executed_outputs(html: str) -> str:
    """The text of the executed cells' outputs, with all whitespace removed.

    torch pads printed numbers with spaces that depend on the other entries, so the
    lecture's values are looked for with spaces removed on both sides.
    """
    blocks = re.findall(r'<div class="cell_output[^"]*">(.*?)</div>\s*</div>', html, flags=re.S)
    text = re.sub(r"<[^>]+>", "", " ".join(blocks))
    return re.sub(r"\s+", "", text.replace("&#8722;", "-").replace("−", "-"))


def test_the_book_has_its_nine_chapters(built_book, repo_root):
    pages = toc_pages(repo_root)
    assert len(pages) == 9
    for page in pages:
        assert (built_book / f"{page}.html").is_file(), f"{page} was not built"


@pytest.mark.parametrize(
    ("page", "lecture_values"),
    [
        # kernel (1, 2, -1) on (2, 3, 0, -1): a weighted sum of translated kernels.
        ("book/04_transposed_convolution", ["2.,7.,4.,-4.,-2.,1."]),
        # conv1d against conv_transpose1d on a single spike with (1, 2, 3).
        ("book/04_transposed_convolution", ["3.,2.,1.,0.,0.", "0.,0.,1.,2.,3.,0.,0.,0.,0."]),
        # nn.ConvTranspose1d with weight (1, 2, 1) on (1, 0, 0, 0, -1).
        ("book/04_transposed_convolution", ["1.,2.,1.,0.,-1.,-2.,-1."]),
        # the same example with stride 2: s(W - 1) + w = 9 values.
        ("book/05_stride_padding_dilation", ["2.,4.,1.,6.,-3.,0.,-1.,-2.,1."]),
        # F.interpolate x3 on [[1, 2], [3, 4]].
        ("book/06_grid_artifacts_and_interpolation", ["1.0000,1.0000,1.3333,1.6667,2.0000,2.0000"]),
        ("book/06_grid_artifacts_and_interpolation", ["3.,3.,3.,4.,4.,4."]),
    ],
)
def test_the_lectures_numbers_are_executed_outputs(built_book, page, lecture_values):
    outputs = executed_outputs(page_html(built_book, page))
    for values in lecture_values:
        assert values in outputs, (
            f"{page}: torch's output {values} is not among the executed outputs"
        )


@pytest.mark.parametrize("chapter", [2, 3, 4, 5, 6, 9])
def test_chapters_that_teach_draw_figures_at_build_time(built_book, repo_root, chapter):
    page = toc_pages(repo_root)[chapter - 1]
    html = page_html(built_book, page)
    images = re.findall(r'<img[^>]+src="([^"]+)"[^>]*>', html)
    drawn = [src for src in images if "_images/" in src or src.startswith("data:image")]
    assert drawn, f"{page} has no figure drawn by a cell"


def chapter_sources(repo_root: Path) -> dict[str, str]:
    """Each chapter's code cells, joined, by page."""
    sources = {}
    for page in toc_pages(repo_root):
        notebook = jupytext.read(repo_root / f"{page}.md")
        code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
        sources[page] = "\n".join(code)
    return sources


def test_every_chapter_that_draws_uses_the_course_style(repo_root):
    """``use_course_style()`` sets the inline backend: a chapter that skips it loses its
    figures on a machine with ``MPLBACKEND=Agg``."""
    for page, code in chapter_sources(repo_root).items():
        if "matplotlib" in code:
            assert "use_course_style()" in code, f"{page} draws without use_course_style()"


def test_figures_are_drawn_with_mplbackend_agg(repo_root, monkeypatch):
    """A kernel started with ``MPLBACKEND=Agg`` still puts every ``plt.show()`` in the output.

    With Agg, ``plt.show()`` draws nothing and raises nothing: the book built without a
    single static figure. One chapter, executed as the build does, stands for all.
    """
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = repo_root / "book"
    notebook = jupytext.read(book / "03_backward_pass.md")
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(book)}}
    )
    client.execute()
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    generated = load_helper_generator(repo_root).MARKER  # the helpers only mention plt.show()
    showing = [
        cell
        for cell in code_cells
        if "plt.show()" in cell.source and not cell.source.startswith(generated)
    ]
    drawn = sum(
        any("image/png" in output.get("data", {}) for output in cell.outputs) for cell in showing
    )
    assert showing, "the chapter no longer calls plt.show(): pick another chapter"
    missing = len(showing) - drawn
    assert missing == 0, f"{missing} of {len(showing)} figures vanished under MPLBACKEND=Agg"


def test_one_figure_is_animated(built_book, repo_root):
    pages = [page_html(built_book, page) for page in toc_pages(repo_root)]
    # matplotlib's jshtml writer names the frame image "_anim_img<id>" and embeds every frame.
    assert any("_anim_img" in html for html in pages), (
        "no page carries a matplotlib HTML/JS animation"
    )


def test_no_cell_writes_to_stderr_or_fails(built_book, repo_root):
    for page in toc_pages(repo_root):
        html = page_html(built_book, page)
        assert "output stderr" not in html, f"{page}: a cell wrote to stderr"
        assert "output traceback" not in html, f"{page}: a cell raised"


def test_math_is_served_by_the_site_not_a_cdn(built_book, repo_root):
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").is_file()
    for page in toc_pages(repo_root):
        html = page_html(built_book, page)
        scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
        remote = [src for src in scripts if src.startswith(("http:", "https:", "//"))]
        assert not remote, f"{page} loads scripts from the network: {remote}"
        if 'class="math' in html:
            assert "_static/mathjax/tex-chtml.js" in html, f"{page} has math but no local MathJax"


def test_exercises_and_solutions_never_reach_the_site(built_book):
    built = {path.relative_to(built_book).as_posix() for path in built_book.rglob("*")}
    leaked = [
        path for path in built if path.split("/")[0] in {"exercises", "solutions", "autograder"}
    ]
    assert not leaked, f"built site holds {leaked[:5]}"


def test_every_page_offers_its_notebook_and_launch_buttons(built_book, repo_root):
    for page in toc_pages(repo_root):
        html = page_html(built_book, page)
        assert "download-notebook-button" in html or f"{Path(page).name}.ipynb" in html, page
        assert "colab.research.google.com" in html, f"{page} has no Colab button"
        assert "mybinder.org" in html, f"{page} has no Binder button"


def load_helper_generator(repo_root: Path):
    """``book/_generate_helpers.py``, the script that writes each chapter's helper cell."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "generate_helpers", repo_root / "book" / "_generate_helpers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_helper_cells_are_what_the_generator_makes_today(repo_root):
    """Each chapter's folded helper cell is a copy of ``plotting.py``: edit one, rerun the
    generator (``python book/_generate_helpers.py``), or this fails."""
    generator = load_helper_generator(repo_root)
    for page in toc_pages(repo_root):
        text = (repo_root / f"{page}.md").read_text(encoding="utf-8")
        assert generator.with_helper_cell(text) == text, (
            f"{page}: its helper cell differs from plotting.py; run book/_generate_helpers.py"
        )


def test_no_page_imports_what_a_download_lacks(repo_root):
    """A downloaded page runs with torch, numpy and matplotlib only: no repository modules."""
    local_modules = re.compile(r"^\s*(from|import)\s+(plotting|autograder|course_checks)\b", re.M)
    for page, code in chapter_sources(repo_root).items():
        assert not local_modules.search(code), f"{page} imports a module of the repository"


def test_helper_cells_define_every_helper_their_page_uses(repo_root, tmp_path):
    """Run each page's helper cell alone, in an empty folder: it defines every name of
    ``plotting.py`` the page's other cells use."""
    import subprocess
    import sys

    generator = load_helper_generator(repo_root)
    helpers = set(generator._definitions(ast.parse((repo_root / "book/plotting.py").read_text())))
    for page in toc_pages(repo_root):
        notebook = jupytext.read(repo_root / f"{page}.md")
        cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
        helper_cells = [source for source in cells if source.startswith(generator.MARKER)]
        rest = "\n".join(source for source in cells if not source.startswith(generator.MARKER))
        used = sorted(helpers & set(re.findall(r"[A-Za-z_]\w*", rest)))
        if not used:
            assert not helper_cells, f"{page} carries helpers it does not use"
            continue
        assert len(helper_cells) == 1, (
            f"{page} uses {used} but has {len(helper_cells)} helper cells"
        )
        probe = helper_cells[0] + f"\nmissing = [n for n in {used!r} if n not in globals()]\n"
        probe += "assert not missing, missing\n"
        result = subprocess.run(
            [sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{page}: {result.stderr[-2000:]}"


def release_graded_parts(repo_root: Path) -> dict[str, list[tuple[str, int, str]]]:
    """Each release notebook's graded cells: grade_id, points, and "hand" for written ones."""
    import json

    parts = {}
    for notebook_path in sorted((repo_root / "exercises").glob("*/*.ipynb")):
        cells = json.loads(notebook_path.read_text(encoding="utf-8"))["cells"]
        graded = []
        for cell in cells:
            meta = cell["metadata"].get("nbgrader", {})
            if meta.get("grade"):
                how = "hand" if cell["cell_type"] == "markdown" else "auto"
                graded.append((meta["grade_id"], meta["points"], how))
        parts[notebook_path.parent.name] = graded
    return parts


def test_chapter_sevens_points_are_the_release_notebooks(repo_root):
    """Chapter 7 states each part's points as data (it runs without the repository); they
    must be the points nbgrader reads from the released notebooks."""
    notebook = jupytext.read(repo_root / "book" / "07_exercises.md")
    (table_cell,) = [cell.source for cell in notebook.cells if "GRADED_PARTS = {" in cell.source]
    namespace: dict = {}
    exec(table_cell, namespace)
    stated = {
        assignment: [(gid, points, how) for gid, _, points, how in parts]
        for assignment, parts in namespace["GRADED_PARTS"].items()
    }
    assert stated == release_graded_parts(repo_root)


def test_the_flip_is_stated_once_and_linked_from_chapters_three_and_seven(built_book):
    """Chapter 4 holds the one boxed statement of the flip; chapters 3 and 7 link to it."""
    chapter_four = page_html(built_book, "book/04_transposed_convolution")
    assert chapter_four.count('id="the-flip"') == 1
    box = chapter_four[chapter_four.index('id="the-flip"') :]
    assert "admonition" in box[:400] and "No flip when you stamp kernels" in box[:2000]
    for page in ("book/03_backward_pass", "book/07_exercises"):
        assert 'href="04_transposed_convolution.html#the-flip"' in page_html(built_book, page), (
            f"{page} does not link to the box on the flip"
        )


def test_chapter_five_animates_a_two_dimensional_transposed_convolution(built_book):
    """Beside the 1-d animations, one plays a 2-d one: stamps with stride 2 and padding 1."""
    html = page_html(built_book, "book/05_stride_padding_dilation")
    players = re.findall(r'<img alt="([^"]*)" id="_anim_img', html)
    assert any("5 by 7 output" in alt for alt in players), "chapter 5 has no 2-d animation"
    assert len(players) >= 2, "chapter 5 lost its 1-d animation"


def test_chapter_nine_trains_its_three_decoders_at_build_time(built_book):
    """The training cell's printed results are in the page (a number only an output has)."""
    html = page_html(built_book, "book/09_subpixel_and_trained_decoders")
    text = re.sub(r"<[^>]+>", "", html)
    for kind in ("transposed", "resize-conv", "sub-pixel, ICNR"):
        assert re.search(rf"{kind}\s+test MSE \d\.\d{{4}}", text), f"no trained {kind} decoder"
        assert re.search(rf"{kind}\s+flat input: .* spread over \d\.\d{{4}}", text), (
            f"the {kind} decoder's flat-input test is missing"
        )


def release_notebook_text(repo_root: Path) -> dict[str, str]:
    """Each release notebook's Markdown, joined, by file name."""
    import json

    texts = {}
    for notebook_path in sorted((repo_root / "exercises").glob("*/*.ipynb")):
        cells = json.loads(notebook_path.read_text(encoding="utf-8"))["cells"]
        markdown = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"]
        texts[notebook_path.name] = " ".join(" ".join(markdown).split())
    return texts


def test_chapters_one_and_seven_tell_the_notebooks_story_of_checking_and_submitting(repo_root):
    """A student has the notebook and course_checks.py, not the repository: the book gives
    only commands that work there, and the same routes to submit as the notebooks."""
    pages = {
        page: (repo_root / f"{page}.md").read_text(encoding="utf-8")
        for page in ("book/01_why_grow_the_signal", "book/07_exercises")
    }
    for page, text in pages.items():
        assert "python -m autograder" not in text, f"{page} needs the repository"
        assert "requirements.txt" not in text, f"{page} names a file students do not have"
        assert "python course_checks.py" in text, f"{page} lacks the student's self-check"
    routes = ("nbgrader's Assignments tab", "pull request to the course's grading repository")
    for name, text in release_notebook_text(repo_root).items():
        self_check = f"python course_checks.py {name}"
        assert self_check in text, f"{name} no longer says {self_check!r}: update chapter 7"
        for route in routes:
            assert route in text, f"{name} no longer offers {route!r}: update chapter 7"
    chapter_seven = " ".join(pages["book/07_exercises"].split())
    for route in routes:
        assert route in chapter_seven, f"chapter 7 does not offer {route!r}"
