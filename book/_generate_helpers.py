"""Write each chapter's folded helper cell from ``book/plotting.py``, the helpers' one home.

A chapter downloaded as a notebook runs outside the repository, where ``import plotting``
fails; so every chapter that uses a helper defines it in a cell tagged ``hide-cell``
(folded on the site) before its first code cell. This script writes that cell: the
helpers the chapter names, the helpers they call, and the imports they need, copied from
``plotting.py``. Run it after editing ``plotting.py``::

    .venv/bin/python book/_generate_helpers.py          # rewrite the chapters
    .venv/bin/python book/_generate_helpers.py --check  # exit 1 if one is out of date
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parent
PLOTTING = BOOK / "plotting.py"
MARKER = "# Generated from book/plotting.py by book/_generate_helpers.py: edit them there."
CELL_OPENING = "```{code-cell} ipython3\n:tags: [hide-cell]\n\n"
HELPER_CELL = re.compile(re.escape(CELL_OPENING + MARKER) + r"\n.*?\n```\n\n", re.S)
FIRST_CODE_CELL = re.compile(r"^```\{code-cell\}", re.M)


def _definitions(tree: ast.Module) -> dict[str, ast.stmt]:
    """plotting.py's top-level functions and constants, by name."""
    found: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return found


def _names_in(node: ast.AST) -> set[str]:
    return {child.id for child in ast.walk(node) if isinstance(child, ast.Name)}


def _needed(used: set[str], definitions: dict[str, ast.stmt]) -> set[str]:
    """The helpers named in ``used`` and, transitively, every helper they refer to."""
    needed, pending = set(), [name for name in used if name in definitions]
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(n for n in _names_in(definitions[name]) if n in definitions)
    return needed


def _source_with_comments(lines: list[str], node: ast.stmt) -> str:
    """A statement's source lines, with the ``#`` comment lines just above it."""
    start = node.lineno - 1
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    return "\n".join(lines[start : node.end_lineno])


def helper_cell_source(used: set[str]) -> str:
    """The helper cell's code for a chapter whose own code names ``used``; '' if it needs none."""
    source = PLOTTING.read_text(encoding="utf-8")
    tree, lines = ast.parse(source), source.splitlines()
    definitions = _definitions(tree)
    needed = _needed(used, definitions)
    if not needed:
        return ""
    blocks = [definitions[name] for name in definitions if name in needed]
    blocks = list(dict.fromkeys(blocks))  # a statement binding two names appears once
    referenced = set().union(*(_names_in(block) for block in blocks))
    referenced |= {
        child.value.id
        for block in blocks
        for child in ast.walk(block)
        if isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name)
    }
    imports = [
        ast.get_source_segment(source, node)
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any((alias.asname or alias.name).split(".")[0] in referenced for alias in node.names)
    ]
    code = [_source_with_comments(lines, block) for block in blocks]
    return "\n".join([MARKER, *imports, "", "", "\n\n\n".join(code)])


def chapter_code_names(text: str) -> set[str]:
    """The identifiers a chapter's own code cells use (its helper cell left out)."""
    body = HELPER_CELL.sub("", text)
    cells = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```$", body, flags=re.S | re.M)
    return set(re.findall(r"[A-Za-z_]\w*", "\n".join(cells)))


def with_helper_cell(text: str) -> str:
    """A chapter's text with its helper cell as plotting.py makes it today."""
    body = HELPER_CELL.sub("", text)
    code = helper_cell_source(chapter_code_names(body))
    if not code:
        return body
    first = FIRST_CODE_CELL.search(body)
    if first is None:
        return body
    cell = f"{CELL_OPENING}{code}\n```\n\n"
    return body[: first.start()] + cell + body[first.start() :]


def chapters() -> list[Path]:
    return sorted(BOOK.glob("0*.md"))


def main(argv: list[str]) -> int:
    stale = []
    for chapter in chapters():
        text = chapter.read_text(encoding="utf-8")
        wanted = with_helper_cell(text)
        if wanted != text:
            stale.append(chapter.name)
            if "--check" not in argv:
                chapter.write_text(wanted, encoding="utf-8")
    verb = "out of date" if "--check" in argv else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "every helper cell is up to date")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
