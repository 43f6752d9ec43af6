"""Similar submissions: every pair of an assignment's answers compared with copydetect.

A student's answer is their code cells (``nb.student_code``: the instructor's test cells
left out), with the cells that are still the release's own dropped. copydetect tokenises
it (names become ``V``/``F``/``O``, strings ``S``, comments and spaces go), hashes every
``NOISE``-character k-gram and keeps one hash per window (winnowing, as MOSS does), minus
the hashes of the release's own code (boilerplate, signatures, test cells), so renamed
variables and reordered functions still match, and the code every student was given does
not. A pair is flagged when one side's answer is at least ``threshold`` shared with the
other and the shared code is at least ``MIN_SHARED`` characters long.

The report is one HTML file with no network (inline CSS, nothing fetched: copydetect's
own template loads Bootstrap from a CDN and renders names unescaped, so it is not used).
Every name in it is the printable form of the folder name (``grading.printable``),
escaped; the code is escaped too.
"""

from __future__ import annotations

import hashlib
import html
import io
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import copydetect.utils
import numpy as np
from copydetect import CodeFingerprint, compare_files
from copydetect.utils import get_token_coverage

from autograder import grading
from autograder import notebook as nb

#: The shortest match that counts, in filtered characters (a name is one character).
NOISE = 25
#: Every match at least this long is found: winnowing keeps one hash per window of WINDOW.
GUARANTEE = 30
WINDOW = GUARANTEE - NOISE + 1
DEFAULT_THRESHOLD = 0.5
#: Shared filtered characters below which a pair is never flagged (a one-line answer).
MIN_SHARED = 100
#: An answer longer than this is compared on its first MAX_CODE characters.
MAX_CODE = 200_000
#: Lines of context kept around each match in the report (the others are elided).
CONTEXT_LINES = 4
REPORT_NAME = "similarity.html"


@dataclass
class Answer:
    """One student's answer to one assignment: the code compared, and its fingerprint."""

    student: str  # printable (grading.printable), never the raw folder name
    rel: str  # printable path below the submissions root
    assignment: str
    code: str
    fingerprint: CodeFingerprint = field(repr=False)


@dataclass(frozen=True)
class Pair:
    """Two answers to one assignment and how much of each the other shares."""

    first: Answer
    second: Answer
    similarity: tuple[float, float]  # the share of first's code found in second, and back
    shared: int  # filtered characters of first's code that match
    slices: tuple[np.ndarray, np.ndarray]  # the matching spans in each answer's code

    @property
    def score(self) -> float:
        return max(self.similarity)


@dataclass
class SimilarityReport:
    """What was compared, what was flagged (most similar first) and what was left out."""

    threshold: float
    flagged: list[Pair]
    answers: dict[str, int]  # assignment -> answers compared
    pairs_compared: int
    left_out: list[tuple[str, str]]  # (printable path, why)


def _stable_kgram_hashes(text: str, k: int) -> np.ndarray:
    """copydetect's ``hashed_kgrams`` with a hash that is the same in every run: Python's
    ``hash`` of a string is salted per process, so winnowing would keep other k-grams and
    every score would change from one run to the next."""
    digests = (
        hashlib.blake2b(text[at : at + k].encode("utf-8", "surrogatepass"), digest_size=8)
        for at in range(len(text) - k + 1)
    )
    return np.array([int.from_bytes(d.digest(), "big", signed=True) for d in digests], np.int64)


# copydetect looks the function up in its module at each call
copydetect.utils.hashed_kgrams = _stable_kgram_hashes


def _displayable(code: str) -> str:
    """``code`` with line ends made ``\\n`` and every other unprintable character (bidi
    overrides, lone surrogates, controls) one U+FFFD, so the report shows what was compared."""
    code = code.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(char if char.isprintable() or char in "\n\t" else "\ufffd" for char in code)


def answer_code(submission: dict, release: dict) -> str:
    """The student's own code cells, joined, without the cells still as released."""
    released = {cell.source.strip() for cell in nb.student_code(release, release)}
    cells = [
        f"# {cell.label}\n{cell.source.strip()}\n"
        for cell in nb.student_code(submission, release)
        if cell.source.strip() and cell.source.strip() not in released
    ]
    return _displayable("\n".join(cells)[:MAX_CODE])


def release_boilerplate(release: dict) -> set[int]:
    """Every k-gram hash of the release's code: each code cell, and its answer cells joined
    as a student's are (so that the k-grams across two untouched cells count too)."""
    texts = [nb.cell_source(cell) for cell in release["cells"] if cell.get("cell_type") == "code"]
    texts.append(
        "\n".join(f"# {c.label}\n{c.source.strip()}\n" for c in nb.student_code(release, release))
    )
    hashes: set[int] = set()
    for text in texts:
        hashes |= _fingerprint(_displayable(text), window=1).hashes
    return hashes


def _fingerprint(code: str, window: int, boilerplate: set[int] | None = None) -> CodeFingerprint:
    """copydetect's fingerprint of ``code``, without the hashes in ``boilerplate``.

    The boilerplate is taken out here, not by copydetect (0.5.0 calls ``np.intersect1d``
    with ``assume_unique`` on hashes that repeat, which can leave some occurrences in).
    """
    fingerprint = CodeFingerprint(
        "answer.py", NOISE, window, language="python", fp=io.StringIO(code)
    )
    if boilerplate:
        fingerprint.hashes -= boilerplate
        fingerprint.hash_idx = {
            h: at for h, at in fingerprint.hash_idx.items() if h not in boilerplate
        }
        fingerprint.token_coverage = get_token_coverage(
            fingerprint.hash_idx, NOISE, len(fingerprint.filtered_code)
        )
    return fingerprint


def collect_answers(
    paths: Iterable[str | Path], release: grading.Release
) -> tuple[list[Answer], list[tuple[str, str]]]:
    """The answers below ``paths`` (``grading.discover``'s layout and refusals), and the
    entries left out with the reason."""
    answers: list[Answer] = []
    left_out: list[tuple[str, str]] = []
    boilerplate: dict[str, set[int]] = {}
    for submission in grading.discover(paths):
        rel = grading.printable(submission.rel.as_posix())
        if submission.problem:
            left_out.append((rel, submission.problem))
            continue
        try:
            notebook = nb.read_notebook(submission.path)
        except nb.NotebookError as error:
            left_out.append(
                (rel, grading.printable(str(error).removeprefix(f"{submission.path}: ")))
            )
            continue
        assignment, _ = release.identify(notebook, submission.path)
        if assignment is None:
            left_out.append((rel, "not a notebook of any assignment in the release"))
            continue
        release_nb = release.notebook(assignment)
        if assignment not in boilerplate:
            boilerplate[assignment] = release_boilerplate(release_nb)
        code = answer_code(notebook, release_nb)
        fingerprint = _fingerprint(code, WINDOW, boilerplate[assignment])
        answers.append(Answer(submission.student, rel, assignment, code, fingerprint))
    return answers, left_out


def _could_reach(first: Answer, second: Answer, threshold: float) -> bool:
    """False only when the pair cannot be flagged (saves copydetect's comparison): each
    position of a shared hash covers at most NOISE characters of its answer."""
    shared = first.fingerprint.hashes & second.fingerprint.hashes
    if not shared:
        return False
    bounds = []
    for answer in (first, second):
        positions = sum(len(answer.fingerprint.hash_idx[h]) for h in shared)
        bounds.append(positions * NOISE)
    if bounds[0] < MIN_SHARED:
        return False
    coverages = (first.fingerprint.token_coverage, second.fingerprint.token_coverage)
    return any(
        bound >= threshold * coverage for bound, coverage in zip(bounds, coverages, strict=True)
    )


def compare_answers(answers: list[Answer], threshold: float = DEFAULT_THRESHOLD) -> list[Pair]:
    """The pairs of answers to the same assignment, from different students, that share
    ``threshold`` of one side and ``MIN_SHARED`` characters: most similar first."""
    by_assignment: dict[str, list[Answer]] = {}
    for answer in answers:
        by_assignment.setdefault(answer.assignment, []).append(answer)
    flagged = []
    pairs = (itertools.combinations(group, 2) for group in by_assignment.values())
    for first, second in itertools.chain.from_iterable(pairs):
        if first.student == second.student:
            continue
        if not _could_reach(first, second, threshold):
            continue
        shared, similarity, slices = compare_files(first.fingerprint, second.fingerprint)
        pair = Pair(
            first, second, (float(similarity[0]), float(similarity[1])), int(shared), slices
        )
        if pair.score >= threshold and pair.shared >= MIN_SHARED:
            flagged.append(pair)
    flagged.sort(key=lambda p: (-p.score, -min(p.similarity), p.first.rel, p.second.rel))
    return flagged


def find_similar(
    paths: Iterable[str | Path], release: grading.Release, threshold: float = DEFAULT_THRESHOLD
) -> SimilarityReport:
    """Every pair of submissions below ``paths`` compared, per assignment."""
    if not 0 < threshold <= 1:
        raise grading.GraderError(f"the threshold must be in (0, 1], not {threshold}")
    answers, left_out = collect_answers(paths, release)
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer.assignment] = counts.get(answer.assignment, 0) + 1
    pairs = sum(n * (n - 1) // 2 for n in counts.values())
    return SimilarityReport(threshold, compare_answers(answers, threshold), counts, pairs, left_out)


# --------------------------------------------------------------------------- the report

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1rem auto; max-width: 100rem;
       padding: 0 1rem; color: #1b1b1b; }
table.pairs { border-collapse: collapse; margin: 1rem 0; }
table.pairs td, table.pairs th { border: 1px solid #bbb; padding: .25rem .6rem; text-align: left; }
section.pair { border-top: 2px solid #444; margin-top: 2rem; }
.side-by-side { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.side-by-side > div { min-width: 0; }
@media (max-width: 50rem) { .side-by-side { grid-template-columns: 1fr; } }
pre { background: #f6f6f6; padding: .5rem; overflow-x: auto; font-size: 13px;
      white-space: pre; }
mark { background: #ffd866; color: inherit; }
.ln, .skip, .note { color: #666; }
h1, h2, h3, p, td { overflow-wrap: anywhere; }
.table-scroll { overflow-x: auto; }
"""


def _line_html(line: str, marked: np.ndarray) -> str:
    """One line, escaped, its matching runs of characters in ``<mark>``."""
    parts, at = [], 0
    for is_marked, run in itertools.groupby(marked):
        length = len(list(run))
        text = html.escape(line[at : at + length])
        parts.append(f"<mark>{text}</mark>" if is_marked else text)
        at += length
    return "".join(parts)


def _code_html(answer: Answer, spans: np.ndarray) -> str:
    """The answer's code, escaped and numbered, its matching spans marked, and only the
    lines within ``CONTEXT_LINES`` of a match shown."""
    marked = np.zeros(len(answer.code) + 1, dtype=bool)
    for start, end in zip(*spans, strict=True):
        marked[int(start) : int(end)] = True
    lines, starts, at = answer.code.split("\n"), [], 0
    for line in lines:
        starts.append(at)
        at += len(line) + 1
    has_match = [
        bool(marked[a : a + len(line)].any()) for a, line in zip(starts, lines, strict=True)
    ]
    near = np.convolve(has_match, np.ones(2 * CONTEXT_LINES + 1), mode="same") > 0
    shown, skipped = [], 0
    for number, (line, start) in enumerate(zip(lines, starts, strict=True), 1):
        if not near[number - 1]:
            skipped += 1
            continue
        if skipped:
            shown.append(f"<span class='skip'>⋮ {skipped} lines</span>")
            skipped = 0
        body = _line_html(line, marked[start : start + len(line)])
        shown.append(f"<span class='ln'>{number:4d}</span> {body}")
    if skipped:
        shown.append(f"<span class='skip'>⋮ {skipped} lines</span>")
    return "<pre>" + "\n".join(shown) + "</pre>"


def _pair_html(number: int, pair: Pair) -> str:
    names = [html.escape(answer.student) for answer in (pair.first, pair.second)]
    paths = [html.escape(answer.rel) for answer in (pair.first, pair.second)]
    percents = [f"{share:.0%}" for share in pair.similarity]
    columns = "".join(
        f"<div><h3>{name}: {percent} of this answer matches</h3>"
        f"<p class='note'>{path}</p>{_code_html(answer, spans)}</div>"
        for name, path, percent, answer, spans in zip(
            names, paths, percents, (pair.first, pair.second), pair.slices, strict=True
        )
    )
    return (
        f"<section class='pair' id='pair-{number}'><h2>{number}. {names[0]} and {names[1]} "
        f"({html.escape(pair.first.assignment)})</h2>"
        f"<div class='side-by-side'>{columns}</div></section>"
    )


def _summary_html(report: SimilarityReport) -> str:
    rows = "".join(
        f"<tr><td><a href='#pair-{n}'>{n}</a></td><td>{html.escape(p.first.assignment)}</td>"
        f"<td>{html.escape(p.first.student)}</td><td>{html.escape(p.second.student)}</td>"
        f"<td>{p.similarity[0]:.0%}</td><td>{p.similarity[1]:.0%}</td></tr>"
        for n, p in enumerate(report.flagged, 1)
    )
    counts = ", ".join(f"{html.escape(a)}: {n}" for a, n in sorted(report.answers.items()))
    table = (
        "<div class='table-scroll'><table class='pairs'><tr><th>#</th><th>assignment</th><th>student</th>"
        "<th>student</th><th>share of the first</th><th>share of the second</th></tr>"
        f"{rows}</table></div>"
        if report.flagged
        else "<p>No pair is above the threshold.</p>"
    )
    return (
        f"<p>{report.pairs_compared} pairs compared (answers per assignment: {counts or 'none'});"
        f" {len(report.flagged)} share {report.threshold:.0%} or more of one side's own code "
        f"(the release's code left out). A match is a lead to read, not a verdict.</p>{table}"
    )


def _left_out_html(report: SimilarityReport) -> str:
    if not report.left_out:
        return ""
    items = "".join(
        f"<li>{html.escape(rel)}: {html.escape(why)}</li>" for rel, why in report.left_out
    )
    return f"<h2>Not compared</h2><ul>{items}</ul>"


def render_html(report: SimilarityReport) -> str:
    """The report as one self-contained HTML page (no script, nothing fetched)."""
    body = (
        _summary_html(report)
        + "".join(_pair_html(n, p) for n, p in enumerate(report.flagged, 1))
        + _left_out_html(report)
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">"
        f"<title>Similar submissions</title><style>{_CSS}</style></head>"
        f"<body><h1>Similar submissions</h1>{body}</body></html>\n"
    )


def write_report(report: SimilarityReport, out: Path) -> Path:
    """Write ``render_html(report)`` to ``out/similarity.html`` and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_NAME
    grading.write_atomic(path, render_html(report))
    return path
