"""A static scan of the student's code for the forbidden kernels: a second signal, never a score.

The dispatcher guard in ``course_checks.run_student`` decides the points: it sees what a
graded call actually reached, by any route. This scan reads the source (``ast``) and
reports names that suggest a forbidden route, e.g. ``F.conv_transpose1d`` used for a
debugging cell, so that a TA sees them. A hit alone costs no point: a student may mention
``interpolate`` in a comparison cell, or define their own function called ``interpolate``.

Names can be hidden from a reading of the source (built from pieces, imported by a computed
name, or code cloned at run time): such constructions are findings of their own, with
``severity == "review"``, since an honest answer needs none of them.

Some routes the in-process guard cannot close: native code (``ctypes``, ``cffi``, a compiled
extension, ``torch.utils.cpp_extension``, ``torch.ops.load_library``) can call torch's C++
kernels, or undo the guard's Python hooks, without passing through Python. Their findings
have ``severity == "review"``: the report puts such a submission under "needs a look"
(``needs_review``), whatever its score.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

#: Substrings of attribute or imported names, and why each is suspicious.
SUSPICIOUS: dict[str, str] = {
    "conv_transpose": "torch's transposed convolution",
    "ConvTranspose": "torch's transposed convolution module",
    "convolution_backward": "convolution backward",
    "_convolution": "torch's generic convolution (can be transposed)",
    "interpolate": "torch's interpolation",
    "upsample": "torch's upsampling",
    "Upsample": "torch's upsampling module",
    "grid_sample": "grid sampling",
    "affine_grid": "grid sampling",
    "grid_sampler": "grid sampling",
    "_python_dispatch": "torch's dispatcher internals (may switch the kernel guard off)",
    "TorchDispatchMode": "torch's dispatcher internals (may switch the kernel guard off)",
    "_DisableTorchDispatch": "torch's dispatcher internals (may switch the kernel guard off)",
    "autograd.grad": "autograd (convolution backward used as a forward?)",
    "torch.ops.aten": "a raw aten operator",
    "_decomp": "torch's Python decompositions (of upsampling or convolution backward?)",
    "_refs": "torch's Python reference implementations",
    "course_checks": "the grader's checks module",
    "__code__": "code-object patching",
    "sys.modules": "module patching",
}

#: Substrings of names that reach native code, which the guard cannot watch: a TA looks.
NEEDS_REVIEW: dict[str, str] = {
    "ctypes": "native code through ctypes (can call torch's kernels past the guard)",
    "cffi": "native code through cffi (can call torch's kernels past the guard)",
    "cpp_extension": "a compiled torch extension (native code past the guard)",
    "load_inline": "a compiled torch extension (native code past the guard)",
    "load_library": "a native library loaded into torch (native code past the guard)",
    "_thread": "raw threads (the guard's hook does not follow them)",
    "pythonapi": "CPython's C API through ctypes (can take the guard's hooks off)",
    # What reaches the grader's own state (its frames, their globals, the heap), from which
    # a cell can rebind what the runner calls next: an answer needs none of them.
    "_current_frames": "other threads' frames (the grader's runner?)",
    "f_globals": "a frame's globals (the grader's module?)",
    "f_locals": "a frame's locals (the grader's cases?)",
    "f_back": "the calling frames (the grader's?)",
    "tb_frame": "a traceback's frames (the grader's?)",
    "__globals__": "a function's globals (the grader's module?)",
    "get_referrers": "the heap, through the garbage collector (the grader's objects?)",
    "get_referents": "the heap, through the garbage collector (the grader's objects?)",
    "get_objects": "the heap, through the garbage collector (the grader's objects?)",
    # What a cell needs to play the runner's part (say cells-done, take the cases' pipe):
    "recv_fds": "file descriptors taken from a socket (the grader's channel for the cases?)",
    "socket": "a socket (the grader's channel for the cases?)",
    "fcntl": "raw file-descriptor control (the grader's pipes?)",
    "fstat": "raw file descriptors (the grader's pipes?)",
}

#: Calls that make code or reach a name at run time: what hides a route from this scan (a
#: module imported by a computed name, a function cloned from torch's own). Honest answers
#: to these assignments need none of them; the TA looks at the submission.
RUNTIME_CODE: dict[str, str] = {
    "compile": "code compiled at run time",
    "exec": "code run from a string",
    "eval": "code run from a string",
    "CodeType": "a code object made at run time",
    "FunctionType": "a function made from a code object",
    "marshal.loads": "code loaded from bytes",
}
#: Calls whose name argument, when it is not written out, hides what they reach
#: (the argument's position).
COMPUTED_NAME: dict[str, int] = {
    "__import__": 0,
    "import_module": 0,
    "getattr": 1,
    "setattr": 1,
    "delattr": 1,
}

#: Names the student is asked to define: a function of that name is their own, not torch's.
STUDENT_NAMES = {"interpolate", "conv_transpose1d", "conv_transpose2d", "ConvTranspose1d"}


@dataclass(frozen=True)
class Finding:
    """One suspicious name in the student's code; ``severity`` is ``"warning"``, or
    ``"review"`` for a route the guard cannot watch (the submission needs a look)."""

    cell: str
    line: int
    name: str
    why: str
    severity: str = "warning"

    def __str__(self) -> str:
        flag = " [needs a look]" if self.severity == "review" else ""
        return f"{self.cell}, line {self.line}: `{self.name}` ({self.why}){flag}"


def needs_review(findings: list[Finding]) -> bool:
    """Whether any finding is a route the guard cannot watch (list the submission under
    "needs a look")."""
    return any(f.severity == "review" for f in findings)


def _dotted(node: ast.AST) -> str | None:
    """``torch.nn.functional.conv_transpose1d`` for an attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _why(name: str) -> tuple[str, str] | None:
    """Why ``name`` is suspicious, and the finding's severity."""
    for needle, why in NEEDS_REVIEW.items():
        if needle in name:
            return why, "review"
    for needle, why in SUSPICIOUS.items():
        if needle in name:
            return why, "warning"
    return None


def _folded(node: ast.AST) -> str | None:
    """The string a chain of ``"a" + "b" + ...`` of literals spells (None: not one)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _folded(node.left), _folded(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def _runtime_code(node: ast.Call) -> tuple[str, str] | None:
    """(name, why) when a call makes code, rewrites a code object, or reaches a module
    or an attribute by a name that is not written out."""
    name = _dotted(node.func) or getattr(node.func, "attr", "")
    last = name.rsplit(".", 1)[-1]
    if name in RUNTIME_CODE or last in RUNTIME_CODE:
        return name, RUNTIME_CODE.get(name, RUNTIME_CODE.get(last))
    if last == "replace" and any((k.arg or "").startswith("co_") for k in node.keywords):
        return f"{name}(co_...)", "a code object rewritten (its file or name changed)"
    position = COMPUTED_NAME.get(last)
    if position is not None and len(node.args) > position:
        argument = node.args[position]
        if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
            return name, "a module or attribute reached by a computed name"
    return None


def scan_source(source: str, cell: str) -> list[Finding]:
    """Findings in one cell's source (a cell that does not parse has none: it is reported
    as an error elsewhere)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    findings: list[Finding] = []
    seen: set[tuple[int, str]] = set()

    def add(line: int, name: str) -> None:
        verdict = _why(name)
        if verdict and (line, name) not in seen:
            seen.add((line, name))
            findings.append(Finding(cell, line, name, *verdict))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (found := _runtime_code(node)):
            if (node.lineno, found[0]) not in seen:
                seen.add((node.lineno, found[0]))
                findings.append(Finding(cell, node.lineno, found[0], found[1], "review"))
        if isinstance(node, ast.BinOp) and (joined := _folded(node)) and (verdict := _why(joined)):
            if (node.lineno, joined) not in seen:  # "so" + "cket": a name built from pieces
                seen.add((node.lineno, joined))
                why = f"a name built from pieces: {verdict[0]}"
                findings.append(Finding(cell, node.lineno, joined, why, "review"))
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted is not None and not isinstance(getattr(node, "ctx", None), ast.Store):
                add(node.lineno, dotted)
            elif dotted is None:
                add(node.lineno, node.attr)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                add(node.lineno, f"{module}.{alias.name}" if module else alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                add(node.lineno, alias.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # getattr(F, "conv_" + "transpose1d") escapes this; the dispatcher does not.
            if _why(node.value) and len(node.value) < 80 and " " not in node.value:
                add(node.lineno, node.value)
        elif isinstance(node, ast.Name) and node.id not in STUDENT_NAMES:
            if isinstance(node.ctx, ast.Load):
                add(node.lineno, node.id)
    # Attribute chains are walked link by link: keep the longest name on each line.
    findings = [
        f
        for f in findings
        if not any(
            g is not f and g.line == f.line and g.name != f.name and f.name in g.name
            for g in findings
        )
    ]
    return sorted(findings, key=lambda f: (f.line, f.name))


def scan_cells(cells) -> list[Finding]:
    """Findings over the student's code cells (``notebook.CodeCell``s), in order."""
    found: list[Finding] = []
    for cell in cells:
        found.extend(scan_source(cell.source, cell.label))
    return found
