"""The course's checks: the graded cases, how an answer is run, and how it is compared with torch.

One piece of code for one job. This file is used in three places:

* the notebooks' visible checks: ``solutions/<assignment>/course_checks.py`` is a
  symlink to this file, so ``nbgrader generate_assignment`` copies it into
  ``exercises/<assignment>/`` and a student runs ``check("ct1d_stride", conv_transpose1d)``
  with nothing but the release and ``requirements.txt``;
* the notebooks' hidden tests (``autograder.hidden_cases``), which draw more cases;
* the CI grader (``python -m autograder grade``), which runs the student's code in a
  sandbox and compares here, in the trusted process.

It therefore depends on torch alone and holds no hidden case and no answer.

STATUS: API contract, being implemented (see the docstrings for what each promises).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Case:
    """One graded call: which student object, with which parameters.

    ``grade_id``  the nbgrader test cell it belongs to (``ct1d_stride``).
    ``target``    the name the student's notebook defines (``conv_transpose1d``,
                  ``output_length``, ``conv1d_matrix``, ``ConvTranspose1d``,
                  ``conv_transpose2d``, ``coverage_map``, ``interpolate``, ``ResizeConv2d``).
    ``params``    JSON-able description: tensor shapes, dtype name, keyword arguments.
    ``seed``      the seed its input tensors are drawn from.
    """

    grade_id: str
    target: str
    params: dict[str, Any] = field(hash=False)
    seed: int = 0

    def describe(self) -> str:
        """A one-line human description: the call, with shapes and keyword arguments."""
        raise NotImplementedError


@dataclass
class Verdict:
    """The outcome of one case: passed or not, and a message a TA can read without rerunning."""

    passed: bool
    message: str
    diagnosis: str | None = None  # the likely bug, when a known mistake explains the output


class ForbiddenKernelError(RuntimeError):
    """Raised at torch's dispatcher when a graded call reaches a forbidden kernel."""

    def __init__(self, kernel: str):
        super().__init__(
            f"your code reached torch's own kernel {kernel!r}, which this exercise asks you "
            "to write yourself (transposed convolution, convolution backward, "
            "upsampling/interpolation and grid sampling are not allowed)"
        )
        self.kernel = kernel


#: The public cases of every grade_id: a few small, fixed cases a student sees.
PUBLIC_CASES: dict[str, list[Case]] = {}


def make_inputs(case: Case) -> dict[str, torch.Tensor]:
    """The input tensors of ``case``, drawn from ``case.seed``; the same on every machine."""
    raise NotImplementedError


def reference_outputs(case: Case, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What torch gives for ``case`` (outputs, and gradients where the case asks for them).

    Works on its own copies of ``inputs``. When torch raises for these parameters, returns
    ``{}`` and the case expects the student to raise too.
    """
    raise NotImplementedError


def run_student(case: Case, implementation: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Call the student's ``implementation`` on copies of ``inputs``, under the kernel guard.

    Returns the same keys as ``reference_outputs``. Raises ``ForbiddenKernelError`` when the
    call reaches a forbidden kernel, and lets the student's own exceptions through.
    """
    raise NotImplementedError


def compare(case: Case, inputs: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
            actual: dict[str, Any]) -> Verdict:
    """Compare the student's ``actual`` outputs with torch's ``expected`` ones.

    Requires plain ``torch.Tensor`` values of the exact shape and dtype, finite, and close
    to the reference (tolerance by dtype). On failure the message names the parameters,
    the expected and actual shape, the largest error, and the likely bug when one of the
    known mistakes reproduces the output.
    """
    raise NotImplementedError


def check(grade_id: str, implementation: Any) -> None:
    """The visible check a student runs: every public case of ``grade_id``.

    Prints one line per passing case; raises ``AssertionError`` with the first failure's
    message.
    """
    raise NotImplementedError
