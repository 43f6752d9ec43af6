"""Feedback pages: one self-contained HTML file per submission, and the TA's index of them.

``feedback.html`` lies beside each ``results.json``: per test what it checks and its
verdict; per failed case the call, the grader's message, the likely bug, the student's own
failing line (the last frame of their code in the traceback) and a figure of torch's
output, the student's and their difference, drawn with matplotlib's Agg and embedded as a
PNG data URI (stem plots for 1-d outputs, heat maps for 2-d ones). The page needs nothing
else: its CSS is inline, it has no script, and its Content-Security-Policy refuses every
request, so that it opens offline from a file and a name that got past the escaping could
still neither fetch nor run anything.

Every text that comes from a submission (folder names, messages, tracebacks, diagnoses that
quote its values) is escaped. A hidden case shows only its verdict and its likely bug unless
the instructor allows more (``grade --feedback-shows-hidden``): its call, message, failing
line and figure would tell the parameters the term's seed drew.

The grader keeps an ``Evidence`` per failed case while it grades (a few small arrays, cut
to ``MAX_POINTS`` or ``MAX_SIDE``), and writes the page with the submission's results.
"""

from __future__ import annotations

import base64
import html
import io
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from autograder.grading import printable

PAGE_NAME = "feedback.html"
#: A 1-d figure shows at most this many values (the first ones), a heat map this many per side:
#: more would not be readable on a phone, and the page of a class of 300 stays small.
MAX_POINTS = 160
MAX_SIDE = 48
#: Figures per test and per page: a test's first failed case shows what is wrong (its other
#: failed cases most often fail the same way), and a page of a submission that fails
#: everything costs one or two seconds of CPU to draw and stays under 250 KiB.
MAX_FIGURES_PER_TEST = 1
MAX_FIGURES_PER_PAGE = 8
DPI = 72
PALETTE = 96  # colours of a figure's PNG
#: Outputs compared in the order ``course_checks.compare`` checks them; ``initial_*`` (a
#: module's random initialisation) is checked by its range, not against torch's values.
_DRAWN_FIRST = ("output", "grad_input", "grad_weight", "grad_bias")
#: Nothing loads: no script, no font, no image other than the page's own data URIs.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
# matplotlib's figures are not safe to draw from several threads at once (its font cache);
# the grader writes pages from its pool's threads.
_DRAWING = threading.Lock()

_FRAME = re.compile(r'  File "<(?P<cell>.*)>", line (?P<line>\d+), in (?P<function>.*)')


@dataclass(frozen=True)
class FailingLine:
    """The last line of the student's own code that the error went through."""

    cell: str  # the cell's label, e.g. "cell 10 (def conv_transpose1d()"
    line: int
    function: str
    code: str  # the line's text, "" when the traceback does not show it


@dataclass
class Evidence:
    """What a failed case's entry shows besides its message: a figure's values, or why none."""

    key: str = ""  # the output drawn: output, grad_input, ...
    expected: Any = None  # numpy float64 arrays of one or two dimensions, or None
    got: Any = None
    view: str = ""  # which part of the output is drawn, when not all of it
    no_figure: str = ""  # why there is no figure
    failing_line: FailingLine | None = None


@dataclass
class TestFeedback:
    """One test cell as the page shows it: what it checks and its cases' results."""

    grade_id: str
    title: str
    problems: list[str] = field(default_factory=list)  # why it has no cases, if so
    cases: list[Any] = field(default_factory=list)  # grading.CaseResult, in the grader's order


@dataclass(frozen=True)
class SummaryEntry:
    """One notebook's line on the TA's index."""

    student: str
    assignment: str
    score: str  # "42" or "not graded"
    max_score: str
    page: str | None  # the page's path relative to the index, None when there is none
    notes: str  # why a TA should look, or ""


# --------------------------------------------------------------------------- evidence


def failing_line(traceback_text: str) -> FailingLine | None:
    """The last frame of the student's cells in a traceback as the sandbox's runner formats
    it (the last frame of any code of theirs, such as ``exec``'s ``<string>``, when no
    cell's frame is there)."""
    frames = []
    lines = str(traceback_text or "").splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("  "):
            if index == 0 and line.startswith("..."):
                continue  # the runner cut the traceback's start
            break  # the exception's own text, which the student's code chose: not a frame
        match = _FRAME.fullmatch(line)
        if match:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            shows_code = following.startswith("    ") and not _FRAME.fullmatch(following)
            frames.append(
                FailingLine(
                    match["cell"],
                    int(match["line"]),
                    match["function"],
                    following.strip() if shows_code else "",
                )
            )
    in_cells = [frame for frame in frames if frame.cell.startswith("cell ")]
    return (in_cells or frames or [None])[-1]


def evidence(expected: dict[str, Any], actual: Any, traceback_text: str = "") -> Evidence:
    """What the page can show of a failed case, from torch's outputs and the student's.

    ``actual`` is what ``course_checks.compare`` judged: a dict of outputs, or the
    exception the student's call raised. The output drawn is the first one, in the order
    ``compare`` checks them, whose values are out of tolerance. Never raises: a page is a
    courtesy, and must not cost a grade.
    """
    try:
        return _evidence(expected, actual, traceback_text)
    except Exception as error:
        return Evidence(no_figure=f"the grader could not prepare one ({type(error).__name__})")


def _evidence(expected: dict[str, Any], actual: Any, traceback_text: str) -> Evidence:
    import torch

    from autograder.course_checks import ForbiddenKernelError, _close

    line = failing_line(traceback_text)
    if isinstance(actual, ForbiddenKernelError):
        return Evidence(no_figure="a forbidden kernel was reached: there is no output to draw")
    if isinstance(actual, BaseException):
        return Evidence(no_figure="your code raised an error: there is no output to draw",
                        failing_line=line)  # fmt: skip
    if not expected:
        return Evidence(no_figure="torch raises an error here: there is no output to draw")
    if not isinstance(actual, dict):
        return Evidence(no_figure="no outputs came back")
    keys = [k for k in _DRAWN_FIRST if k in expected]
    keys += [k for k in expected if k not in keys and not k.startswith("initial_")]
    for key in keys:
        want, got = expected[key], actual.get(key)
        if type(want) is not torch.Tensor:
            continue
        if type(got) is not torch.Tensor:
            return Evidence(no_figure=f"no {key} tensor came back: there is nothing to draw")
        if tuple(got.shape) != tuple(want.shape):
            return Evidence(
                no_figure=f"{key} has shape {tuple(got.shape)} where torch's has "
                f"{tuple(want.shape)}: values of different shapes are not drawn side by side"
            )
        if want.numel() == 0 or _close(want, got, 1.0):
            continue
        if want.dim() == 0:
            return Evidence(no_figure=f"{key} is a single number (the message gives both)")
        return _drawn_part(key, want, got)
    return Evidence(
        no_figure="every output's values are within tolerance of torch's: the failure is "
        "elsewhere (the message says where: a dtype, the initialisation, a missing error)"
    )


def _drawn_part(key: str, want: Any, got: Any) -> Evidence:
    """The part of two same-shaped tensors that a figure shows, as small float64 arrays."""
    import torch

    shape = tuple(want.shape)
    want, got = want.detach(), got.detach()
    views = []
    if want.dim() >= 3:
        want, got = want[0, 0], got[0, 0]
        first = "sample and channel" if key in ("output", "grad_input") else "two indices"
        views.append(f"{key}[0, 0] of shape {shape}: the first {first}")
        if want.dim() > 2:
            views[-1] += ", and index 0 of each further dimension but the last two"
        while want.dim() > 2:
            want, got = want[0], got[0]
    want, got = want.to(torch.float64), got.to(torch.float64)
    if want.dim() == 1 and want.shape[0] > MAX_POINTS:
        want, got = want[:MAX_POINTS], got[:MAX_POINTS]
        views.append(f"its first {MAX_POINTS} values")
    if want.dim() == 2 and max(want.shape) > MAX_SIDE:
        want, got = want[:MAX_SIDE, :MAX_SIDE], got[:MAX_SIDE, :MAX_SIDE]
        views.append(f"its top-left {want.shape[0]} × {want.shape[1]} corner")
    return Evidence(key, want.numpy().copy(), got.numpy().copy(), "; ".join(views))


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Picture:
    """One PNG of a figure, with its size in pixels and what it shows."""

    png: bytes
    width: int
    height: int
    shows: str


#: Set once per figure rather than per axis afterwards: matplotlib then makes each tick
#: once (ticks are most of a small figure's cost). Few ticks: they are for orientation.
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.titley": 1.0,  # a fixed title position spares a layout pass per axis
}


def figure_pngs(found: Evidence) -> list[Picture]:
    """Expected, got and got − expected: for 1-d values one PNG of three stem plots, one
    above the other (they share the index axis); for 2-d values a heat map each, which the
    page sets side by side where they fit and one below the other on a phone."""
    import matplotlib
    import numpy as np

    expected, got = np.asarray(found.expected), np.asarray(found.got)
    panels = (
        ("torch's (expected)", expected),
        ("yours (got)", got),
        ("yours − torch's", got - expected),
    )
    with _DRAWING, matplotlib.rc_context(_STYLE):
        if expected.ndim == 1:
            return [_stems(panels)]
        low, high = _limits(np.concatenate([expected.ravel(), got.ravel()]))
        largest = max(abs(v) for v in _limits(panels[2][1])) or 1.0
        scales = [(low, high, "viridis")] * 2 + [(-largest, largest, "RdBu_r")]
        return [
            _heat_map(title, values, *scale)
            for (title, values), scale in zip(panels, scales, strict=True)
        ]


def _png(figure: Any, shows: str) -> Picture:
    """The figure drawn, as a PNG of ``PALETTE`` colours: a third of the bytes of a
    full-colour one, and a plot or a heat map looks the same."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    width, height = canvas.get_width_height()
    pixels = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buffer = io.BytesIO()
    pixels.convert("RGB").quantize(colors=PALETTE).save(buffer, format="PNG", optimize=True)
    return Picture(buffer.getvalue(), width, height, shows)


def _stems(panels: tuple) -> Picture:
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5.2, 4.6), dpi=DPI)
    axes = figure.subplots(3, 1, sharex=True)
    axes[1].sharey(axes[0])  # torch's values and yours on one scale
    positions = np.arange(panels[0][1].shape[0])
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.stem(positions, np.where(np.isfinite(values), values, 0.0), basefmt="k-")
        ax.set_title(title, loc="left")
        ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
        _mark_non_finite(ax, positions, values)
    axes[-1].xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    axes[-1].set_xlabel("index")
    figure.subplots_adjust(left=0.13, right=0.97, top=0.94, bottom=0.11, hspace=0.5)
    return _png(figure, "stem plots of torch's values, yours and their difference")


def _heat_map(title: str, values: Any, low: float, high: float, colours: str) -> Picture:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows, columns = values.shape
    figure = Figure(figsize=(3.3, 3.0), dpi=DPI)
    ax = figure.subplots()
    # Square cells unless the matrix is so long and thin that it would be a line.
    aspect = "equal" if max(rows, columns) <= 4 * min(rows, columns) else "auto"
    image = ax.imshow(values, cmap=colours, vmin=low, vmax=high, interpolation="nearest",
                      aspect=aspect)  # fmt: skip
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    bar = figure.colorbar(image, ax=ax, fraction=0.06, pad=0.04)
    bar.locator = MaxNLocator(nbins=4)
    figure.subplots_adjust(left=0.12, right=0.84, top=0.9, bottom=0.1)
    return _png(figure, f"a heat map of {title}")


def _limits(values: Any) -> tuple[float, float]:
    """The finite values' range (0, 0 when none is finite)."""
    import numpy as np

    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def _mark_non_finite(ax: Any, positions: Any, values: Any) -> None:
    """NaN and ±inf as red crosses on the axis: a stem cannot show them."""
    import numpy as np

    bad = ~np.isfinite(values)
    if bad.any():
        ax.plot(positions[bad], np.zeros(int(bad.sum())), "rx", label="NaN or inf")
        ax.legend(fontsize=8, loc="upper right")


# --------------------------------------------------------------------------- text


def _text(value: Any) -> str:
    """``value`` as HTML text: every character printable (a newline and a tab stay), escaped."""
    lines = str(value).split("\n")
    shown = "\n".join(
        printable(line.replace("\t", "    "), 1 << 20, unique=False) for line in lines
    )
    return html.escape(shown, quote=True)


def _message_body(result: Any) -> str:
    """The grader's message without the call it starts with and the likely bug it ends
    with (the entry shows both on their own)."""
    message = str(result.message)
    call = f"{result.description}: "
    if message.startswith(call):
        message = message[len(call) :]
    if result.diagnosis:
        message = message.replace(f"\n  likely bug: {result.diagnosis}", "")
    return message.strip("\n")


# --------------------------------------------------------------------------- the page


_CSS = """
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:62rem;padding:.75rem;color:#1b1b1b;background:#fff;overflow-wrap:anywhere}
h1{font-size:1.45rem;margin:.4rem 0}h2{font-size:1.2rem;margin:0}h3{font-size:1rem;margin:0}
.test{border:1px solid #c9c9c9;border-radius:6px;padding:.6rem .75rem;margin:1rem 0}
.test>header{display:flex;flex-wrap:wrap;gap:.25rem .75rem;align-items:baseline}
.case{border-top:1px solid #e2e2e2;padding:.5rem 0;margin-top:.5rem}
.passed{color:#0a6b2d;font-weight:600}.failed{color:#a3160b;font-weight:600}
pre{overflow-x:auto;white-space:pre;background:#f4f4f4;padding:.5rem;border-radius:4px;
font-size:.85rem;max-width:100%}
code{font-size:.9rem;background:#f4f4f4;padding:0 .2rem;border-radius:3px}
img{max-width:100%;height:auto;display:block}figure{margin:.5rem 0}
.pictures{display:flex;flex-wrap:wrap;gap:.25rem}
figcaption,.note{color:#4a4a4a;font-size:.9rem}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.92rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
td.number{text-align:right;white-space:nowrap}
"""


def _document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_POLICY}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"  # else the browser asks the server for /favicon.ico
        f"<title>{title}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


class _Figures:
    """How many figures a page still may draw, per test and in all."""

    def __init__(self) -> None:
        self.page = 0
        self.test = 0

    def allows(self) -> str:
        """Empty when one more figure may be drawn, else why not."""
        if self.page >= MAX_FIGURES_PER_PAGE:
            return f"this page draws {MAX_FIGURES_PER_PAGE} figures at most"
        if self.test >= MAX_FIGURES_PER_TEST:
            first = "case" if MAX_FIGURES_PER_TEST == 1 else f"{MAX_FIGURES_PER_TEST} cases"
            return f"a test draws the figure of its first failed {first} only"
        return ""

    def drawn(self) -> None:
        self.page += 1
        self.test += 1


def _figure_html(result: Any, figures: _Figures) -> str:
    import numpy as np

    found = result.evidence
    if found is None:
        return "<p class='note'>No figure: the case gave no output to compare.</p>"
    if found.no_figure:
        return f"<p class='note'>No figure: {_text(found.no_figure)}.</p>"
    if why := figures.allows():
        return f"<p class='note'>No figure: {why}.</p>"
    pictures = figure_pngs(found)
    figures.drawn()
    images = "".join(
        f"<img src='data:image/png;base64,{base64.b64encode(p.png).decode('ascii')}' "
        f"width='{p.width}' height='{p.height}' "
        f"alt='{_text(f'{found.key} of {result.description}: {p.shows}')}'>"
        for p in pictures
    )
    caption = f"{found.key}: torch's values, yours and the difference"
    caption += f" ({found.view})" if found.view else ""
    non_finite = int((~np.isfinite(np.asarray(found.got))).sum())
    if non_finite:
        caption += f"; yours holds {non_finite} NaN or infinite values (crosses, or blank cells)"
    return (
        f"<figure><div class='pictures'>{images}</div>"
        f"<figcaption>{_text(caption)}.</figcaption></figure>"
    )


def _failing_line_html(found: Evidence | None) -> str:
    line = found.failing_line if found else None
    if line is None:
        return ""
    code = f"<pre>{_text(line.code)}</pre>" if line.code else ""
    return (
        f"<p>Your line: {_text(line.cell)}, line {line.line}, in "
        f"<code>{_text(line.function)}</code></p>{code}"
    )


def _failed_case_html(result: Any, name: str, shows_hidden: bool, figures: _Figures) -> str:
    """A failed case: its call, message, likely bug, the student's line and a figure; of a
    hidden case (unless the instructor allows more) its likely bug only."""
    head = f"<div class='case'><h3>{name}: <span class='failed'>failed</span></h3>"
    bug = f"<p>Likely bug: {_text(result.diagnosis)}</p>" if result.diagnosis else ""
    if result.hidden and not shows_hidden:
        return (
            f"{head}{bug}<p class='note'>Its call, message and figure are not shown: the "
            "parameters of the hidden cases stay hidden.</p></div>"
        )
    body = _message_body(result)
    return (
        f"{head}<p><code>{_text(result.description)}</code></p>"
        + (f"<pre>{_text(body)}</pre>" if body else "")
        + bug
        + _failing_line_html(result.evidence)
        + _figure_html(result, figures)
        + "</div>"
    )


def _passed_html(passed: list[tuple[str, Any]], total: int, shows_hidden: bool) -> str:
    """The cases that passed, folded: a line each (a hidden one by its number unless the
    instructor allows its call)."""
    if not passed:
        return ""
    items = "".join(
        f"<li>{name}"
        + ("" if r.hidden and not shows_hidden else f": <code>{_text(r.description)}</code>")
        + "</li>"
        for name, r in passed
    )
    return (
        f"<details><summary><span class='passed'>{len(passed)} of {total} cases passed"
        f"</span></summary><ul>{items}</ul></details>"
    )


def _test_html(entry: dict[str, Any], test: TestFeedback | None, shows_hidden: bool,
               figures: _Figures) -> str:  # fmt: skip
    status = "passed" if entry.get("status") == "passed" else "failed"
    score = f"{_number(entry.get('score'))} / {_number(entry.get('max_score'))} points"
    parts = [
        f"<section class='test'><header><h2>{_text(entry.get('name', ''))}</h2>"
        f"<span class='{status}'>{status}</span><span>{score}</span></header>"
    ]
    if test is None:  # a page from results.json alone: the grader's text, as it wrote it
        output = str(entry.get("output", ""))
        hidden = (entry.get("extra_data") or {}).get("hidden_cases") if shows_hidden else None
        if isinstance(hidden, list) and hidden:
            output += "\n\nHidden cases:\n" + "\n".join(map(str, hidden))
        return parts[0] + f"<pre>{_text(output)}</pre></section>"
    figures.test = 0
    if test.title:
        parts.append(f"<p>Checks: {_text(test.title)}</p>")
    parts += [f"<p class='failed'>{_text(problem)}</p>" for problem in test.problems]
    hidden_total = sum(bool(r.hidden) for r in test.cases)
    public = hidden = 0
    passed = []
    for result in test.cases:
        if result.hidden:
            hidden += 1
            name = f"Hidden case {hidden} of {hidden_total}"
        else:
            public += 1
            name = f"Case {public}"
        if result.passed:
            passed.append((name, result))
        else:
            parts.append(_failed_case_html(result, name, shows_hidden, figures))
    parts.append(_passed_html(passed, len(test.cases), shows_hidden))
    return "".join(parts) + "</section>"


def _number(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return "?"


def page_for(
    results: dict[str, Any], tests: list[TestFeedback] | None, shows_hidden: bool = False
) -> str:
    """``render_page``, or when drawing fails the page from ``results.json`` alone (a page
    never costs a grade, nor the batch)."""
    try:
        return render_page(results, tests, shows_hidden)
    except Exception:
        pass
    try:
        return render_page(results, None, shows_hidden)
    except Exception as error:  # results.json of an earlier run, not as this grader writes it
        why = _text(f"the feedback page could not be made ({type(error).__name__})")
        return _document("Feedback", f"<p>{why}: see results.json.</p>")


def render_page(
    results: dict[str, Any], tests: list[TestFeedback] | None, shows_hidden: bool = False
) -> str:
    """One submission's page, from its ``results.json`` and what the grader kept of its
    cases (``tests``; None: from ``results.json`` alone, without figures)."""
    extra = results.get("extra_data") if isinstance(results.get("extra_data"), dict) else {}
    student = _text(extra.get("student") or "")
    assignment = _text(extra.get("assignment") or "")
    if extra.get("not_graded"):
        score = "not graded"
    else:
        score = f"{_number(results.get('score'))} / {_number(extra.get('max_score'))} points"
    title = f"Feedback: {assignment or 'not graded'}, {student}"
    entries = [entry for entry in results.get("tests") or [] if isinstance(entry, dict)]
    rule = " A test scores its points only when all its cases pass." if entries else ""
    body = [
        f"<h1>{title}</h1>",
        f"<p><strong>{score}</strong>. Notebook <code>{_text(extra.get('notebook', ''))}</code>."
        f"{rule}</p>",
    ]
    by_id = {test.grade_id: test for test in tests or []}
    figures = _Figures()
    for entry in entries:
        test = by_id.get(str(entry.get("name"))) if tests is not None else None
        body.append(_test_html(entry, test, shows_hidden, figures))
    # Without tests (not graded, not run) the report is all there is to say: open.
    body.append(
        f"<details{'' if entries else ' open'}><summary>The grader's report</summary>"
        f"<pre>{_text(results.get('output', ''))}</pre></details>"
    )
    return _document(title, "".join(body))


# --------------------------------------------------------------------------- the index


def summary_page(entries: list[SummaryEntry], title: str = "Feedback pages") -> str:
    """The TA's index: every notebook's score, a link to its page, and what needs a look."""
    rows = []
    for entry in entries:
        if entry.page is not None:
            link = f"<a href='{html.escape(quote(entry.page), quote=True)}'>feedback</a>"
        else:
            link = "<span class='note'>no page</span>"
        rows.append(
            f"<tr><td>{_text(entry.student)}</td><td>{_text(entry.assignment)}</td>"
            f"<td class='number'>{_text(entry.score)}</td>"
            f"<td class='number'>{_text(entry.max_score)}</td>"
            f"<td>{link}</td><td>{_text(entry.notes)}</td></tr>"
        )
    with_pages = sum(entry.page is not None for entry in entries)
    table = (
        "<div class='scroll'><table><thead><tr><th>student</th><th>assignment</th>"
        "<th>score</th><th>out of</th><th>page</th><th>needs a look</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    body = (
        f"<h1>{_text(title)}</h1><p>{len(entries)} notebooks, {with_pages} with a feedback "
        "page (written when a notebook is graded).</p>" + table
    )
    return _document(_text(title), body)
