"""The static scan's "needs a look" for what hides a route from a reading of the source.

A hostile reviewer cloned torch's Python decompositions at run time, with every telling
name built from pieces, and the scan said nothing. Such constructions are findings of their
own now; honest answers (the instructor's, the corpus's naive loops, the independently
written class) use none of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autograder import static_scan

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT / "tests" / "fixtures" / "submissions"
CLASS = REPO_ROOT / "tests" / "fixtures" / "class"


def reviews(source: str) -> list[str]:
    return [f.why for f in static_scan.scan_source(source, "cell") if f.severity == "review"]


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ('m = __import__("so" + "cket")', "computed name"),
        ('m = __import__("so" + "cket")', "built from pieces: a socket"),
        (
            "import importlib\nname = 'torch._de'\nm = importlib.import_module(name + 'comp')",
            "computed",
        ),  # fmt: skip
        ("f = getattr(F, which)", "computed name"),
        ("g = f.__code__.replace(co_filename='<mine>')", "code object rewritten"),
        ("import types\nh = types.FunctionType(code, {})", "function made from a code object"),
        ("exec(text)", "run from a string"),
    ],
)
def test_what_hides_a_name_needs_a_look(source, why):
    assert any(why in reason for reason in reviews(source)), reviews(source)


def test_names_written_out_are_no_review():
    """getattr with a literal name, a plain import: the ordinary findings only."""
    assert reviews('w = getattr(module, "weight")\nimport torch.nn.functional as F') == []


def test_the_cloned_decompositions_fixture_needs_a_look():
    source = REPO_ROOT / "tests" / "fixtures" / "sources" / "attack_guard_decomposition_copy.py"
    found = reviews(source.read_text(encoding="utf-8"))
    assert any("code object rewritten" in why for why in found)
    assert any("torch's Python decompositions" in why for why in found)


def _answer_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


@pytest.mark.parametrize("fixture", ["instructor", "naive_loops"])
def test_honest_answers_need_no_look(fixture):
    for notebook in sorted((CORPUS / fixture).glob("*/*.ipynb")):
        for source in _answer_cells(notebook):
            assert reviews(source) == [], notebook


def test_the_independently_written_class_needs_no_look():
    files = sorted(CLASS.glob("*/*.py"))
    assert len(files) == 15
    for path in files:
        assert reviews(path.read_text(encoding="utf-8")) == [], path
