"""Similar submissions: a disguised copy is flagged against its source, and only it.

The class is made in a temporary ``submitted/`` folder from the corpus's notebooks (the
instructor's answer, the naive loops, the untouched release) and one copy of the naive
loops disguised by hand (``fixtures/similarity/``): names renamed, functions reordered.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from copydetect import compare_files

from autograder import cli, grading, similarity
from autograder import notebook as nb

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT / "tests" / "fixtures" / "submissions"
COPY_SOURCE = REPO_ROOT / "tests" / "fixtures" / "similarity" / "copied_naive_conv_transpose1d.py"
A1 = "01_conv_transpose1d"
ASSIGNMENTS = ["01_conv_transpose1d", "02_conv_transpose2d", "03_interpolate"]
RELEASE = grading.Release(REPO_ROOT / "exercises")


def _corpus_notebook(fixture: str, assignment: str) -> Path:
    return next((CORPUS / fixture / assignment).glob("*.ipynb"))


def _add(root: Path, student: str, fixture: str, assignment: str) -> Path:
    """Put the corpus fixture's notebook in ``root`` as ``student``'s submission."""
    source = _corpus_notebook(fixture, assignment)
    target = root / student / assignment / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _copy_cells() -> list[str]:
    """The disguised copy's code cells (its ``# %%`` sections)."""
    text = COPY_SOURCE.read_text(encoding="utf-8")
    return [part.strip("\n") + "\n" for part in re.split(r"^# %%\n", text, flags=re.M)[1:]]


def answer_notebook(notebook: Path, sections: list[str]) -> dict:
    """``notebook`` with its answer code cells replaced by ``sections``, one cell each, at
    the first answer cell's place (as a student would write their own answer)."""
    data = json.loads(notebook.read_text(encoding="utf-8"))
    cells = data["cells"]
    answers = [
        i
        for i, c in enumerate(cells)
        if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code"
    ]
    added = [
        {"cell_type": "code", "execution_count": None, "id": f"answer-{n}", "metadata": {}}
        | {"outputs": [], "source": code}
        for n, code in enumerate(sections)
    ]
    kept = [c for i, c in enumerate(cells) if i not in answers]
    data["cells"] = kept[: answers[0]] + added + kept[answers[0] :]
    return data


def _add_copy(root: Path, student: str) -> Path:
    """The naive loops' notebook with its answer cells replaced by the disguised copy."""
    notebook = answer_notebook(_corpus_notebook("naive_loops", A1), _copy_cells())
    target = root / student / A1 / "conv_transpose1d.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook), encoding="utf-8")
    return target


def _flagged_students(report: similarity.SimilarityReport) -> set[frozenset[str]]:
    return {frozenset((p.first.student, p.second.student)) for p in report.flagged}


def _defined_names(code: str) -> list[str]:
    return [
        node.name
        for node in ast.parse(code).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    ]


def test_the_copy_is_disguised() -> None:
    """The fixture is not a verbatim copy: its functions come in another order, renamed inside."""
    source = "\n".join(
        c.source
        for c in nb.student_code(
            nb.read_notebook(_corpus_notebook("naive_loops", A1)), RELEASE.notebook(A1)
        )
    )
    copy = "\n".join(_copy_cells())
    source_order = [n for n in _defined_names(source) if n in _defined_names(copy)]
    copy_order = [n for n in _defined_names(copy) if n in source_order]
    assert sorted(source_order) == sorted(copy_order) and source_order != copy_order
    assert "def _one(" in source and "def _one(" not in copy
    shared_lines = set(source.splitlines()) & set(copy.splitlines())
    body_lines = [line for line in copy.splitlines() if line.startswith(" " * 8)]
    assert len(shared_lines & set(body_lines)) < len(body_lines) / 2


def test_copy_with_renamed_names_and_reordered_functions_is_flagged_against_its_source(
    tmp_path: Path,
) -> None:
    root = tmp_path / "submitted"
    _add(root, "ada", "naive_loops", A1)
    _add(root, "grace", "instructor", A1)
    _add(root, "linus", "release_untouched", A1)
    _add_copy(root, "mallory")

    report = similarity.find_similar([root], RELEASE)

    assert _flagged_students(report) == {frozenset({"ada", "mallory"})}
    (pair,) = report.flagged
    assert min(pair.similarity) > 0.8  # most of each side is the other's
    assert report.pairs_compared == 6 and report.answers == {A1: 4}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_independent_correct_answers_are_not_flagged(tmp_path: Path, assignment: str) -> None:
    """The instructor's answer and the naive loops both pass every test, written apart."""
    root = tmp_path / "submitted"
    _add(root, "grace", "instructor", assignment)
    _add(root, "ada", "naive_loops", assignment)

    answers, _ = similarity.collect_answers([root], RELEASE)
    assert all(len(a.code) > 1000 for a in answers)  # both are compared on real code
    assert similarity.compare_answers(answers) == []
    # Well under the threshold, on both sides.
    shared = similarity.compare_answers(answers, threshold=0.01)
    assert shared and max(shared[0].similarity) < 0.4


SCORES = """
from autograder import grading, similarity
answers, _ = similarity.collect_answers([{root!r}], grading.Release({release!r}))
print(repr([p.similarity for p in similarity.compare_answers(answers, threshold=0.01)]))
"""


def test_scores_are_the_same_in_every_run(tmp_path: Path) -> None:
    """Python salts ``hash`` per process; the fingerprints must not depend on it."""
    root = tmp_path / "submitted"
    _add(root, "grace", "instructor", A1)
    _add(root, "ada", "naive_loops", A1)
    _add_copy(root, "mallory")
    script = SCORES.format(root=str(root), release=str(RELEASE.root))
    runs = [
        subprocess.run(
            [sys.executable, "-c", script],
            env=dict(os.environ, PYTHONHASHSEED=seed),
            capture_output=True, text=True, check=True, cwd=REPO_ROOT,
        ).stdout
        for seed in ("1", "2")
    ]  # fmt: skip
    assert runs[0] == runs[1] and runs[0].count("(") == 3


def test_the_untouched_release_is_similar_to_nothing(tmp_path: Path) -> None:
    """Two students who hand in the release unchanged, and two real answers: nothing flagged."""
    root = tmp_path / "submitted"
    for assignment in ASSIGNMENTS:
        _add(root, "linus", "release_untouched", assignment)
        _add(root, "ken", "release_untouched", assignment)
        _add(root, "grace", "instructor", assignment)
        _add(root, "ada", "naive_loops", assignment)

    answers, _ = similarity.collect_answers([root], RELEASE)
    untouched = [a for a in answers if a.student in {"linus", "ken"}]
    assert len(untouched) == 6 and all(a.fingerprint.hashes == set() for a in untouched)
    assert similarity.compare_answers(answers) == []
    paired = similarity.compare_answers(answers, threshold=0.01)
    assert paired and all({p.first.student, p.second.student} == {"grace", "ada"} for p in paired)


def _in_skeleton(given: str, bodies: list[str]) -> str:
    """The release's class with its ``raise NotImplementedError()`` lines replaced, in order."""
    for body in bodies:
        given = given.replace("        raise NotImplementedError()", body, 1)
    assert "NotImplementedError" not in given
    return given


def test_release_code_two_students_keep_is_left_out() -> None:
    """Two answers that share only the given class skeleton are not alike; with it, they are."""
    release_nb = RELEASE.notebook(A1)
    given = next(
        c.source
        for c in nb.student_code(release_nb, release_nb)
        if "class ConvTranspose1d" in c.source
    )
    first = _in_skeleton(
        given,
        [
            "        self.weight = nn.Parameter(torch.randn(in_channels, out_channels, kernel_size))\n"
            "        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None",
            "        return conv_transpose1d(input, self.weight, self.bias)",
        ],
    )
    second = _in_skeleton(
        given,
        [
            "        shape = [in_channels, out_channels // groups, kernel_size]\n"
            "        self.weight = nn.Parameter(torch.empty(*shape).uniform_(-1, 1))\n"
            "        self.bias = None if not bias else nn.Parameter(torch.empty(out_channels))\n"
            "        self.settings = (stride, padding, output_padding, groups, dilation)",
            "        y = conv_transpose1d(input, self.weight, self.bias, *self.settings)\n"
            "        return y",
        ],
    )
    boilerplate = similarity.release_boilerplate(release_nb)

    def share(with_boilerplate: set[int] | None) -> float:
        fingerprints = [
            similarity._fingerprint(code, similarity.WINDOW, with_boilerplate)
            for code in (first, second)
        ]
        return max(compare_files(*fingerprints)[1])

    assert share(None) >= 0.3  # the skeleton alone makes a third of them alike
    assert share(boilerplate) < 0.2


def test_the_shortcut_never_drops_a_flagged_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_could_reach`` skips copydetect's comparison only for pairs it would not flag."""
    answers, _ = similarity.collect_answers([CORPUS], RELEASE)
    with_shortcut = similarity.compare_answers(answers, threshold=0.3)
    monkeypatch.setattr(similarity, "_could_reach", lambda *_: True)
    without = similarity.compare_answers(answers, threshold=0.3)
    key = [(p.first.rel, p.second.rel, p.similarity) for p in without]
    assert len(key) > 100  # the corpus is made from the instructor's code: many pairs
    assert [(p.first.rel, p.second.rel, p.similarity) for p in with_shortcut] == key
    scores = [p.score for p in with_shortcut]
    assert scores == sorted(scores, reverse=True)  # most similar first


HOSTILE = "<img src=x onerror=alert(1)>\u202e\nnull\udcff"


def _shown_lines(block: str) -> list[tuple[int, str]]:
    """The numbered lines of a report's code block, tags taken out and text unescaped."""
    lines = []
    for row in block.split("\n"):
        match = re.fullmatch(r"<span class='ln'>\s*(\d+)</span> (.*)", row)
        if match:
            lines.append((int(match[1]), html.unescape(re.sub(r"</?mark>", "", match[2]))))
    return lines


def test_report_is_one_offline_page_with_every_name_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "submitted"
    _add(root, "ada", "naive_loops", A1)
    _add_copy(root, HOSTILE)
    broken = root / "bob" / A1 / "conv_transpose1d.ipynb"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json", encoding="utf-8")

    status = cli.main([
        "similarity", str(root), "--out", str(tmp_path / "out"), "--release",
        str(REPO_ROOT / "exercises"),
    ])  # fmt: skip

    assert status == 0
    assert "compared 1 pairs; 1 share 50% or more" in capsys.readouterr().out
    page = (tmp_path / "out" / similarity.REPORT_NAME).read_text(encoding="utf-8")
    assert "<img" not in page and "onerror=alert(1)>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;\\u202e\\nnull\\xff" in page
    assert not re.search(r"<(script|link|img|iframe)\b|https?:|src=['\"]", page.replace(
        "&lt;img src=x", ""
    ))  # fmt: skip
    assert "bob/01_conv_transpose1d/conv_transpose1d.ipynb: not valid JSON" in page
    # the matching lines are shown on both sides, marked, each line as it is in the answer
    assert page.count("class='side-by-side'") == 1 and page.count("<pre>") == 2
    answers, _ = similarity.collect_answers([root], RELEASE)
    codes = [a.code.split("\n") for a in answers]
    blocks = [_shown_lines(block.split("</pre>")[0]) for block in page.split("<pre>")[1:]]
    assert all("<mark>" in block for block in page.split("<pre>")[1:])
    for shown, code in zip(blocks, codes, strict=True):
        assert len(shown) > 20 and all(code[n - 1] == line for n, line in shown)


def test_a_threshold_outside_0_1_is_refused(tmp_path: Path) -> None:
    status = cli.main(["similarity", str(CORPUS), "--out", str(tmp_path), "--threshold", "30"])
    assert status == cli.CANNOT_RUN and not list(tmp_path.iterdir())


def test_code_in_the_report_is_text(tmp_path: Path) -> None:
    """A student's code that holds markup or bidi controls is shown as text, never run."""
    hostile_code = (
        "x = '</pre><script>fetch(\"https://evil.example\")</script>'  # \u202e evil\n"
        + "".join(f"y{n} = [k * {n} for k in range({n}) if k % 3 == {n % 3}]\n" for n in range(12))
    )
    root = tmp_path / "submitted"
    for student in ("eve", "oscar"):
        notebook = json.loads(RELEASE.notebooks[A1].read_text(encoding="utf-8"))
        notebook["cells"].append(
            {"cell_type": "code", "execution_count": None, "id": "mine", "metadata": {}}
            | {"outputs": [], "source": hostile_code}
        )
        target = root / student / A1 / "conv_transpose1d.ipynb"
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(notebook), encoding="utf-8")

    report = similarity.find_similar([root], RELEASE)
    page = similarity.render_html(report)

    assert _flagged_students(report) == {frozenset({"eve", "oscar"})}
    assert "<script" not in page and "https://" not in page.replace("https://evil", "")
    assert "&lt;/pre&gt;&lt;script&gt;" in page and "\u202e" not in page and "\ufffd evil" in page
