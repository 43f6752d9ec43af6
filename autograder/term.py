"""The term: one hidden-case seed per assignment, kept in the instructor's repository.

Every run, shard and regrade of a term draws the same hidden cases, so the same notebook
always gets the same score. The seeds live in ``autograder/term.json`` (this repository is
the instructor's and never ships; ``exercises/`` holds no seed). A result records the term
and a fingerprint of its seed, never the seed itself. A new term is one command::

    python -m autograder new-term 2027-spring
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

TERM_FILE = Path(__file__).with_name("term.json")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TermError(ValueError):
    """The term file is missing, unreadable or lacks an assignment (the message says which)."""


@dataclass(frozen=True)
class Term:
    name: str
    seeds: dict[str, int]

    def seed(self, assignment: str) -> int:
        if assignment not in self.seeds:
            raise TermError(
                f"{TERM_FILE.name} has no seed for {assignment!r}: run "
                "`python -m autograder new-term NAME` (a new term) to make seeds for every "
                "assignment"
            )
        return self.seeds[assignment]


def fingerprint(seed: int) -> str:
    """What a result says of its seed: equal seeds give equal fingerprints, and the seed
    cannot be read back from it."""
    return hashlib.sha256(f"autograder-seed:{seed}".encode()).hexdigest()[:16]


def load(path: Path = TERM_FILE) -> Term:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        seeds = {str(k): int(v) for k, v in data["seeds"].items()}
        return Term(str(data["term"]), seeds)
    except FileNotFoundError as error:
        raise TermError(
            f"{path}: no term file; make one with `python -m autograder new-term NAME`"
        ) from error
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise TermError(f"{path}: not a term file ({error})") from error


def new_term(name: str, assignments: list[str], path: Path = TERM_FILE) -> Term:
    """Write a term with a fresh secret seed for each assignment (and return it)."""
    if not _NAME.match(name):
        raise TermError(f"{name!r}: a term's name is letters, digits, '.', '_' or '-'")
    term = Term(name, {assignment: secrets.randbits(62) for assignment in sorted(assignments)})
    body = {"term": term.name, "seeds": term.seeds}
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return term
