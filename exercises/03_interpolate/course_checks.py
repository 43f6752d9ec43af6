"""The course's checks: the graded cases, how an answer is run, and how it is compared with torch.

One piece of code for one job. This file is used in three places:

* the notebooks' visible checks: ``solutions/<assignment>/course_checks.py`` is a
  symlink to this file, so ``nbgrader generate_assignment`` copies it into
  ``exercises/<assignment>/`` and a student runs ``check("ct1d_stride", conv_transpose1d)``
  with nothing but the release and ``requirements.txt``;
* the notebooks' hidden tests (``autograder.hidden_cases``), which draw more cases;
* the CI grader (``python -m autograder grade``), which runs the student's code in a
  sandbox and compares here, in the trusted process.

It therefore depends on torch alone and holds no hidden case and no answer: every
reference is a call to torch's own function.

The API, in the order a grader uses it::

    case = PUBLIC_CASES["ct1d_stride"][0]           # or hidden_cases.hidden_cases(id, seed)
    inputs = make_inputs(case)                      # tensors drawn from case.seed
    expected = reference_outputs(case, inputs)      # torch's answer ({} when torch raises)
    actual = run_student(case, conv_transpose1d, inputs)   # in the sandbox, under the guard
    verdict = compare(case, inputs, expected, actual)      # Verdict(passed, message, diagnosis)

``grade_case(case, implementation)`` does the four steps in one process, and
``check(grade_id, implementation)`` runs every public case of a grade_id (the notebooks'
visible tests). ``python course_checks.py NOTEBOOK.ipynb`` runs a notebook's visible
checks from a terminal.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
import sysconfig
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack

# Bound once at import: the comparison reads values through these, not through anything a
# submission may have patched later on torch.Tensor.
_TOLIST = torch.Tensor.tolist
_DETACH = torch.Tensor.detach
_CPU = torch.Tensor.cpu

# --------------------------------------------------------------------------------------
# Grade ids
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradeId:
    """One autograded test cell: its assignment, the object it tests and its points."""

    assignment: str
    target: str
    points: int
    summary: str


def _grade_ids() -> dict[str, GradeId]:
    ct1 = "01_conv_transpose1d"
    ct2 = "02_conv_transpose2d"
    itp = "03_interpolate"
    table = [
        ("ct1d_output_length", ct1, "output_length", 10, "output_length follows torch's size rule"),
        ("ct1d_matrix", ct1, "conv1d_matrix", 10, "conv1d_matrix is the matrix of F.conv1d"),
        ("ct1d_basic", ct1, "conv_transpose1d", 10, "one channel, no stride"),
        ("ct1d_channels_batch", ct1, "conv_transpose1d", 10, "several channels and samples"),
        ("ct1d_unbatched", ct1, "conv_transpose1d", 5, "unbatched input (C, W)"),
        ("ct1d_stride", ct1, "conv_transpose1d", 10, "stride > 1"),
        ("ct1d_padding", ct1, "conv_transpose1d", 5, "padding crops the output"),
        ("ct1d_output_padding", ct1, "conv_transpose1d", 5, "output_padding, and raising"),
        ("ct1d_dilation", ct1, "conv_transpose1d", 5, "dilation"),
        ("ct1d_groups", ct1, "conv_transpose1d", 5, "groups"),
        ("ct1d_bias", ct1, "conv_transpose1d", 5, "bias or None"),
        ("ct1d_dtypes", ct1, "conv_transpose1d", 5, "float32 and float64"),
        ("ct1d_gradients", ct1, "conv_transpose1d", 5, "gradients of input, weight, bias"),
        ("ct1d_module", ct1, "ConvTranspose1d", 10, "the nn.Module"),
        ("ct2d_basic", ct2, "conv_transpose2d", 10, "one channel, no stride"),
        ("ct2d_channels_batch", ct2, "conv_transpose2d", 10, "several channels and samples"),
        ("ct2d_unbatched", ct2, "conv_transpose2d", 5, "unbatched input (C, H, W)"),
        ("ct2d_stride", ct2, "conv_transpose2d", 10, "stride, int and tuple"),
        ("ct2d_padding", ct2, "conv_transpose2d", 10, "padding crops the output"),
        ("ct2d_output_padding", ct2, "conv_transpose2d", 5, "output_padding, and raising"),
        ("ct2d_dilation", ct2, "conv_transpose2d", 10, "dilation"),
        ("ct2d_groups", ct2, "conv_transpose2d", 10, "groups"),
        ("ct2d_bias", ct2, "conv_transpose2d", 5, "bias or None"),
        ("ct2d_dtypes", ct2, "conv_transpose2d", 5, "float32 and float64"),
        ("ct2d_gradients", ct2, "conv_transpose2d", 5, "gradients of input, weight, bias"),
        ("ct2d_coverage_map", ct2, "coverage_map", 15, "how many kernel taps reach each pixel"),
        ("interp_nearest_size", itp, "interpolate", 10, "mode='nearest' with size"),
        ("interp_nearest_scale", itp, "interpolate", 10, "mode='nearest' with scale_factor"),
        ("interp_linear", itp, "interpolate", 10, "mode='linear' (1-d)"),
        ("interp_bilinear_size", itp, "interpolate", 10, "mode='bilinear' with size"),
        ("interp_bilinear_scale", itp, "interpolate", 10, "mode='bilinear' with scale_factor"),
        ("interp_align_corners", itp, "interpolate", 10, "align_corners=True"),
        ("interp_recompute_scale_factor", itp, "interpolate", 5, "recompute_scale_factor"),
        ("interp_dtypes", itp, "interpolate", 5, "float32/float64, non-square sizes"),
        ("interp_gradients", itp, "interpolate", 10, "gradient of the input"),
        ("interp_resize_conv", itp, "ResizeConv2d", 10, "interpolation then Conv2d"),
        ("interp_bicubic", itp, "interpolate", 5, "mode='bicubic'"),
        ("interp_nearest_exact", itp, "interpolate", 5, "mode='nearest-exact'"),
    ]
    return {gid: GradeId(a, t, pts, s) for gid, a, t, pts, s in table}


#: Every autograded test cell of the three assignments, by nbgrader grade_id.
GRADE_IDS: dict[str, GradeId] = _grade_ids()

#: The hand-graded written questions (markdown answers), by grade_id: (assignment, points).
MANUAL_GRADE_IDS: dict[str, tuple[str, int]] = {
    "ct1d_why_flipped": ("01_conv_transpose1d", 5),
    "ct2d_even_coverage": ("02_conv_transpose2d", 5),
}

_CONV_TARGETS = ("conv_transpose1d", "conv_transpose2d")
_CONV_KWARGS = ("stride", "padding", "output_padding", "groups", "dilation")

# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """Python-looking text for a parameter (lists from JSON shown as tuples)."""
    if isinstance(value, list | tuple):
        inner = ", ".join(_fmt(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, str):
        return repr(value)
    return repr(value)


def _shape(shape: Any) -> str:
    return "(" + ", ".join(str(int(n)) for n in shape) + ("," if len(shape) == 1 else "") + ")"


@dataclass(frozen=True)
class Case:
    """One graded call: which student object, with which parameters.

    ``grade_id``  the nbgrader test cell it belongs to (``ct1d_stride``).
    ``target``    the name the student's notebook defines (``conv_transpose1d``,
                  ``output_length``, ``conv1d_matrix``, ``ConvTranspose1d``,
                  ``conv_transpose2d``, ``coverage_map``, ``interpolate``, ``ResizeConv2d``).
    ``params``    JSON-able description: tensor shapes, dtype name, keyword arguments.
    ``seed``      the seed its input tensors are drawn from.

    ``params`` by target (optional keys in brackets):

    * conv_transpose1d/2d: ``input``, ``weight`` (shapes), ``bias`` (True: a bias tensor,
      False: none), [``bias_none``: pass ``bias=None`` explicitly], ``kwargs`` (stride, ...),
      [``positional``: pass every argument positionally], ``dtype``, [``grad``: also check
      the gradients], [``ints``: integer-valued inputs], [``values``: explicit tensors],
      [``note``].
    * output_length: ``args`` (L, kernel_size, and the keyword arguments).
    * conv1d_matrix: ``kernel_length``, ``input_length``, ``dtype``, [``values``].
    * ConvTranspose1d: ``init`` (the constructor's arguments), ``input``, ``dtype``, [``grad``],
      [``output_size``: also passed to ``forward``, as torch's ``output_size`` argument].
    * coverage_map: ``kernel_size``, ``stride``, ``input_size`` (int or pair).
    * interpolate: ``input``, ``kwargs``, ``dtype``, [``grad``], [``values``].
    * ResizeConv2d: ``init`` ([in_channels, out_channels]), ``input``, ``dtype``.
    """

    grade_id: str
    target: str
    params: dict[str, Any] = field(hash=False)
    seed: int = 0

    def describe(self) -> str:
        """A one-line human description: the call, with shapes and keyword arguments."""
        p = self.params
        dtype = p.get("dtype", "float32")
        dtype_note = "" if dtype == "float32" else f" {dtype}"
        if self.target == "output_length":
            args = dict(p["args"])
            head = [_fmt(args.pop("L")), _fmt(args.pop("kernel_size"))]
            text = f"output_length({', '.join(head + [f'{k}={_fmt(v)}' for k, v in args.items()])})"
        elif self.target == "conv1d_matrix":
            text = (
                f"conv1d_matrix(kernel {_shape([p['kernel_length']])}{dtype_note}, "
                f"{p['input_length']})"
            )
        elif self.target in _CONV_TARGETS:
            parts = [f"input {_shape(p['input'])}{dtype_note}", f"weight {_shape(p['weight'])}"]
            if p.get("bias"):
                parts.append(f"bias {_shape([p['weight'][1] * p['kwargs'].get('groups', 1)])}")
            elif p.get("bias_none") or p.get("positional"):
                parts.append("bias=None")
            parts += [f"{k}={_fmt(v)}" for k, v in p["kwargs"].items()]
            text = f"{self.target}({', '.join(parts)})"
            if p.get("positional"):
                text += " [all arguments positional]"
        elif self.target == "ConvTranspose1d":
            init = dict(p["init"])
            head = [str(init.pop(k)) for k in ("in_channels", "out_channels", "kernel_size")]
            args = head + [f"{k}={_fmt(v)}" for k, v in init.items()]
            call = f"input {_shape(p['input'])}{dtype_note}"
            if "output_size" in p:
                call += f", output_size={list(p['output_size'])}"
            text = f"ConvTranspose1d({', '.join(args)})({call})"
        elif self.target == "coverage_map":
            text = (
                f"coverage_map(kernel_size={_fmt(p['kernel_size'])}, stride={_fmt(p['stride'])}, "
                f"input_size={_fmt(p['input_size'])})"
            )
        elif self.target == "interpolate":
            parts = [f"input {_shape(p['input'])}{dtype_note}"]
            parts += [f"{k}={_fmt(v)}" for k, v in p["kwargs"].items()]
            text = f"interpolate({', '.join(parts)})"
        elif self.target == "ResizeConv2d":
            nic, noc = p["init"]
            text = f"ResizeConv2d({nic}, {noc})(input {_shape(p['input'])}{dtype_note})"
        else:
            text = f"{self.target}({json.dumps(p)})"
        if p.get("grad"):
            text += " + gradients"
        if p.get("note"):
            text += f"  [{p['note']}]"
        return text

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (for the CI grader to hand a case to the sandbox)."""
        return {
            "grade_id": self.grade_id,
            "target": self.target,
            "params": self.params,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        """The inverse of ``to_json`` (tuples come back as lists; every call site accepts both)."""
        return cls(data["grade_id"], data["target"], data["params"], int(data.get("seed", 0)))


@dataclass
class Verdict:
    """The outcome of one case: passed or not, and a message a TA can read without rerunning."""

    passed: bool
    message: str
    diagnosis: str | None = None  # the likely bug, when a known mistake explains the output


class ForbiddenKernelError(RuntimeError):
    """Raised at torch's dispatcher when a graded call reaches a forbidden kernel."""

    def __init__(self, kernel: str):
        if kernel.startswith("("):
            message = (
                f"{kernel[1:-1]}: your code took torch's dispatcher guard off during the "
                "graded call, which counts as reaching a forbidden kernel"
            )
        elif kernel.startswith("torch."):
            message = (
                f"your code called {kernel}, torch's own Python implementation of an "
                "operation this exercise asks you to write yourself (transposed convolution, "
                "convolution backward, upsampling/interpolation and grid sampling are not "
                "allowed)"
            )
        else:
            message = (
                f"your code reached torch's own kernel {kernel!r}, which this exercise asks "
                "you to write yourself (transposed convolution, convolution backward, "
                "upsampling/interpolation and grid sampling are not allowed)"
            )
        super().__init__(message)
        self.kernel = kernel


class SubmissionError(Exception):
    """The student's object does not have the promised form (a module without ``.weight``...)."""


class NotATensor:
    """Stands for an output that was not a plain ``torch.Tensor`` (after crossing a process).

    The CI grader ships outputs back as tensors only; ``export_outputs`` turns anything else
    into its type name and ``import_outputs`` into one of these, which ``compare`` rejects.
    """

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"NotATensor({self.type_name!r})"


def export_outputs(outputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split ``run_student``'s outputs into plain tensors (contiguous CPU copies, for
    safetensors) and the type names of everything else (for JSON)."""
    tensors, others = {}, {}
    for key, value in outputs.items():
        if type(value) is torch.Tensor:
            tensors[key] = _DETACH(value).cpu().contiguous().clone()
        elif type(value) is NotATensor:
            others[key] = value.type_name
        else:
            others[key] = f"{type(value).__module__}.{type(value).__qualname__}"
    return tensors, others


def import_outputs(tensors: dict[str, torch.Tensor], others: dict[str, str]) -> dict[str, Any]:
    """The inverse of ``export_outputs``, on the trusted side."""
    outputs: dict[str, Any] = dict(tensors)
    outputs.update({key: NotATensor(name) for key, name in others.items()})
    return outputs


# --------------------------------------------------------------------------------------
# The public cases
# --------------------------------------------------------------------------------------


def _ct(grade_id, target, input, weight, bias=False, seed=0, dtype="float32", **extra):
    kwargs = extra.pop("kwargs", {})
    params = {
        "input": list(input),
        "weight": list(weight),
        "bias": bias,
        "kwargs": kwargs,
        "dtype": dtype,
        **extra,
    }
    return Case(grade_id, target, params, seed)


def _ct1(grade_id, *args, **kwargs):
    return _ct(grade_id, "conv_transpose1d", *args, **kwargs)


def _ct2(grade_id, *args, **kwargs):
    return _ct(grade_id, "conv_transpose2d", *args, **kwargs)


def _ol(L, kernel_size, **kwargs):
    return Case(
        "ct1d_output_length",
        "output_length",
        {"args": {"L": L, "kernel_size": kernel_size, **kwargs}},
    )


def _mat(kernel_length, input_length, seed=0, dtype="float32", **extra):
    return Case(
        "ct1d_matrix",
        "conv1d_matrix",
        {"kernel_length": kernel_length, "input_length": input_length, "dtype": dtype, **extra},
        seed,
    )


def _mod(init, input, seed=0, dtype="float32", **extra):
    return Case(
        "ct1d_module",
        "ConvTranspose1d",
        {"init": init, "input": list(input), "dtype": dtype, **extra},
        seed,
    )


def _cov(kernel_size, stride, input_size):
    return Case(
        "ct2d_coverage_map",
        "coverage_map",
        {"kernel_size": kernel_size, "stride": stride, "input_size": input_size},
    )


def _itp(grade_id, input, seed=0, dtype="float32", **extra):
    kwargs = extra.pop("kwargs", {})
    return Case(
        grade_id,
        "interpolate",
        {"input": list(input), "kwargs": kwargs, "dtype": dtype, **extra},
        seed,
    )


_LECTURE_X = [[[2.0, 3.0, 0.0, -1.0]]]
_LECTURE_W = [[[1.0, 2.0, -1.0]]]
_LECTURE_2X2 = [[[[1.0, 2.0], [3.0, 4.0]]]]


def _public_cases() -> dict[str, list[Case]]:
    lecture = {"input": _LECTURE_X, "weight": _LECTURE_W}
    cases: list[Case] = [
        # --- 01: output_length -------------------------------------------------------
        _ol(4, 3),
        _ol(4, 3, stride=2),
        _ol(5, 4, stride=3, padding=1, output_padding=2),
        _ol(3, 3, stride=2, padding=1, output_padding=1, dilation=2),
        _ol(6, 2, padding=1, dilation=3),
        _ol(4, 3, output_padding=1, dilation=2),  # stride <= output_padding < dilation: fine
        _ol(3, 2, stride=2, output_padding=2, dilation=3),
        _ol(4, 3, stride=2, output_padding=2),  # output_padding >= max(stride, dilation): raises
        _ol(2, 3, padding=3),  # non-positive length: raises
        # --- 01: conv1d_matrix -------------------------------------------------------
        _mat(3, 6, values={"kernel": [1.0, 2.0, -1.0]}, note="lecture: kernel (1, 2, -1)"),
        _mat(4, 10, values={"kernel": [1.0, 2.0, 0.0, -1.0]}, note="lecture: kernel (1, 2, 0, -1)"),
        _mat(3, 7, seed=1, dtype="float64"),
        _mat(5, 5, seed=2),
        _mat(1, 3, seed=3),
        # --- 01: conv_transpose1d ----------------------------------------------------
        _ct1(
            "ct1d_basic",
            (1, 1, 4),
            (1, 1, 3),
            values=lecture,
            note="lecture: (2, 3, 0, -1) with kernel (1, 2, -1) gives (2, 7, 4, -4, -2, 1)",
        ),
        _ct1(
            "ct1d_basic",
            (1, 1, 7),
            (1, 1, 3),
            values={
                "input": [[[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]]],
                "weight": [[[1.0, 2.0, 3.0]]],
            },
            note="lecture: a single 1 copies the kernel, unflipped",
        ),
        _ct1("ct1d_basic", (1, 1, 5), (1, 1, 3), seed=1, ints=True),
        _ct1("ct1d_basic", (1, 1, 6), (1, 1, 4), seed=2),
        _ct1("ct1d_channels_batch", (2, 3, 5), (3, 2, 3), seed=3),
        _ct1("ct1d_channels_batch", (3, 2, 4), (2, 2, 3), seed=4),
        _ct1("ct1d_channels_batch", (1, 4, 3), (4, 1, 2), seed=5),
        _ct1("ct1d_unbatched", (3, 5), (3, 2, 3), seed=6),
        _ct1(
            "ct1d_unbatched",
            (1, 4),
            (1, 1, 3),
            values={"input": _LECTURE_X[0], "weight": _LECTURE_W},
        ),
        _ct1("ct1d_unbatched", (2, 4), (2, 3, 2), seed=7, kwargs={"stride": 2}),
        _ct1(
            "ct1d_stride",
            (1, 1, 4),
            (1, 1, 3),
            values=lecture,
            kwargs={"stride": 2},
            note="lecture: stride 2 gives (2, 4, 1, 6, -3, 0, -1, -2, 1)",
        ),
        _ct1("ct1d_stride", (2, 2, 4), (2, 3, 3), seed=8, kwargs={"stride": 3}),
        _ct1("ct1d_stride", (1, 2, 3), (2, 2, 2), seed=9, kwargs={"stride": 2}),
        _ct1("ct1d_stride", (1, 1, 3), (1, 1, 3), seed=10, ints=True, kwargs={"stride": (4,)}),
        _ct1("ct1d_padding", (1, 1, 5), (1, 1, 3), seed=11, ints=True, kwargs={"padding": 1}),
        _ct1("ct1d_padding", (2, 2, 4), (2, 1, 4), seed=12, kwargs={"stride": 2, "padding": 2}),
        _ct1("ct1d_padding", (1, 2, 4), (2, 2, 3), seed=13, kwargs={"padding": (2,)}),
        _ct1(
            "ct1d_output_padding",
            (1, 1, 4),
            (1, 1, 3),
            seed=14,
            ints=True,
            kwargs={"stride": 2, "output_padding": 1},
        ),
        _ct1(
            "ct1d_output_padding",
            (2, 2, 3),
            (2, 2, 4),
            seed=15,
            kwargs={"stride": 3, "padding": 2, "output_padding": 2},
        ),
        _ct1(
            "ct1d_output_padding",
            (1, 2, 4),
            (2, 1, 3),
            seed=16,
            kwargs={"padding": 1, "output_padding": 1, "dilation": 2},
        ),
        _ct1(
            "ct1d_output_padding",
            (1, 1, 4),
            (1, 1, 3),
            seed=17,
            kwargs={"stride": 2, "output_padding": 2},
        ),  # raises: output_padding >= stride
        _ct1(
            "ct1d_output_padding", (1, 1, 4), (1, 1, 3), seed=18, kwargs={"output_padding": 1}
        ),  # raises: output_padding >= max(stride, dilation)
        _ct1("ct1d_dilation", (1, 1, 4), (1, 1, 3), seed=19, ints=True, kwargs={"dilation": 2}),
        _ct1(
            "ct1d_dilation",
            (2, 2, 4),
            (2, 2, 3),
            seed=20,
            kwargs={"stride": 2, "padding": 1, "dilation": 3},
        ),
        _ct1("ct1d_dilation", (1, 1, 3), (1, 2, 2), seed=21, kwargs={"dilation": (2,)}),
        _ct1("ct1d_groups", (2, 4, 5), (4, 1, 3), seed=22, kwargs={"groups": 2}),
        _ct1("ct1d_groups", (1, 4, 4), (4, 2, 3), seed=23, kwargs={"groups": 2}),
        _ct1("ct1d_groups", (2, 3, 4), (3, 1, 2), seed=24, kwargs={"stride": 2, "groups": 3}),
        _ct1("ct1d_bias", (2, 3, 4), (3, 2, 3), bias=True, seed=25),
        _ct1(
            "ct1d_bias",
            (1, 2, 3),
            (2, 3, 2),
            bias=True,
            seed=26,
            positional=True,
            kwargs={"stride": 2, "padding": 1, "output_padding": 1, "groups": 1, "dilation": 1},
        ),
        _ct1("ct1d_bias", (1, 2, 4), (2, 2, 3), seed=27, bias_none=True),
        _ct1("ct1d_bias", (1, 4, 3), (4, 1, 2), bias=True, seed=28, kwargs={"groups": 2}),
        _ct1(
            "ct1d_dtypes",
            (2, 2, 5),
            (2, 3, 3),
            bias=True,
            seed=29,
            dtype="float64",
            kwargs={"stride": 2, "padding": 1},
        ),
        _ct1("ct1d_dtypes", (1, 3, 4), (3, 2, 2), seed=30, dtype="float32"),
        _ct1(
            "ct1d_dtypes",
            (1, 4, 3),
            (4, 1, 3),
            bias=True,
            seed=31,
            dtype="float64",
            kwargs={"groups": 2, "dilation": 2, "output_padding": 1},
        ),
        _ct1(
            "ct1d_gradients",
            (2, 2, 5),
            (2, 3, 3),
            bias=True,
            seed=32,
            dtype="float64",
            grad=True,
            kwargs={"stride": 2, "padding": 1},
        ),
        _ct1("ct1d_gradients", (1, 2, 4), (2, 2, 3), seed=33, grad=True, kwargs={"dilation": 2}),
        _ct1(
            "ct1d_gradients",
            (1, 4, 3),
            (4, 1, 2),
            bias=True,
            seed=34,
            dtype="float64",
            grad=True,
            kwargs={"groups": 2, "stride": 3, "output_padding": 1},
        ),
        # --- 01: the module ----------------------------------------------------------
        _mod(
            {"in_channels": 1, "out_channels": 1, "kernel_size": 3},
            (1, 1, 5),
            values={
                "input": [[[1.0, 0.0, 0.0, 0.0, -1.0]]],
                "weight": [[[1.0, 2.0, 1.0]]],
                "bias": [0.0],
            },
            note="lecture: kernel (1, 2, 1) on (1, 0, 0, 0, -1)",
        ),
        _mod({"in_channels": 2, "out_channels": 3, "kernel_size": 3}, (2, 2, 5), seed=35),
        _mod(
            {
                "in_channels": 4,
                "out_channels": 2,
                "kernel_size": 4,
                "stride": 2,
                "padding": 1,
                "groups": 2,
                "bias": False,
            },
            (1, 4, 3),
            seed=36,
        ),
        _mod(
            {
                "in_channels": 3,
                "out_channels": 2,
                "kernel_size": 2,
                "stride": 2,
                "output_padding": 1,
            },
            (3, 4),
            seed=37,
        ),
        _mod(
            {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "dilation": 2},
            (2, 2, 4),
            seed=38,
            grad=True,
        ),
        _mod(
            {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1},
            (1, 2, 4),
            seed=124,
            output_size=[8],
            note="Conv1d(..., stride=2, padding=1) maps lengths 7 and 8 to 4: output_size says which",
        ),
        _mod(
            {"in_channels": 1, "out_channels": 3, "kernel_size": 4, "stride": 3},
            (2, 1, 5),
            seed=125,
            grad=True,
            output_size=[2, 3, 18],
        ),
        _mod(
            {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1},
            (1, 2, 4),
            seed=126,
            output_size=[9],
        ),  # raises: only lengths 7 and 8 are reachable
        # --- 02: conv_transpose2d ----------------------------------------------------
        _ct2("ct2d_basic", (1, 1, 3, 3), (1, 1, 2, 2), seed=40, ints=True),
        _ct2("ct2d_basic", (1, 1, 2, 3), (1, 1, 3, 2), seed=41),
        _ct2("ct2d_channels_batch", (2, 3, 3, 3), (3, 2, 2, 3), seed=42),
        _ct2("ct2d_channels_batch", (2, 2, 3, 4), (2, 2, 2, 3), seed=43),
        _ct2("ct2d_unbatched", (3, 4, 4), (3, 2, 2, 2), seed=44),
        _ct2("ct2d_unbatched", (1, 3, 3), (1, 1, 3, 3), seed=45, kwargs={"stride": 2}),
        _ct2("ct2d_stride", (1, 1, 3, 3), (1, 1, 2, 2), seed=46, ints=True, kwargs={"stride": 2}),
        _ct2("ct2d_stride", (1, 2, 3, 2), (2, 2, 2, 3), seed=47, kwargs={"stride": (2, 3)}),
        _ct2(
            "ct2d_stride",
            (1, 1, 3, 3),
            (1, 1, 4, 4),
            seed=48,
            ints=True,
            kwargs={"stride": 3},
            note="lecture: 4x4 kernel, stride 3",
        ),
        _ct2("ct2d_stride", (2, 1, 2, 3), (1, 2, 3, 3), seed=49, kwargs={"stride": (1, 2)}),
        _ct2("ct2d_padding", (1, 1, 4, 4), (1, 1, 3, 3), seed=50, ints=True, kwargs={"padding": 1}),
        _ct2(
            "ct2d_padding",
            (1, 2, 3, 3),
            (2, 1, 4, 4),
            seed=51,
            kwargs={"stride": 2, "padding": (1, 2)},
        ),
        _ct2("ct2d_padding", (2, 1, 3, 4), (1, 2, 3, 2), seed=52, kwargs={"padding": (0, 1)}),
        _ct2(
            "ct2d_output_padding",
            (1, 2, 3, 3),
            (2, 2, 3, 3),
            seed=53,
            kwargs={"stride": 2, "padding": 1, "output_padding": 1},
            note="as ConvTranspose2d(nic, noc, 3, stride=2, padding=1, output_padding=1)",
        ),
        _ct2(
            "ct2d_output_padding",
            (1, 1, 2, 3),
            (1, 2, 2, 2),
            seed=54,
            kwargs={"stride": (2, 3), "output_padding": (1, 2)},
        ),
        _ct2(
            "ct2d_output_padding",
            (1, 1, 3, 3),
            (1, 1, 3, 3),
            seed=55,
            kwargs={"stride": (2, 3), "padding": 1, "output_padding": (0, 2)},
        ),
        _ct2(
            "ct2d_output_padding",
            (1, 1, 3, 2),
            (1, 2, 2, 2),
            seed=118,
            kwargs={"padding": 1, "dilation": (2, 3), "output_padding": (1, 2)},
            note="stride <= output_padding < dilation: allowed",
        ),
        _ct2(
            "ct2d_output_padding",
            (1, 1, 3, 3),
            (1, 1, 2, 2),
            seed=56,
            kwargs={"stride": (2, 3), "output_padding": (2, 0)},
        ),  # raises
        _ct2(
            "ct2d_output_padding", (1, 1, 3, 3), (1, 1, 2, 2), seed=57, kwargs={"output_padding": 1}
        ),  # raises
        _ct2(
            "ct2d_dilation", (1, 1, 3, 3), (1, 1, 2, 2), seed=58, ints=True, kwargs={"dilation": 2}
        ),
        _ct2(
            "ct2d_dilation",
            (1, 2, 3, 3),
            (2, 1, 2, 3),
            seed=59,
            kwargs={"stride": 2, "dilation": (1, 2)},
        ),
        _ct2(
            "ct2d_dilation",
            (2, 1, 3, 2),
            (1, 2, 2, 2),
            seed=60,
            kwargs={"padding": 1, "dilation": (2, 3), "output_padding": (1, 2)},
        ),
        _ct2("ct2d_groups", (1, 4, 3, 3), (4, 2, 2, 2), seed=61, kwargs={"groups": 2}),
        _ct2("ct2d_groups", (2, 4, 3, 3), (4, 1, 2, 2), seed=62, kwargs={"stride": 2, "groups": 4}),
        _ct2("ct2d_groups", (1, 6, 2, 2), (6, 1, 2, 3), seed=63, kwargs={"groups": 3}),
        _ct2("ct2d_bias", (2, 3, 3, 3), (3, 2, 2, 2), bias=True, seed=64),
        _ct2(
            "ct2d_bias",
            (1, 2, 2, 3),
            (2, 2, 3, 3),
            bias=True,
            seed=65,
            positional=True,
            kwargs={"stride": 2, "padding": 1, "output_padding": 1, "groups": 1, "dilation": 1},
        ),
        _ct2("ct2d_bias", (1, 2, 3, 3), (2, 1, 2, 2), seed=66, bias_none=True),
        _ct2(
            "ct2d_dtypes",
            (1, 2, 3, 3),
            (2, 3, 3, 3),
            bias=True,
            seed=67,
            dtype="float64",
            kwargs={"stride": 2, "padding": 1},
        ),
        _ct2("ct2d_dtypes", (1, 2, 3, 4), (2, 2, 2, 2), seed=68, dtype="float32"),
        _ct2(
            "ct2d_dtypes",
            (1, 4, 2, 3),
            (4, 1, 2, 2),
            bias=True,
            seed=69,
            dtype="float64",
            kwargs={"groups": 2, "stride": (1, 2)},
        ),
        _ct2(
            "ct2d_gradients",
            (2, 2, 3, 3),
            (2, 2, 2, 3),
            bias=True,
            seed=70,
            dtype="float64",
            grad=True,
            kwargs={"stride": 2, "padding": 1, "output_padding": 1},
        ),
        _ct2(
            "ct2d_gradients",
            (1, 4, 2, 3),
            (4, 1, 2, 2),
            bias=True,
            seed=71,
            grad=True,
            kwargs={"groups": 2, "dilation": (1, 2)},
        ),
        # --- 02: coverage_map --------------------------------------------------------
        _cov(4, 3, 4),
        _cov(3, 2, (2, 3)),
        _cov((2, 3), (1, 2), (3, 2)),
        _cov(2, 2, 3),
        _cov(3, 1, 3),
        # --- 03: interpolate ---------------------------------------------------------
        _itp("interp_nearest_size", (1, 2, 3, 3), seed=80, kwargs={"size": (5, 7)}),
        _itp("interp_nearest_size", (2, 2, 4), seed=81, kwargs={"size": 7}),
        _itp("interp_nearest_size", (1, 1, 4, 4), seed=82, kwargs={"size": 2}),
        _itp(
            "interp_nearest_size", (1, 1, 2, 3), seed=83, kwargs={"size": (3, 5), "mode": "nearest"}
        ),
        _itp(
            "interp_nearest_size",
            (1, 1, 2, 2),
            seed=119,
            kwargs={"size": 4, "align_corners": False},
        ),  # raises: align_corners with a nearest mode
        _itp(
            "interp_nearest_size", (1, 1, 2, 2), seed=120, kwargs={"size": 4, "scale_factor": 2}
        ),  # raises: both size and scale_factor
        _itp(
            "interp_nearest_scale",
            (1, 1, 2, 2),
            values={"input": _LECTURE_2X2},
            kwargs={"scale_factor": 3, "mode": "nearest"},
            note="lecture: [[1, 2], [3, 4]] x3",
        ),
        _itp("interp_nearest_scale", (1, 2, 3, 3), seed=84, kwargs={"scale_factor": 2}),
        _itp("interp_nearest_scale", (2, 1, 4), seed=85, kwargs={"scale_factor": 1.5}),
        _itp("interp_nearest_scale", (1, 1, 2, 3), seed=86, kwargs={"scale_factor": (2.0, 3.0)}),
        _itp("interp_nearest_scale", (1, 1, 4, 4), seed=87, kwargs={"scale_factor": 0.5}),
        _itp(
            "interp_nearest_scale",
            (1, 1, 2, 2),
            seed=121,
            kwargs={"scale_factor": 2, "mode": "nearest-exact", "align_corners": True},
        ),  # raises: align_corners with a nearest mode
        _itp("interp_nearest_scale", (1, 1, 2, 2), seed=127, kwargs={"mode": "nearest"}),  # raises
        _itp("interp_linear", (1, 2, 4), seed=88, kwargs={"size": 7, "mode": "linear"}),
        _itp(
            "interp_linear",
            (1, 2, 4),
            seed=88,
            kwargs={"size": 7, "mode": "linear", "align_corners": True},
        ),
        _itp("interp_linear", (2, 1, 3), seed=89, kwargs={"scale_factor": 2, "mode": "linear"}),
        _itp(
            "interp_linear",
            (1, 1, 4),
            seed=90,
            kwargs={"scale_factor": 2.5, "mode": "linear", "align_corners": True},
        ),
        _itp("interp_linear", (1, 1, 6), seed=91, kwargs={"size": 4, "mode": "linear"}),
        _itp(
            "interp_linear", (1, 1, 2, 3), seed=122, kwargs={"size": 4, "mode": "linear"}
        ),  # raises: linear needs a 3-d input
        _itp(
            "interp_bilinear_size",
            (1, 1, 2, 2),
            values={"input": _LECTURE_2X2},
            kwargs={"size": (6, 6), "mode": "bilinear"},
        ),
        _itp(
            "interp_bilinear_size",
            (2, 2, 3, 4),
            seed=92,
            kwargs={"size": (5, 7), "mode": "bilinear"},
        ),
        _itp("interp_bilinear_size", (1, 1, 3, 3), seed=93, kwargs={"size": 5, "mode": "bilinear"}),
        _itp(
            "interp_bilinear_size",
            (1, 1, 6, 6),
            seed=94,
            kwargs={"size": (4, 3), "mode": "bilinear"},
        ),
        _itp(
            "interp_bilinear_size", (1, 2, 5), seed=123, kwargs={"size": 7, "mode": "bilinear"}
        ),  # raises: bilinear needs a 4-d input
        _itp(
            "interp_bilinear_scale",
            (1, 1, 2, 2),
            values={"input": _LECTURE_2X2},
            kwargs={"scale_factor": 3, "mode": "bilinear"},
            note="lecture: [[1, 2], [3, 4]] x3",
        ),
        _itp(
            "interp_bilinear_scale",
            (1, 2, 3, 3),
            seed=95,
            kwargs={"scale_factor": 2, "mode": "bilinear"},
        ),
        _itp(
            "interp_bilinear_scale",
            (1, 1, 2, 4),
            seed=96,
            kwargs={"scale_factor": (2.0, 1.5), "mode": "bilinear"},
        ),
        _itp(
            "interp_bilinear_scale",
            (1, 1, 4, 6),
            seed=97,
            kwargs={"scale_factor": 0.5, "mode": "bilinear"},
        ),
        _itp(
            "interp_align_corners",
            (1, 1, 2, 2),
            values={"input": _LECTURE_2X2},
            kwargs={"scale_factor": 3, "mode": "bilinear", "align_corners": True},
        ),
        _itp(
            "interp_align_corners",
            (1, 2, 3, 4),
            seed=98,
            kwargs={"size": (5, 5), "mode": "bilinear", "align_corners": True},
        ),
        _itp(
            "interp_align_corners",
            (2, 1, 5),
            seed=99,
            kwargs={"size": 3, "mode": "linear", "align_corners": True},
        ),
        _itp(
            "interp_align_corners",
            (1, 1, 3, 3),
            seed=100,
            kwargs={"scale_factor": 2, "mode": "bilinear", "align_corners": False},
        ),
        _itp(
            "interp_recompute_scale_factor",
            (1, 1, 3, 3),
            seed=101,
            kwargs={"scale_factor": 1.7, "mode": "bilinear", "recompute_scale_factor": True},
        ),
        _itp(
            "interp_recompute_scale_factor",
            (1, 1, 3, 3),
            seed=101,
            kwargs={"scale_factor": 1.7, "mode": "bilinear", "recompute_scale_factor": False},
        ),
        _itp(
            "interp_recompute_scale_factor",
            (1, 2, 5),
            seed=102,
            kwargs={"scale_factor": 1.3, "mode": "linear", "recompute_scale_factor": True},
        ),
        _itp(
            "interp_recompute_scale_factor",
            (1, 1, 3, 2),
            seed=103,
            kwargs={"scale_factor": 1.5, "recompute_scale_factor": True},
        ),
        _itp(
            "interp_dtypes",
            (1, 2, 3, 5),
            seed=104,
            dtype="float64",
            kwargs={"size": (4, 7), "mode": "bilinear"},
        ),
        _itp(
            "interp_dtypes",
            (2, 1, 5),
            seed=105,
            dtype="float32",
            kwargs={"scale_factor": 2, "mode": "linear", "align_corners": True},
        ),
        _itp("interp_dtypes", (1, 1, 5, 2), seed=106, dtype="float64", kwargs={"size": (3, 6)}),
        _itp(
            "interp_gradients",
            (1, 2, 3, 3),
            seed=107,
            dtype="float64",
            grad=True,
            kwargs={"scale_factor": 2, "mode": "bilinear"},
        ),
        _itp(
            "interp_gradients",
            (2, 1, 4),
            seed=108,
            dtype="float64",
            grad=True,
            kwargs={"size": 7, "mode": "linear", "align_corners": True},
        ),
        _itp("interp_gradients", (1, 1, 3, 2), seed=109, grad=True, kwargs={"size": (5, 4)}),
        Case(
            "interp_resize_conv",
            "ResizeConv2d",
            {"init": [2, 3], "input": [2, 2, 4, 5], "dtype": "float32"},
            110,
        ),
        Case(
            "interp_resize_conv",
            "ResizeConv2d",
            {"init": [1, 1], "input": [1, 1, 3, 3], "dtype": "float32"},
            111,
        ),
        Case(
            "interp_resize_conv",
            "ResizeConv2d",
            {"init": [3, 2], "input": [1, 3, 2, 3], "dtype": "float64"},
            112,
        ),
        _itp("interp_bicubic", (1, 1, 3, 3), seed=113, kwargs={"size": (5, 6), "mode": "bicubic"}),
        _itp(
            "interp_bicubic",
            (1, 2, 3, 4),
            seed=114,
            kwargs={"scale_factor": 2, "mode": "bicubic", "align_corners": True},
        ),
        _itp(
            "interp_nearest_exact",
            (1, 1, 3, 4),
            seed=115,
            kwargs={"size": (5, 7), "mode": "nearest-exact"},
        ),
        _itp(
            "interp_nearest_exact",
            (2, 1, 4),
            seed=116,
            kwargs={"scale_factor": 2.5, "mode": "nearest-exact"},
        ),
        _itp(
            "interp_nearest_exact",
            (1, 1, 6, 5),
            seed=117,
            kwargs={"size": (4, 3), "mode": "nearest-exact"},
        ),
    ]
    by_id: dict[str, list[Case]] = {gid: [] for gid in GRADE_IDS}
    for case in cases:
        by_id[case.grade_id].append(case)
    return by_id


#: The public cases of every grade_id: a few small, fixed cases a student sees.
PUBLIC_CASES: dict[str, list[Case]] = _public_cases()


# --------------------------------------------------------------------------------------
# Inputs and torch's reference
# --------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _dtype(case: Case) -> torch.dtype:
    return _DTYPES[case.params.get("dtype", "float32")]


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    """An int or a sequence as an n-tuple (torch's own rule for conv parameters)."""
    if isinstance(value, list | tuple):
        return tuple(int(v) for v in value) if len(value) == n else tuple([int(value[0])] * n)
    return (int(value),) * n


def _as_call_value(value: Any) -> Any:
    """JSON lists back to tuples: the student is called with what torch users write."""
    return tuple(value) if isinstance(value, list) else value


def _call_kwargs(case: Case) -> dict[str, Any]:
    return {k: _as_call_value(v) for k, v in case.params.get("kwargs", {}).items()}


def _spatial(case: Case) -> int:
    return 1 if case.target in ("conv_transpose1d", "ConvTranspose1d") else 2


def _draw(gen: torch.Generator, shape: Any, dtype: torch.dtype, ints: bool) -> torch.Tensor:
    shape = tuple(int(n) for n in shape)
    if ints:
        return torch.randint(-3, 4, shape, generator=gen).to(dtype)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def _module_weight_shape(init: dict[str, Any]) -> tuple[int, ...]:
    groups = int(init.get("groups", 1))
    return (int(init["in_channels"]), int(init["out_channels"]) // groups, int(init["kernel_size"]))


def make_inputs(case: Case) -> dict[str, torch.Tensor]:
    """The input tensors of ``case``, drawn from ``case.seed``; the same on every machine.

    Keys: ``input``, ``weight``, ``bias`` (convolutions and ConvTranspose1d); ``kernel``
    (conv1d_matrix); ``conv_weight``, ``conv_bias`` (ResizeConv2d); ``grad_output`` for
    gradient cases (the upstream gradient, shaped like torch's output). output_length and
    coverage_map take no tensor.
    """
    p = case.params
    gen = torch.Generator().manual_seed(int(case.seed))
    dtype = _dtype(case)
    ints = bool(p.get("ints"))
    values = p.get("values", {})

    def draw(name: str, shape: Any) -> torch.Tensor:
        if name in values:
            return torch.tensor(values[name], dtype=torch.float64).to(dtype).reshape(tuple(shape))
        return _draw(gen, shape, dtype, ints)

    inputs: dict[str, torch.Tensor] = {}
    if case.target in _CONV_TARGETS:
        inputs["input"] = draw("input", p["input"])
        inputs["weight"] = draw("weight", p["weight"])
        if p.get("bias"):
            channels = p["weight"][1] * int(_tuple(p["kwargs"].get("groups", 1), 1)[0])
            inputs["bias"] = draw("bias", [channels])
    elif case.target == "conv1d_matrix":
        inputs["kernel"] = draw("kernel", [p["kernel_length"]])
    elif case.target == "ConvTranspose1d":
        init = p["init"]
        inputs["input"] = draw("input", p["input"])
        inputs["weight"] = draw("weight", _module_weight_shape(init))
        if init.get("bias", True):
            inputs["bias"] = draw("bias", [init["out_channels"]])
    elif case.target == "interpolate":
        inputs["input"] = draw("input", p["input"])
    elif case.target == "ResizeConv2d":
        nic, noc = p["init"]
        inputs["input"] = draw("input", p["input"])
        inputs["conv_weight"] = draw("conv_weight", [noc, nic, 3, 3]) / 3
        inputs["conv_bias"] = draw("conv_bias", [noc])
    if p.get("grad"):
        with _quiet():
            shape = _torch_forward(case, inputs).shape
        inputs["grad_output"] = _draw(gen, shape, dtype, ints)
    return inputs


def _torch_forward(case: Case, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """torch's forward for a tensor-valued case (raises where torch raises)."""
    p = case.params
    if case.target in _CONV_TARGETS:
        fn = F.conv_transpose1d if case.target == "conv_transpose1d" else F.conv_transpose2d
        return fn(inputs["input"], inputs["weight"], inputs.get("bias"), **_call_kwargs(case))
    if case.target == "ConvTranspose1d" and "output_size" in p:
        # torch's own module picks the output_padding that gives output_size (or raises).
        init = {k: _as_call_value(v) for k, v in p["init"].items()}
        module = nn.ConvTranspose1d(**init, device="meta")
        parameters = {k: inputs[k] for k in ("weight", "bias") if k in inputs}
        return torch.func.functional_call(
            module, parameters, (inputs["input"],), {"output_size": list(p["output_size"])}
        )
    if case.target == "ConvTranspose1d":
        init = {
            k: v
            for k, v in p["init"].items()
            if k not in ("in_channels", "out_channels", "kernel_size", "bias")
        }
        return F.conv_transpose1d(
            inputs["input"],
            inputs["weight"],
            inputs.get("bias"),
            **{k: _as_call_value(v) for k, v in init.items()},
        )
    if case.target == "interpolate":
        return F.interpolate(inputs["input"], **_call_kwargs(case))
    if case.target == "ResizeConv2d":
        upsampled = F.interpolate(inputs["input"], scale_factor=2, mode="bilinear")
        return F.conv2d(upsampled, inputs["conv_weight"], inputs["conv_bias"], padding=1)
    raise ValueError(f"no tensor forward for target {case.target!r}")


def _torch_error(case: Case, inputs: dict[str, torch.Tensor]) -> str | None:
    """torch's error message for ``case`` if torch raises, else None."""
    try:
        with _quiet():
            reference_outputs(case, inputs, _raise=True)
    except (RuntimeError, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else ""
        return f"{type(error).__name__}: {first_line.split(', but got')[0]}"
    return None


def reference_outputs(
    case: Case, inputs: dict[str, torch.Tensor], *, _raise: bool = False
) -> dict[str, torch.Tensor]:
    """What torch gives for ``case`` (outputs, and gradients where the case asks for them).

    Works on its own copies of ``inputs``. When torch raises for these parameters, returns
    ``{}`` and the case expects the student to raise too.

    Keys: ``output`` always; ``grad_input``, ``grad_weight``, ``grad_bias`` for gradient cases
    (``grad_input`` only for interpolate); ``initial_weight`` and ``initial_bias`` for
    ConvTranspose1d (zeros: only their shape and dtype are the reference; ``compare`` checks
    the student's values against torch's initialisation bound ±1/sqrt(fan_in)).
    """
    copies = {k: _DETACH(v).clone() for k, v in inputs.items()}
    p = case.params
    try:
        with _quiet():
            return _reference(case, p, copies)
    except (RuntimeError, ValueError):
        if _raise:
            raise
        return {}


def _reference(case: Case, p: dict[str, Any], inputs: dict[str, torch.Tensor]):
    dtype = _dtype(case)
    if case.target == "output_length":
        args = dict(p["args"])
        length, kernel_size = int(args.pop("L")), int(args.pop("kernel_size"))
        out = F.conv_transpose1d(torch.zeros(1, 1, length), torch.zeros(1, 1, kernel_size), **args)
        return {"output": torch.tensor(out.shape[-1], dtype=torch.int64)}
    if case.target == "conv1d_matrix":
        kernel, length = inputs["kernel"], int(p["input_length"])
        basis = torch.eye(length, dtype=kernel.dtype)[:, None, :]
        # Column j of the matrix is F.conv1d of the j-th basis vector.
        return {"output": F.conv1d(basis, kernel[None, None])[:, 0, :].T.contiguous()}
    if case.target == "coverage_map":
        kernel = _tuple(p["kernel_size"], 2)
        stride = _tuple(p["stride"], 2)
        size = _tuple(p["input_size"], 2)
        taps = F.conv_transpose2d(
            torch.ones(1, 1, *size, dtype=torch.float64),
            torch.ones(1, 1, *kernel, dtype=torch.float64),
            stride=stride,
        )
        return {"output": taps[0, 0].round().to(torch.int64)}
    if case.target == "ResizeConv2d":
        nic, noc = p["init"]
        out = _torch_forward(case, inputs)
        tconv_shape = F.conv_transpose2d(
            inputs["input"],
            torch.zeros(nic, noc, 3, 3, dtype=dtype),
            stride=2,
            padding=1,
            output_padding=1,
        ).shape
        if out.shape != tconv_shape:  # the exercise's promise; a broken case must not ship
            raise AssertionError(f"{case.describe()}: shapes {out.shape} != {tconv_shape}")
        return {"output": out}
    outputs: dict[str, torch.Tensor] = {}
    if case.target == "ConvTranspose1d":
        weight_shape = _module_weight_shape(p["init"])
        outputs["initial_weight"] = torch.zeros(weight_shape, dtype=dtype)
        if p["init"].get("bias", True):
            outputs["initial_bias"] = torch.zeros(p["init"]["out_channels"], dtype=dtype)
    wrt = [k for k in ("input", "weight", "bias") if k in inputs] if p.get("grad") else []
    if case.target == "interpolate":
        wrt = wrt[:1]
    for key in wrt:
        inputs[key].requires_grad_(True)
    out = _torch_forward(case, inputs)
    outputs["output"] = _DETACH(out)
    if wrt:
        grads = torch.autograd.grad(out, [inputs[k] for k in wrt], inputs["grad_output"])
        outputs.update({f"grad_{k}": g for k, g in zip(wrt, grads, strict=True)})
    return outputs


# --------------------------------------------------------------------------------------
# The kernel guard and the student's call
# --------------------------------------------------------------------------------------

_TRANSPOSED_FLAG_OPS = {"convolution", "_convolution", "convolution_overrideable"}


def forbidden_kernel(op_name: str, args: tuple = (), kwargs: dict | None = None) -> bool:
    """Whether the op ``op_name`` of any namespace (``aten::upsample_bilinear2d``,
    ``mkldnn::_convolution_transpose_pointwise``, ``quantized::conv_transpose1d``...) is
    forbidden here.

    Forbidden: transposed convolutions (also ``convolution`` with ``transposed=True``),
    convolution backward, upsampling/interpolation and grid sampling.
    """
    base = op_name.split("::")[-1]
    if base.split(".")[0] in _TRANSPOSED_FLAG_OPS:
        transposed = args[6] if len(args) > 6 else (kwargs or {}).get("transposed", False)
        return bool(transposed)
    if "conv" in base and ("transpose" in base or "backward" in base):
        return True
    return base.startswith(
        (
            "upsample_",
            "_upsample_",
            "grid_sampler",
            "cudnn_grid_sampler",
            "_grid_sampler",
            "affine_grid_generator",
        )
    )


# Every key at which torch may hold a CPU-reachable kernel of a forbidden op; the implicit
# one too, so that an op lowered to allowed-looking ops (conv_tbc_backward) is refused whole.
_OVERRIDE_KEYS = (
    "CPU",
    "QuantizedCPU",
    "MkldnnCPU",
    "SparseCPU",
    "CompositeExplicitAutograd",
    "CompositeExplicitAutogradNonFunctional",
    "CompositeImplicitAutograd",
)
# Checked rather than refused: non-transposed convolutions, and autograd's own backward of them.
_CHECKED_OPS = ("aten::_convolution", "aten::convolution_backward")
_override_targets: list[tuple[str, str]] = []


def _shown_name(name: str, key: str) -> str:
    """The name a refusal gives: ``conv_transpose*d``'s implicit kernel is refused before it
    lowers, so it also names what it lowers to (``convolution`` with ``transposed=True``)."""
    if key == "CompositeImplicitAutograd" and name.split("::")[-1].startswith("conv_transpose"):
        return f"{name} = aten::convolution(transposed=True)"
    return name


def _kernel_override_targets() -> list[tuple[str, str]]:
    """The ``(op, dispatch key)`` pairs the guard's process-wide layer replaces while armed:
    every forbidden op of every namespace at every key where it has a kernel, and the two
    checked ops at the CPU key."""
    if not _override_targets:
        for name in torch._C._dispatch_get_all_op_names():
            if name in _CHECKED_OPS:
                _override_targets.append((name, "CPU"))
            elif forbidden_kernel(name):
                for key in _OVERRIDE_KEYS:
                    if torch._C._dispatch_has_kernel_for_dispatch_key(name, key):
                        _override_targets.append((name, key))
    return _override_targets


# torch's Python decompositions of the forbidden ops compute them with ordinary tensor ops,
# so the dispatcher never sees a forbidden kernel: they are recognised by their code instead.
_DECOMPOSITION_FILES = frozenset(
    os.path.join(os.path.dirname(torch.__file__), *parts)
    for parts in (("_decomp", "decompositions.py"), ("_inductor", "decomposition.py"),
                  ("_refs", "nn", "functional", "__init__.py"))
)  # fmt: skip
_FORBIDDEN_PYTHON = re.compile(
    r"upsample(?!_compute_output_size)|interpolat|grid_sampler|affine_grid|conv_transpose"
    r"|convolution_backward|_resize_aa|cubic_convolution|cubic_interp"
)

# Bound at import, before any student code: the grader's own calls on student values.
_CLONE = torch.Tensor.clone
_COPY = torch.Tensor.copy_
_REQUIRES_GRAD_ = torch.Tensor.requires_grad_
_REQUIRES_GRAD = torch._C.TensorBase.requires_grad.__get__
_AUTOGRAD_GRAD = torch.autograd.grad
_GETPROFILE = sys.getprofile
_INSTANCE_DICT = nn.Module.__dict__["__dict__"].__get__
_TYPE_NAME = type.__dict__["__qualname__"].__get__
_TYPE_MODULE = type.__dict__["__module__"].__get__
_ENGINE_RUN = torch.autograd.graph._engine_run_backward.__code__
_AUTOGRAD_GRAD_CODE = torch.autograd.grad.__code__
_OPS_CALL = torch._ops.OpOverload.__call__.__code__


# What each tampering call would take off, for the message a TA reads.
_HOOK = "the guard's watch on torch's Python upsample/interpolate/grid_sampler decompositions"
_MODE = "the guard's dispatch mode"
_KERNELS = "the guard's kernels in place of torch's forbidden ones"
_SEARCH = "(a search for the guard's objects)"


def _tamper_builtins() -> dict[Any, str]:
    """C functions that take a layer of the guard off, or find its objects: their names."""
    import _thread
    import gc

    found = {
        torch._C._DispatchModule.reset.__func__: ("torch.library's reset", _KERNELS),
        sys.setprofile: ("sys.setprofile", _HOOK),
        _thread.start_new_thread: ("_thread.start_new_thread", _HOOK),
        gc.get_objects: ("gc.get_objects", _SEARCH),
        gc.get_referrers: ("gc.get_referrers", _SEARCH),
        gc.get_referents: ("gc.get_referents", _SEARCH),
    }
    for name, what in (
        ("_pop_torch_dispatch_stack", _MODE),
        ("_set_dispatch_mode", _MODE),
        ("_unset_dispatch_mode", _MODE),
        ("_dispatch_tls_set_dispatch_key_excluded", _MODE),
        ("_dispatch_tls_set_dispatch_key_included", _MODE),
        ("_dispatch_library", _KERNELS),
    ):
        if hasattr(torch._C, name):
            found[getattr(torch._C, name)] = (f"torch._C.{name}", what)
    return {function: _tamper_text(*named) for function, named in found.items()}


def _tamper_codes() -> dict[Any, str]:
    """Python functions that take a layer of the guard off, by the code they run."""
    import ctypes
    import importlib
    import threading

    from torch.utils import _python_dispatch

    functions = {
        "torch.library.Library": (torch.library.Library.__init__, _KERNELS),
        "torch.library.Library._destroy": (torch.library.Library._destroy, _KERNELS),
        "torch.library.Library.impl": (torch.library.Library.impl, _KERNELS),
        "_pop_mode": (_python_dispatch._pop_mode, _MODE),
        "_pop_mode_temporarily": (_python_dispatch._pop_mode_temporarily, _MODE),
        "_disable_current_modes": (_python_dispatch._disable_current_modes, _MODE),
        "threading.setprofile": (threading.setprofile, _HOOK),
        "importlib.reload": (importlib.reload, _HOOK),
        "ctypes.CDLL": (ctypes.CDLL.__init__, _KERNELS),
        "torch.ops.load_library": (torch._ops._Ops.load_library, _KERNELS),
    }
    return {
        _unwrapped(function).__code__: _tamper_text(name, what)
        for name, (function, what) in functions.items()
    }


def _tamper_text(name: str, what: str) -> str:
    if what == _SEARCH:
        return f"{name} {what}"
    return f"{name}, which takes off {what},"


def _unwrapped(function: Any) -> Any:
    """The function under its decorators (``functools.wraps`` chains)."""
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
    return function


_ALLOWED, _FORBIDDEN, _FORBIDDEN_IF_TRANSPOSED, _ENGINE_ONLY = 0, 1, 2, 3
_OP_VERDICTS: dict[int, int] = {}  # by id: torch keeps every OpOverload alive once created


def _op_verdict(func: Any) -> int:
    name = func._schema.name
    if name == "aten::convolution_backward":
        return _ENGINE_ONLY
    if name.split("::")[-1] in _TRANSPOSED_FLAG_OPS:
        return _FORBIDDEN_IF_TRANSPOSED
    return _FORBIDDEN if forbidden_kernel(name) else _ALLOWED


class _CanaryHit(Exception):
    """The guard's own probe reached its own kernel: the kernels are still in place."""


def _convolution_backward_by_unfold(
    grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
    output_padding, groups, output_mask,
):  # fmt: skip
    """``aten::convolution_backward`` of a non-transposed 1-d or 2-d convolution, from
    allowed ops: with ``cols = unfold(x)``, ``dW = dY·colsᵀ``, ``dx = fold(Wᵀ·dY)``,
    ``db = Σ dY``, group by group."""
    if transposed or input.dim() not in (3, 4):
        raise NotImplementedError("the grader's convolution backward: 1-d or 2-d only")
    one_d = input.dim() == 3
    if one_d:
        grad_output, input, weight = (t.unsqueeze(2) for t in (grad_output, input, weight))
        stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
    n, c, h, w = input.shape
    out_channels, _, kh, kw = weight.shape
    blocks = dict(dilation=tuple(dilation), padding=tuple(padding), stride=tuple(stride))
    cols = F.unfold(input, (kh, kw), **blocks)
    length = cols.shape[-1]
    dy = grad_output.reshape(n, groups, out_channels // groups, length)
    cols = cols.reshape(n, groups, -1, length)
    grad_weight = torch.einsum("ngol,ngkl->gok", dy, cols).reshape(weight.shape)
    kernel = weight.reshape(groups, out_channels // groups, -1)
    grad_cols = torch.einsum("gok,ngol->ngkl", kernel, dy).reshape(n, -1, length)
    grad_input = F.fold(grad_cols, (h, w), (kh, kw), **blocks)
    grad_bias = grad_output.sum((0, 2, 3))
    if one_d:
        grad_input, grad_weight = grad_input.squeeze(2), grad_weight.squeeze(2)
    return grad_input, grad_weight, grad_bias


class _ProcessLayer:
    """The guard's process-wide half, shared by every ``ForbiddenKernelGuard``.

    * ``torch.library`` kernels in place of every forbidden op (all namespaces, all keys):
      they catch other threads, a popped or disabled mode and ``torch.inference_mode``;
    * a profile hook on the arming thread and on every thread started after it: it refuses
      torch's Python decompositions of the forbidden ops, and notices, before they run, the
      calls that would take a layer off (``sys.setprofile``, ``_pop_mode``,
      ``Library._destroy``, ``gc.get_objects``, a thread started without the hook...);
    * canary probes (the guard's own calls of forbidden ops, which must reach its kernels).

    Each layer checks the others while a graded call runs: the mode checks the hook at every
    op and probes the kernels every 1024 ops; the checked kernels check that the mode is in
    place. Everything reached is noted in ``record`` and in every watching guard.

    What in-process code can still undo: native code (``ctypes``, a compiled extension) can
    call libtorch's kernels directly or take the hook off unseen (the static scan marks it
    "needs a look"); Python that reaches the guard's objects through a traceback's frames
    can rewrite their attributes (its record, its tables) with no call for the hook to see.
    Neither computes a forbidden op through the dispatcher while the kernels are in place.
    """

    def __init__(self) -> None:
        import threading

        self.depth = 0
        self.libraries: list[Any] = []
        self.record: list[str] = []  # everything refused since the layer was armed
        self.outside_calls: list[str] = []  # ... while no graded call was being watched
        self.watches: dict[int, ForbiddenKernelGuard] = {}  # by thread
        self.hook = self._watch_calls
        self.quiet_thread: int | None = None  # the guard's own probes and (dis)arming
        self._previous_profiles: tuple[Any, Any] = (None, None)
        self._get_ident = threading.get_ident
        self._threading = threading
        self._engine_chain: tuple[Any, ...] | None = None
        self._tamper_builtins: dict[Any, str] = {}
        self._tamper_codes: dict[Any, str] = {}

    # --- noting and refusing ----------------------------------------------------------

    def note(self, name: str) -> None:
        self.record.append(name)
        if not self.watches:
            self.outside_calls.append(name)
        for guard in list(self.watches.values()):
            guard.reached.append(name)

    def refuse(self, name: str) -> None:
        if self.quiet_thread == self._get_ident():
            raise _CanaryHit(name)
        self.note(name)
        raise ForbiddenKernelError(name)

    # --- the kernels --------------------------------------------------------------------

    def _kernel_for(self, name: str, key: str) -> Callable[..., Any]:
        if name == "aten::_convolution":
            original = torch.ops.aten._convolution.default
            explicit = torch._C.DispatchKey.CompositeExplicitAutograd

            def convolution_kernel(*args, **kwargs):
                transposed = args[6] if len(args) > 6 else kwargs.get("transposed", False)
                if transposed:
                    self.refuse("aten::_convolution(transposed=True)")
                self.check_mode(sys._getframe(1))
                return original._op_dk(explicit, *args, **kwargs)

            return convolution_kernel
        if name == "aten::convolution_backward":

            def convolution_backward_kernel(*args, **kwargs):
                if not self.engine_backward(sys._getframe(1), via_mode=True):
                    self.refuse(name)
                return _convolution_backward_by_unfold(*args, **kwargs)

            return convolution_backward_kernel

        shown = _shown_name(name, key)

        def refusing_kernel(*args, **kwargs):
            self.refuse(shown)

        return refusing_kernel

    def check_mode(self, frame: Any) -> None:
        """In a watched thread, a checked kernel is reached through the guard's mode."""
        guard = self.watches.get(self._get_ident())
        if guard is None or guard._exiting:
            return
        via_mode = frame.f_code is _OPS_CALL and frame.f_back.f_code is _DISPATCH_CODE
        if not via_mode:
            self.refuse("(the guard's dispatch mode was bypassed during the graded call)")

    def engine_backward(self, frame: Any, via_mode: bool) -> bool:
        """Whether this ``convolution_backward`` is autograd's engine running the backward of
        the student's forward for the grader: the only Python frames between it and the
        grader's ``autograd.grad`` call are torch's (so no student hook or custom backward
        called it), in the gradient pass of this thread's graded call."""
        guard = self.watches.get(self._get_ident())
        token = guard._grad_frame if guard is not None else None
        if token is None or self._engine_chain is None:
            return False
        expected = ((_OPS_CALL, _DISPATCH_CODE) if via_mode else ()) + self._engine_chain
        for code in expected:
            if frame is None or frame.f_code is not code:
                return False
            frame = frame.f_back
        return frame is token

    def _learn_engine_chain(self) -> None:
        """The wrapper frames torch puts between autograd's engine and a mode's dispatch."""

        class Learner(TorchDispatchMode):
            chain: tuple[Any, ...] = ()

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten.convolution_backward.default:
                    codes, frame = [], sys._getframe(1)
                    while frame is not None and frame.f_code is not _ENGINE_RUN:
                        codes.append(frame.f_code)
                        frame = frame.f_back
                    Learner.chain = tuple(codes)
                return func(*args, **(kwargs or {}))

        weight = torch.ones(1, 1, 1, requires_grad=True)
        with Learner():
            _AUTOGRAD_GRAD(F.conv1d(torch.ones(1, 1, 2), weight).sum(), [weight])
        self._engine_chain = (*Learner.chain, _ENGINE_RUN, _AUTOGRAD_GRAD_CODE)

    # --- the profile hook ---------------------------------------------------------------

    def _watch_calls(self, frame, event, arg) -> None:
        if event == "c_call":
            if arg in self._tamper_builtins:
                self._tampering(frame, self._tamper_builtins[arg], arg)
        elif event == "call":
            code = frame.f_code
            if code in self._tamper_codes:
                self._tampering(frame, self._tamper_codes[code], code)
            elif code.co_filename in _DECOMPOSITION_FILES and _FORBIDDEN_PYTHON.search(
                code.co_name
            ):
                module = frame.f_globals.get("__name__", "torch")
                self.refuse(f"{module}.{code.co_name}")

    def _tampering(self, frame: Any, name: str, what: Any) -> None:
        ident = self._get_ident()
        if self.quiet_thread == ident or self._legitimate(frame, what, ident):
            return
        self.refuse(f"({name} during a graded stage)")

    def _legitimate(self, frame: Any, what: Any, ident: int) -> bool:
        """A guard leaving its own mode; a ``threading.Thread`` that gets the hook; the
        garbage collector finalizing a library that is not one of the armed layer's."""
        if frame.f_code is _DEL_LIBRARY_CODE:
            return all(frame.f_locals.get("m") is not library.m for library in self.libraries)
        if what is getattr(torch._C, "_pop_torch_dispatch_stack", None):
            what, frame = frame.f_code, frame  # legitimate only as _pop_mode's own call
        if what is _POP_MODE_CODE:
            caller = frame.f_back
            guard = self.watches.get(ident)
            return (
                guard is not None
                and guard._exiting
                and caller is not None
                and caller.f_back is not None
                and caller.f_back.f_code is _WATCHING_CODE
            )
        if what is self._threading._start_new_thread:
            threading = self._threading
            if frame.f_code is not threading.Thread.start.__code__:
                return False
            thread = frame.f_locals.get("self")
            cls = type(thread)
            return (
                threading._profile_hook is self.hook
                and cls._bootstrap is threading.Thread._bootstrap
                and cls._bootstrap_inner is threading.Thread._bootstrap_inner
                and not {"_bootstrap", "_bootstrap_inner"} & set(_instance_dict(thread))
            )
        return False

    # --- arming ---------------------------------------------------------------------------

    def arm(self) -> None:
        """One more user of the layer; the first registers the kernels and sets the hook."""
        self.depth += 1
        if self.depth > 1:
            return
        ident = self._get_ident()
        self.quiet_thread = ident
        try:
            if self._engine_chain is None:
                self._learn_engine_chain()
                self._tamper_builtins = _tamper_builtins()
                self._tamper_codes = _tamper_codes()
            libraries: dict[str, Any] = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns that a kernel is overridden
                for name, key in _kernel_override_targets():
                    namespace, overload = name.split("::", 1)
                    if namespace not in libraries:
                        libraries[namespace] = torch.library.Library(namespace, "IMPL")
                    libraries[namespace].impl(overload, self._kernel_for(name, key), key)
            self.libraries = list(libraries.values())
            self.record, self.outside_calls = [], []
            self._previous_profiles = (_GETPROFILE(), self._threading.getprofile())
            self._threading.setprofile(self.hook)
            sys.setprofile(self.hook)
        finally:
            self.quiet_thread = None

    def disarm(self) -> None:
        """One user fewer; the last removes the kernels and the hook."""
        self.depth -= 1
        if self.depth > 0:
            return
        self.quiet_thread = self._get_ident()
        try:
            sys.setprofile(self._previous_profiles[0])
            self._threading.setprofile(self._previous_profiles[1])
            for library in self.libraries:
                with contextlib.suppress(Exception):  # already destroyed by a submission
                    library._destroy()
            _run_finalizers(self.libraries)
            self.libraries = []
        finally:
            self.quiet_thread = None

    def intact(self) -> list[str]:
        """What is missing of the layer now, in the calling thread (empty when intact)."""
        missing = []
        if _GETPROFILE() is not self.hook:
            missing.append("(the guard's profile hook was removed)")
        if any(library.m is None for library in self.libraries) or not self._probes_hit():
            missing.append("(the guard's kernels were removed)")
        return missing

    def _probes_hit(self) -> bool:
        z = torch.zeros(1, 1, 1)
        probes = (
            lambda: torch.ops.aten.upsample_nearest1d.default(z, [2]),
            lambda: torch.ops.aten._convolution.default(
                z, z, None, [1], [0], [1], True, [0], 1, False, False, True, True
            ),
            lambda: torch.ops.aten.conv_tbc_backward(z, z, z, z, 0),
        )
        self.quiet_thread = self._get_ident()
        try:
            for probe in probes:
                try:
                    with torch._C._DisableTorchDispatch():
                        probe()
                    return False
                except _CanaryHit:
                    pass
                except Exception:
                    return False
        finally:
            self.quiet_thread = None
        return True

    def check_intact(self) -> None:
        """Note and raise what is missing of the layer (called during the graded call)."""
        for missing in self.intact():
            self.refuse(missing)


def _instance_dict(value: Any) -> dict[str, Any]:
    """An object's instance dict read through ``object``'s own slot, not its class's."""
    try:
        return object.__getattribute__(value, "__dict__")
    except AttributeError:
        return {}


def _run_finalizers(libraries: list[Any]) -> None:
    """Run torch's finalizers of the guard's retired libraries now, quietly: run by the
    garbage collector later, in a graded call, they would look like tampering."""
    import weakref

    retired = {id(library) for library in libraries}
    for finalizer in list(weakref.finalize._registry):
        target = finalizer.peek()
        if target is not None and id(target[0]) in retired:
            finalizer()


_DEL_LIBRARY_CODE = torch.library._del_library.__code__
_LAYER = _ProcessLayer()


class ForbiddenKernelGuard(TorchDispatchMode):
    """Refuses torch's forbidden kernels during a graded call, whatever the route.

    Per call, a dispatch mode: every op called in this thread passes through
    ``__torch_dispatch__`` (CompositeImplicit ops lowered, backward ops that autograd runs
    included); it names the op as the student wrote it. Under it, the process-wide layer
    (``_ProcessLayer``: kernels, profile hook, probes), armed by ``watching()`` or, for a
    whole stage, by ``stage_guard()``.

    A forbidden op raises ``ForbiddenKernelError`` and is remembered in ``reached``, so a
    submission that catches the error is still caught. Autograd's own
    ``convolution_backward`` is let through only in the gradient pass (``gradients``), and
    only when no Python frame but torch's lies between it and the grader's ``autograd.grad``:
    a student's custom backward or hook that calls it is refused, and the gradient is then
    computed by the guard's own kernel from allowed ops (``unfold``/``fold``/``einsum``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.reached: list[str] = []
        self._ops = 0
        self._exiting = False
        self._grad_frame: Any = None
        self._gradients_taken = False
        self._owner: Any = None  # the grader's frame that may ask for the gradients

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # Every op of a plain-loop answer comes through here: decide once per op.
        verdict = _OP_VERDICTS.get(id(func))
        if verdict is None:
            verdict = _OP_VERDICTS[id(func)] = _op_verdict(func)
        self._ops += 1
        if not self._ops & 1023 or _GETPROFILE() is not _LAYER.hook:
            _LAYER.check_intact()
        if verdict == _ENGINE_ONLY:
            if not _LAYER.engine_backward(sys._getframe(1), via_mode=False):
                _LAYER.refuse(func._schema.name)
        elif verdict and (
            verdict == _FORBIDDEN or forbidden_kernel(func._schema.name, args, kwargs)
        ):
            name = func._schema.name
            if verdict == _FORBIDDEN_IF_TRANSPOSED:
                name += "(transposed=True)"
            _LAYER.refuse(name)
        return func(*args, **(kwargs or {}))

    def gradients(self, out: torch.Tensor, wrt: list[torch.Tensor], grad_output: torch.Tensor):
        """``autograd.grad`` of the student's output, under the guard: once per call, and only
        for ``_student_grads`` called by a ``_run_*`` of this guard's ``run_student``."""
        caller = sys._getframe(1)
        runner = caller.f_back
        if (
            self._gradients_taken
            or _LAYER.watches.get(_LAYER._get_ident()) is not self
            or caller.f_code is not _STUDENT_GRADS_CODE
            or runner is None
            or runner.f_back is not self._owner
        ):
            _LAYER.refuse("(a gradient pass asked for by the submission)")
        self._gradients_taken = True
        self._grad_frame = sys._getframe()
        try:
            return _AUTOGRAD_GRAD(out, wrt, grad_output, allow_unused=True)
        finally:
            self._grad_frame = None

    @contextlib.contextmanager
    def watching(self) -> Iterator[ForbiddenKernelGuard]:
        """Run a block under the guard; raise ``ForbiddenKernelError`` afterwards if the block
        reached a forbidden kernel (even if it caught the error) or switched the guard off.

        Inside ``stage_guard()`` the process-wide layer is the stage's; a guard watching
        inside another guard's watch, in the same thread, is refused."""
        ident = _LAYER._get_ident()
        if ident in _LAYER.watches:
            _LAYER.refuse("(a graded call inside a graded call)")
        _LAYER.arm()
        _LAYER.watches[ident] = self
        previous_profile = _GETPROFILE()
        try:
            try:
                _LAYER.quiet_thread = ident
                sys.setprofile(_LAYER.hook)  # this thread may predate the stage's hook
                _LAYER.quiet_thread = None
                with self:
                    try:
                        yield self
                        if self not in _get_current_dispatch_mode_stack():
                            self.reached.append("(the kernel guard was switched off)")
                    finally:
                        self._exiting = True
                for missing in _LAYER.intact():
                    self.reached.append(missing)
            finally:
                del _LAYER.watches[ident]
                if _LAYER.depth > 1:
                    _LAYER.quiet_thread = ident
                    sys.setprofile(previous_profile)
                    _LAYER.quiet_thread = None
                _LAYER.disarm()
        except ForbiddenKernelError:
            raise
        except BaseException as error:
            if self.reached:
                raise ForbiddenKernelError(self.reached[0]) from error
            raise
        if self.reached:
            raise ForbiddenKernelError(self.reached[0])


_DISPATCH_CODE = _unwrapped(ForbiddenKernelGuard.__dict__["__torch_dispatch__"]).__code__
_WATCHING_CODE = _unwrapped(ForbiddenKernelGuard.watching).__code__
_POP_MODE_CODE = _unwrapped(sys.modules["torch.utils._python_dispatch"]._pop_mode).__code__


@dataclass
class StageRecord:
    """What the guard saw during a ``stage_guard()``: every refusal, those that happened
    while no graded call was watched, and whether the layer was still in place at the end."""

    reached: list[str] = field(default_factory=list)
    outside_calls: list[str] = field(default_factory=list)
    intact: bool = True


@contextlib.contextmanager
def stage_guard() -> Iterator[StageRecord]:
    """Keep the guard's process-wide layer armed for a whole graded stage.

    The kernels in place of the forbidden ops (every namespace) and the profile hook (this
    thread and every thread started later) stay armed from entry to exit, so student code
    that runs between graded calls (a thread, a ``__del__``, a weakref callback) meets them
    too. ``run_student``'s per-call ``watching()`` nests inside it: it adds its dispatch mode
    and its own record, and neither registers nor removes the layer.

    At exit the yielded ``StageRecord`` holds every refusal of the stage. It raises
    ``ForbiddenKernelError`` when the layer was found disarmed (a kernel or the hook gone)
    or when a forbidden op or a tampering call was reached while no graded call was
    watched; refusals inside a graded call have already failed that call.

    The layer refuses torch's forbidden ops for the whole process, the grader's own calls
    included: compute inputs and references (``make_inputs``, ``reference_outputs``)
    before the stage or on the trusted side.
    """
    record = StageRecord()
    _LAYER.arm()
    try:
        yield record
    finally:
        missing = _LAYER.intact()
        record.reached = list(_LAYER.record) + missing
        record.outside_calls = list(_LAYER.outside_calls)
        record.intact = not missing
        _LAYER.disarm()
    if record.outside_calls or missing:
        raise ForbiddenKernelError((record.outside_calls + missing)[0])


def warm_up() -> None:
    """Pay the guard's one-time cost now (torch imports its compiler stack, seconds, the first
    time any dispatch mode is entered): a grader that forks workers calls this first."""
    with ForbiddenKernelGuard().watching():
        torch.ones(1) + 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence warnings and stderr: nbgrader zeroes a test cell that writes to stderr."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _type_name(value: Any) -> str:
    """``module.QualName`` of a value's real type, without running any of its code."""
    cls = type(value)
    module = _TYPE_MODULE(cls)
    return f"{module if type(module) is str else '?'}.{_TYPE_NAME(cls)}"


def _frozen(value: Any) -> Any:
    """A private copy of a result, taken while the guard is still armed.

    Only a plain ``torch.Tensor`` (exact type) is kept, as a detached clone nobody else holds:
    the student's code may run again later and write into the tensor it returned. Anything
    else becomes a ``NotATensor``, which ``compare`` rejects, so none of its code runs later.
    """
    if type(value) is torch.Tensor:
        return _CLONE(_DETACH(value))
    return NotATensor(_type_name(value))


def _student_grads(
    case: Case,
    out: Any,
    wrt: dict[str, torch.Tensor],
    grad_output: torch.Tensor,
    guard: ForbiddenKernelGuard,
) -> dict[str, Any]:
    """Autograd of the student's output, under the guard (see ``ForbiddenKernelGuard``)."""
    if type(out) is not torch.Tensor or not _REQUIRES_GRAD(out):
        # No gradient at all: compare accepts that only where torch's gradients are all zero
        # (an output no input reaches), and otherwise explains it.
        return {}
    if tuple(out.shape) != tuple(grad_output.shape):
        # The upstream gradient has torch's output shape: autograd would only say it does
        # not fit. compare reports the output's shape, which is the student's bug.
        return {}
    names = list(wrt)
    try:
        grads = guard.gradients(out, [wrt[n] for n in names], grad_output)
    except RuntimeError as error:
        if isinstance(error, ForbiddenKernelError):
            raise
        raise SubmissionError(f"autograd could not differentiate your output: {error}") from error
    return {f"grad_{n}": _frozen(g) for n, g in zip(names, grads, strict=True) if g is not None}


_STUDENT_GRADS_CODE = _student_grads.__code__


def run_student(case: Case, implementation: Any, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Call the student's ``implementation`` on copies of ``inputs``, under the kernel guard.

    Everything the grader does with a student object (the call, its backward, ``copy_`` into
    its parameters, ``.to``, reading its attributes) runs inside one ``watching()``, and every
    value is copied out by exact type before it ends (``_frozen``): plain tensors as private
    clones, anything else as a ``NotATensor``.

    Returns the same keys as ``reference_outputs``. Raises ``ForbiddenKernelError`` when the
    call reaches a forbidden kernel, ``SubmissionError`` when the object lacks the promised
    form (a module without ``.weight``, an output autograd cannot differentiate), and lets the
    student's own exceptions through. An ``int`` from ``output_length`` comes back as a 0-d
    int64 tensor; ``compare`` does the type checks.
    """
    x = {k: _CLONE(_DETACH(v)) for k, v in inputs.items()}
    run = _RUNS.get(case.target)
    if run is None:
        raise ValueError(f"unknown target {case.target!r}")
    guard = ForbiddenKernelGuard()
    guard._owner = sys._getframe()
    with _quiet(), guard.watching():
        return run(case, implementation, x, guard)


def _run_output_length(case, implementation, x, guard) -> dict[str, Any]:
    args = dict(case.params["args"])
    length, kernel_size = args.pop("L"), args.pop("kernel_size")
    result = implementation(length, kernel_size, **args)
    if type(result) is int:
        result = torch.tensor(result, dtype=torch.int64)
    return {"output": _frozen(result)}


def _run_conv1d_matrix(case, implementation, x, guard) -> dict[str, Any]:
    return {"output": _frozen(implementation(x["kernel"], int(case.params["input_length"])))}


def _run_coverage_map(case, implementation, x, guard) -> dict[str, Any]:
    args = [_as_call_value(case.params[k]) for k in ("kernel_size", "stride", "input_size")]
    return {"output": _frozen(implementation(*args))}


def _run_interpolate(case, implementation, x, guard) -> dict[str, Any]:
    grad = case.params.get("grad")
    if grad:
        _REQUIRES_GRAD_(x["input"], True)
    out = implementation(x["input"], **_call_kwargs(case))
    outputs = {"output": _frozen(out)}
    if grad:
        outputs.update(_student_grads(case, out, {"input": x["input"]}, x["grad_output"], guard))
    return outputs


def _run_conv(case, implementation, x, guard) -> dict[str, Any]:
    p = case.params
    wrt = {k: x[k] for k in ("input", "weight", "bias") if k in x} if p.get("grad") else {}
    for tensor in wrt.values():
        _REQUIRES_GRAD_(tensor, True)
    kwargs = _call_kwargs(case)
    bias = x.get("bias")
    if p.get("positional"):
        order = [kwargs.get(k, d) for k, d in zip(_CONV_KWARGS, (1, 0, 0, 1, 1), strict=True)]
        out = implementation(x["input"], x["weight"], bias, *order)
    elif bias is not None or p.get("bias_none"):
        out = implementation(x["input"], x["weight"], bias, **kwargs)
    else:
        out = implementation(x["input"], x["weight"], **kwargs)
    outputs = {"output": _frozen(out)}
    if wrt:
        outputs.update(_student_grads(case, out, wrt, x["grad_output"], guard))
    return outputs


def _registered(module: Any, table: str, name: str) -> tuple[bool, Any]:
    """``module.<name>`` as nn.Module stores it (``_parameters``/``_modules``, else the
    instance dict), read without any ``__getattr__``, property or descriptor of the student's."""
    attributes = _INSTANCE_DICT(module)
    registered = attributes.get(table)
    if type(registered) is dict and name in registered:
        return True, registered[name]
    return name in attributes, attributes.get(name)


def _parameter(module: Any, name: str, where: str) -> Any:
    """The ``nn.Parameter`` (exact type) or None registered as ``module.<name>``."""
    found, param = _registered(module, "_parameters", name)
    if param is None:
        return None
    if type(param) is not nn.Parameter:
        kind = "a subclass of nn.Parameter" if isinstance(param, nn.Parameter) else "not one"
        raise SubmissionError(
            f"{where}.{name} is a {_type_name(param)} ({kind}): make it an nn.Parameter "
            "(self.{name} = nn.Parameter(...)) so that module.parameters() and optimisers see it"
        )
    return param


def _run_module(case, implementation, x, guard) -> dict[str, Any]:
    p = case.params
    init = dict(p["init"])
    head = [init.pop(k) for k in ("in_channels", "out_channels", "kernel_size")]
    module = implementation(*head, **{k: _as_call_value(v) for k, v in init.items()})
    if not issubclass(type(module), nn.Module):
        raise SubmissionError(f"ConvTranspose1d(...) gave a {_type_name(module)}, not an nn.Module")
    weight = _parameter(module, "weight", "module")
    bias = _parameter(module, "bias", "module")
    outputs: dict[str, Any] = {}
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None:
            outputs[f"initial_{name}"] = _CLONE(_DETACH(param))
    if weight is None:
        raise SubmissionError("the module has no .weight")
    if (
        tuple(weight.shape) != tuple(x["weight"].shape)
        or (bias is not None and "bias" in x and tuple(bias.shape) != tuple(x["bias"].shape))
        or (bias is None) != ("bias" not in x)
    ):
        return outputs  # compare explains the parameter shapes; no forward with the wrong ones
    with torch.no_grad():
        _COPY(weight, x["weight"])
        if bias is not None:
            _COPY(bias, x["bias"])
    if p.get("grad"):
        _REQUIRES_GRAD_(x["input"], True)
    if "output_size" in p:
        out = module(x["input"], output_size=list(p["output_size"]))
    else:
        out = module(x["input"])
    outputs["output"] = _frozen(out)
    if p.get("grad"):
        wrt = {"input": x["input"], "weight": weight}
        if bias is not None:
            wrt["bias"] = bias
        outputs.update(_student_grads(case, out, wrt, x["grad_output"], guard))
    return outputs


def _resize_conv_parts(module: Any, nic: int, noc: int) -> tuple[Any, Any]:
    """The ``.conv`` weight and bias of a student's ResizeConv2d, checked."""
    conv = _registered(module, "_modules", "conv")[1]
    if not issubclass(type(conv), nn.Conv2d):
        raise SubmissionError(
            "ResizeConv2d needs an attribute .conv = nn.Conv2d(in, out, 3, padding=1)"
        )
    weight = _parameter(conv, "weight", "module.conv")
    bias = _parameter(conv, "bias", "module.conv")
    if weight is None or tuple(weight.shape) != (noc, nic, 3, 3) or bias is None:
        shape = tuple(weight.shape) if weight is not None else None
        raise SubmissionError(
            f"ResizeConv2d({nic}, {noc}).conv has weight {shape} and "
            f"{'no ' if bias is None else ''}bias: expected nn.Conv2d({nic}, {noc}, 3, padding=1)"
        )
    return weight, bias


def _run_resize_conv(case, implementation, x, guard) -> dict[str, Any]:
    nic, noc = case.params["init"]
    module = implementation(nic, noc)
    if not issubclass(type(module), nn.Module):
        raise SubmissionError(f"ResizeConv2d(...) gave a {_type_name(module)}, not an nn.Module")
    _resize_conv_parts(module, nic, noc)
    with torch.no_grad():
        module.to(x["input"].dtype)
        weight, bias = _resize_conv_parts(module, nic, noc)  # .to may have replaced them
        _COPY(weight, x["conv_weight"])
        _COPY(bias, x["conv_bias"])
    return {"output": _frozen(module(x["input"]))}


_RUNS = {
    "output_length": _run_output_length,
    "conv1d_matrix": _run_conv1d_matrix,
    "coverage_map": _run_coverage_map,
    "conv_transpose1d": _run_conv,
    "conv_transpose2d": _run_conv,
    "ConvTranspose1d": _run_module,
    "interpolate": _run_interpolate,
    "ResizeConv2d": _run_resize_conv,
}


# --------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------


def _flatten(nested: Any) -> list:
    if not isinstance(nested, list):
        return [nested]
    flat: list = []
    stack = [nested]
    while stack:  # iterative: depth is small but lists may be long
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _values(tensor: torch.Tensor) -> list:
    """The values as a flat Python list, read from a detached CPU copy."""
    return _flatten(_TOLIST(_CPU(_DETACH(tensor))))


def _unravel(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for n in reversed(shape):
        out.append(index % n if n else 0)
        index = index // n if n else 0
    return tuple(reversed(out))


def _tolerance(dtype: torch.dtype, expected: list) -> tuple[float, float]:
    """(atol, rtol): float32 ~1e-4 and float64 ~1e-9, scaled to the values' magnitude."""
    scale = max([1.0] + [abs(v) for v in expected])
    if dtype == torch.float64:
        return 1e-9 * scale, 1e-9
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        return 1e-4 * scale, 1e-4
    return 0.0, 0.0


@dataclass
class _Mismatch:
    """Where two tensors differ most, whether any value is out of tolerance, and the
    tolerance: |actual − expected| ≤ atol + rtol·|expected| per value."""

    error: float
    where: tuple[int, ...]
    expected: float
    actual: float
    bad: bool
    atol: float = 0.0
    rtol: float = 0.0

    def tolerance_text(self) -> str:
        """The rule the values were held to, with the numbers of the worst value."""
        if not self.atol and not self.rtol:
            return "the values must be exact"
        allowed = self.atol + self.rtol * abs(self.expected)
        return (
            f"tolerance atol + rtol·|expected| = {self.atol:.3g} + {self.rtol:.0e}·"
            f"{abs(self.expected):.6g} = {allowed:.3g} there"
        )


def _closeness(
    expected: torch.Tensor,
    actual: torch.Tensor,
    slack: float = 1.0,
    dtype: torch.dtype | None = None,
) -> _Mismatch:
    """Largest absolute error and whether any value is out of tolerance (that of ``dtype``,
    by default the expected tensor's), in plain Python."""
    e_vals, a_vals = _values(expected), _values(actual)
    atol, rtol = _tolerance(dtype or expected.dtype, e_vals)
    worst = _Mismatch(-1.0, (), 0.0, 0.0, False, slack * atol, slack * rtol)
    worst_index = 0
    for i, (e, a) in enumerate(zip(e_vals, a_vals, strict=True)):
        e, a = float(e), float(a)
        error = abs(a - e) if math.isfinite(a) else math.inf
        if error > worst.error:
            worst_index, worst.error, worst.expected, worst.actual = i, error, e, a
        if error > slack * (atol + rtol * abs(e)):
            worst.bad = True
    worst.where = _unravel(worst_index, tuple(expected.shape))
    return worst


def _close(expected: torch.Tensor, actual: Any, slack: float = 10.0) -> bool:
    """Same shape and values within ``slack`` times the tolerance (for the diagnosis)."""
    if type(actual) is not torch.Tensor or tuple(actual.shape) != tuple(expected.shape):
        return False
    try:
        return not _closeness(expected, actual.to(expected.dtype), slack).bad
    except (TypeError, ValueError, RuntimeError):
        return False


def _type_problem(key: str, value: Any, target: str) -> str | None:
    if type(value) is torch.Tensor:
        return None
    if isinstance(value, NotATensor):
        name = value.type_name
    else:
        name = f"{type(value).__module__}.{type(value).__qualname__}"
    if target == "output_length" and key == "output":
        return f"output_length returned a {name}, expected an int"
    if isinstance(value, torch.Tensor) or "Tensor" in name or "Parameter" in name:
        return f"{key} is a {name}, a subclass of torch.Tensor: return a plain torch.Tensor"
    return f"{key} is a {name}, expected a plain torch.Tensor"


def compare(
    case: Case,
    inputs: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    actual: dict[str, Any] | BaseException,
) -> Verdict:
    """Compare the student's ``actual`` outputs with torch's ``expected`` ones.

    Requires plain ``torch.Tensor`` values of the exact shape and dtype, finite, and close
    to the reference (tolerance by dtype). On failure the message names the parameters,
    the expected and actual shape, the largest error, and the likely bug when one of the
    known mistakes reproduces the output.

    ``actual`` may also be the exception the student's call raised: it passes when torch
    raises too (``expected == {}``), except ``ForbiddenKernelError``, which always fails.
    """
    call = case.describe()
    if isinstance(actual, ForbiddenKernelError):
        message = f"{call}: {actual}{_student_line(actual)}"
        return Verdict(False, message, f"forbidden kernel {actual.kernel}")
    if isinstance(actual, BaseException):
        text = str(actual).strip()
        raised = type(actual).__name__ + (f": {text.splitlines()[0]}" if text else "")
        if not expected:
            return Verdict(True, f"{call}: raises ({raised}), as torch does")
        shape = tuple(expected["output"].shape) if "output" in expected else None
        message = (
            f"{call}: your code raised {raised}; torch returns "
            f"{'shape ' + str(shape) if shape is not None else 'a result'}"
        )
        explanation = _error_hint(case, text)
        if explanation:
            message += f"\n  likely bug: {explanation}"
        return Verdict(False, message + _student_line(actual), explanation)
    if not expected:
        reason = _torch_error(case, inputs) or "an error"
        got = actual.get("output") if isinstance(actual, dict) else actual
        if type(got) is torch.Tensor and got.dim() == 0:
            got_text = repr(_TOLIST(got))
        elif isinstance(got, torch.Tensor):
            got_text = f"a tensor of shape {tuple(got.shape)}"
        else:
            got_text = f"a {type(got).__name__}"
        hint = _raise_hint(case)
        return Verdict(
            False,
            f"{call}: torch raises here ({reason}) but your code returned {got_text}.{hint}",
            "should raise",
        )
    if not isinstance(actual, dict):
        return Verdict(
            False, f"{call}: internal: expected a dict of outputs, got {type(actual).__name__}"
        )
    order = ["initial_weight", "initial_bias", "output", "grad_input", "grad_weight", "grad_bias"]
    keys = [k for k in order if k in expected] + [k for k in expected if k not in order]
    for key in keys:
        if key not in actual:
            if key.startswith("grad_") and not any(_values(expected[key])):
                continue  # torch's gradient is all zero: no gradient at all says the same
            return _fail(case, inputs, expected, actual, key, _missing_message(case, key))
        problem = _type_problem(key, actual[key], case.target)
        if problem:
            return _fail(case, inputs, expected, actual, key, problem)
        if key.startswith("initial_"):
            message = _check_initialisation(case, key, expected[key], actual[key])
            if message:
                return _fail(case, inputs, expected, actual, key, message)
            continue
        message = _check_tensor(key, expected[key], actual[key])
        if message:
            return _fail(case, inputs, expected, actual, key, message)
    extra = [k for k in actual if k not in expected and k in ("initial_bias",)]
    if extra:
        return Verdict(
            False,
            f"{call}: the module has a bias although bias=False was asked: "
            "set self.bias = None (self.register_parameter('bias', None))",
            "bias should be None",
        )
    return Verdict(True, f"{call}: ok")


def _error_hint(case: Case, text: str) -> str | None:
    """What an error of torch's, raised inside the student's code, means for this case."""
    mixed = re.search(r"dtype|scalar type|type \(|Tensor\)", text) and (
        re.search(r"double", text, re.IGNORECASE) and re.search(r"float(?!64)", text, re.IGNORECASE)
    )
    if mixed:
        dtype = case.params.get("dtype", "float32")
        culprits = (
            "torch.zeros, torch.ones, torch.arange and torch.tensor of Python floats give "
            "float32 unless told otherwise"
            if dtype == "float64"
            else "a .double(), or a tensor made from NumPy values, is float64"
        )
        return (
            "torch refused to mix float32 and float64 tensors in one operation: this "
            f"case's tensors are {dtype}, and a tensor your code made is in the other dtype "
            f"({culprits}). Make each with dtype=input.dtype."
        )
    return None


def _student_line(error: BaseException) -> str:
    """Where the student's code raised: the deepest frame of it under the graded call
    (cell and line, as Jupyter names them, and the line's source), or ''."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [i for i, frame in enumerate(frames) if _is_this_file(frame.filename)]
    if not ours:  # not raised under a graded call of this process (the CI grader's copy)
        return ""
    theirs = [frame for frame in frames[ours[0] + 1 :] if not _library_file(frame.filename)]
    if not theirs:
        return ""
    frame = theirs[-1]
    where = f"{_cell_name(frame.filename, frame.lineno)}, in {frame.name}"
    source = (frame.line or "").strip()
    return f"\n  in your code: {where}" + (f"\n    {source}" if source else "")


def _site_packages() -> list[str]:
    import site

    with contextlib.suppress(AttributeError):  # a virtualenv's old site module lacks it
        return list(site.getsitepackages())
    return []


_THIS_FILE = os.path.realpath(__file__) if "__file__" in globals() else ""
_LIBRARY_DIRS = tuple(
    {
        os.path.realpath(path)
        for path in (
            os.path.dirname(torch.__file__),
            *(sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib")),
            sysconfig.get_paths()["platlib"],
            *_site_packages(),
        )
    }
)


def _is_this_file(filename: str) -> bool:
    return bool(_THIS_FILE) and os.path.realpath(filename) == _THIS_FILE


def _library_file(filename: str) -> bool:
    """This file, torch's, Python's own or an installed package's: not the student's."""
    if filename.startswith("<frozen") or _is_this_file(filename):
        return True
    path = os.path.realpath(filename) if not filename.startswith("<") else filename
    return path.startswith(tuple(directory + os.sep for directory in _LIBRARY_DIRS))


def _cell_name(filename: str, line: int | None) -> str:
    """``Cell In[4], line 12`` for a Jupyter cell (as IPython names it), else the file's."""
    shell = None
    if "IPython" in sys.modules:
        with contextlib.suppress(Exception):
            shell = sys.modules["IPython"].get_ipython()
    named = None
    if shell is not None:
        with contextlib.suppress(Exception):
            named = shell.compile.format_code_name(filename)
    if named:
        return f"{named[0]} {named[1]}, line {line}"
    old_style = re.match(r"<ipython-input-(\d+)-", filename)
    if old_style:
        return f"Cell In[{old_style.group(1)}], line {line}"
    return f'File "{filename}", line {line}'


def _raise_hint(case: Case) -> str:
    if "output_size" in case.params:
        return (
            " Raise an error (ValueError) when no output_padding from 0 to stride − 1 gives "
            "output_size, as torch does."
        )
    if case.target in ("output_length", "conv_transpose1d", "conv_transpose2d", "ConvTranspose1d"):
        return (
            " Raise an error (ValueError) when output_padding >= max(stride, dilation) "
            "(per dimension) or when the output length is not positive, as torch does."
        )
    if case.target == "interpolate":
        return (
            " Raise an error (ValueError) where torch raises: align_corners with a nearest "
            "mode, both or neither of size and scale_factor, a mode that does not fit the "
            "input's dimensions."
        )
    return " Raise an error where torch raises."


def _missing_message(case: Case, key: str) -> str:
    if key.startswith("grad_"):
        name = key[5:]
        return (
            f"no gradient reached {name}: the output must depend on {name} through "
            "differentiable torch operations (no .item(), .tolist(), torch.tensor(...) of "
            "Python numbers, .detach() or torch.no_grad() on the way)"
        )
    if key == "initial_bias":
        return "the module's .bias is None although bias=True: create it as an nn.Parameter"
    return f"no {key} was produced"


def _check_tensor(key: str, expected: torch.Tensor, actual: torch.Tensor) -> str | None:
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{key} shape: expected {tuple(expected.shape)}, got {tuple(actual.shape)}"
    if actual.dtype != expected.dtype:
        hint = ""
        if expected.dtype in (torch.float32, torch.float64):
            hint = (
                " (create new tensors with dtype=input.dtype, e.g. "
                "torch.zeros(..., dtype=input.dtype))"
            )
        elif expected.dtype == torch.int64:
            hint = " (counts are integers: torch.int64)"
        return f"{key} dtype: expected {expected.dtype}, got {actual.dtype}{hint}"
    if actual.is_complex() or actual.layout != torch.strided:
        return f"{key}: expected a dense real tensor"
    if expected.numel() == 0:
        return None
    for i, v in enumerate(_values(actual)):
        if not math.isfinite(float(v)):
            where = _unravel(i, tuple(actual.shape))
            return f"{key} contains {v} at {list(where)}"
    worst = _closeness(expected, actual)
    if worst.bad and expected.dim() == 0 and not expected.is_floating_point():
        return f"{key}: expected {_TOLIST(expected)!r}, got {_TOLIST(actual)!r}"
    if worst.bad:
        shown_expected, shown_actual = _distinct_digits(worst.expected, worst.actual)
        return (
            f"{key} values differ: largest absolute error {worst.error:.3g} at "
            f"{list(worst.where)} (expected {shown_expected}, got {shown_actual}; "
            f"{worst.tolerance_text()}); shape {tuple(expected.shape)} is right"
        )
    return None


def _distinct_digits(expected: float, actual: float) -> tuple[str, str]:
    """Both values with the fewest digits (6 at least) that tell them apart."""
    for digits in range(6, 18):
        shown = f"{expected:.{digits}g}", f"{actual:.{digits}g}"
        if shown[0] != shown[1]:
            return shown
    return shown


def _check_initialisation(
    case: Case, key: str, expected: torch.Tensor, actual: torch.Tensor
) -> str | None:
    """Shape, dtype, and torch's rule: uniform in ±1/sqrt(fan_in), fan_in = weight.size(1)·w."""
    name = key.removeprefix("initial_")
    if tuple(actual.shape) != tuple(expected.shape) or actual.dtype != expected.dtype:
        return (
            f"module.{name} is {tuple(actual.shape)} {actual.dtype}, expected "
            f"{tuple(expected.shape)} {expected.dtype} (torch's layout: weight is "
            "(in_channels, out_channels // groups, kernel_size), bias is (out_channels,))"
        )
    init = case.params["init"]
    weight_shape = _module_weight_shape(init)
    fan_in = weight_shape[1] * weight_shape[2]
    bound = 1 / math.sqrt(fan_in)
    values = [float(v) for v in _values(actual)]
    if not all(math.isfinite(v) for v in values):
        return f"module.{name} holds non-finite values"
    largest = max((abs(v) for v in values), default=0.0)
    if largest > bound * (1 + 1e-6):
        return (
            f"module.{name} holds {largest:.4g}, outside torch's initialisation range "
            f"±1/sqrt(fan_in) = ±{bound:.4g}, fan_in = weight.size(1) · kernel_size = {fan_in}"
        )
    if len(values) >= 6 and largest < 0.25 * bound:
        return (
            f"module.{name} is not spread over ±1/sqrt(fan_in) = ±{bound:.4g} (largest "
            f"|value| {largest:.3g}): initialise it uniformly in that range, like torch"
        )
    return None


def _fail(case, inputs, expected, actual, key, problem) -> Verdict:
    diagnosis = None
    try:
        with _quiet():
            diagnosis = diagnose(case, inputs, expected, actual, key)
    except Exception:  # a diagnosis is a bonus; it must never hide the verdict
        diagnosis = None
    message = f"{case.describe()}: {problem}"
    if diagnosis:
        message += f"\n  likely bug: {diagnosis}"
    return Verdict(False, message, diagnosis)


# --------------------------------------------------------------------------------------
# Diagnosis: torch's outputs of known mistakes on the same inputs
# --------------------------------------------------------------------------------------


def diagnose(
    case: Case,
    inputs: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    actual: dict[str, Any],
    key: str = "output",
) -> str | None:
    """The likely bug, in the student's terms, when a known mistake reproduces ``actual``.

    Each candidate is torch's own function applied to the same inputs with the mistake
    made (kernel flipped, padding added instead of cropped, align_corners inverted, ...);
    a candidate that equals torch's correct answer cannot explain a failure and is
    skipped. Falls back to a shape-only hint when no candidate matches.
    """
    value = actual.get(key)
    through_float32 = _float32_hint(expected.get(key), value)
    if through_float32:
        return through_float32
    if key.startswith("grad_"):
        return _gradient_hint(key, expected, actual)
    if key.startswith("initial_"):
        return _init_hint(case, key, value)
    if type(value) is not torch.Tensor or key != "output" or "output" not in expected:
        return None
    reference = expected["output"]
    for message, make in _mistakes(case, inputs):
        try:
            candidate = make()
        except Exception:
            continue
        if candidate is None or _close(reference, candidate, 1.0):
            continue
        if _close(
            candidate.to(reference.dtype) if candidate.is_floating_point() else candidate, value
        ):
            return message
    return _shape_hint(case, inputs, reference, value)


def _float32_hint(reference: Any, value: Any) -> str | None:
    """A float64 result right to float32's precision only: a step of it was float32."""
    if (
        type(reference) is not torch.Tensor
        or type(value) is not torch.Tensor
        or reference.dtype != torch.float64
        or value.dtype != torch.float64
        or tuple(reference.shape) != tuple(value.shape)
        or reference.numel() == 0
    ):
        return None
    worst = _closeness(reference, value, slack=0.1, dtype=torch.float32)  # 1e-5, not 1e-4
    if worst.bad or worst.error <= 0:
        return None
    return (
        "the result looks like it went through float32: it agrees with torch's only to "
        f"float32's precision (largest error {worst.error:.2g}, where float64 allows about "
        "1e-9). A step of your computation is float32: a tensor made without dtype= "
        "(torch.zeros, torch.ones, torch.arange, torch.tensor of Python floats), a .float(), "
        "or a float32 constant. Make each with dtype=input.dtype."
    )


def _gradient_hint(key, expected, actual) -> str | None:
    if (
        "output" in expected
        and "output" in actual
        and _close(expected["output"], actual["output"], 1.0)
    ):
        return (
            f"your forward output is right but {key} is not: a step of your computation "
            "is not differentiated the way it is computed (detached tensors, .data, values "
            "copied through Python numbers, or a custom backward that is wrong)"
        )
    return None


def _init_hint(case: Case, key: str, value: Any) -> str | None:
    if type(value) is not torch.Tensor or case.target != "ConvTranspose1d":
        return None
    init = case.params["init"]
    expected_shape = _module_weight_shape(init)
    groups = int(init.get("groups", 1))
    if key == "initial_weight":
        swapped = (int(init["out_channels"]), int(init["in_channels"]) // groups, expected_shape[2])
        if tuple(value.shape) == swapped and swapped != expected_shape:
            return (
                "weight laid out like nn.Conv1d's (out_channels, in_channels // groups, w); "
                "a transposed convolution's weight is (in_channels, out_channels // groups, w)"
            )
        if groups > 1 and tuple(value.shape) == (
            expected_shape[0],
            int(init["out_channels"]),
            expected_shape[2],
        ):
            return "weight.size(1) is out_channels // groups, not out_channels"
        values = [abs(float(v)) for v in _values(value)]
        if values and tuple(value.shape) == expected_shape:
            wrong_fan_in = int(init["in_channels"]) // groups * expected_shape[2]
            bound = 1 / math.sqrt(expected_shape[1] * expected_shape[2])
            if bound < max(values) <= 1 / math.sqrt(wrong_fan_in) * (1 + 1e-6) and wrong_fan_in < (
                expected_shape[1] * expected_shape[2]
            ):
                return (
                    "fan_in computed from in_channels; for ConvTranspose1d torch uses "
                    "fan_in = weight.size(1) · kernel_size = out_channels // groups · w"
                )
    return None


Mistake = tuple[str, Callable[[], torch.Tensor | None]]


def _mistakes(case: Case, inputs: dict[str, torch.Tensor]) -> list[Mistake]:
    if case.target in _CONV_TARGETS or case.target == "ConvTranspose1d":
        return _conv_mistakes(case, inputs)
    if case.target == "interpolate":
        return _interpolate_mistakes(case, inputs)
    if case.target == "ResizeConv2d":
        return _resize_conv_mistakes(case, inputs)
    if case.target == "conv1d_matrix":
        return _matrix_mistakes(case, inputs)
    if case.target == "coverage_map":
        return _coverage_mistakes(case)
    if case.target == "output_length":
        return _length_mistakes(case)
    return []


@dataclass
class _ConvSetup:
    n: int
    x: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor | None
    s: tuple[int, ...]
    p: tuple[int, ...]
    op: tuple[int, ...]
    g: int
    d: tuple[int, ...]

    def run(self, x=None, w=None, b="same", s=None, p=None, op=None, g=None, d=None):
        fn = F.conv_transpose1d if self.n == 1 else F.conv_transpose2d
        return fn(
            self.x if x is None else x,
            self.w if w is None else w,
            self.b if isinstance(b, str) else b,
            self.s if s is None else s,
            self.p if p is None else p,
            self.op if op is None else op,
            self.g if g is None else g,
            self.d if d is None else d,
        )

    def bias_view(self) -> torch.Tensor:
        """The bias shaped to broadcast over the spatial dims (batched or not)."""
        return self.b.reshape(-1, *([1] * self.n)) if self.b is not None else torch.zeros(())

    def spatial(self) -> list[int]:
        return list(range(-self.n, 0))


def _conv_setup(case: Case, inputs: dict[str, torch.Tensor]) -> _ConvSetup:
    n = _spatial(case)
    if case.target == "ConvTranspose1d":
        kwargs = {k: v for k, v in case.params["init"].items() if k in _CONV_KWARGS}
    else:
        kwargs = case.params.get("kwargs", {})
    return _ConvSetup(
        n,
        inputs["input"],
        inputs["weight"],
        inputs.get("bias"),
        _tuple(kwargs.get("stride", 1), n),
        _tuple(kwargs.get("padding", 0), n),
        _tuple(kwargs.get("output_padding", 0), n),
        int(kwargs.get("groups", 1)),
        _tuple(kwargs.get("dilation", 1), n),
    )


def _pad_dims(t: torch.Tensor, before: tuple[int, ...], after: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the last len(before) dims (F.pad lists the last dim first)."""
    pad: list[int] = []
    for b, a in reversed(list(zip(before, after, strict=True))):
        pad += [b, a]
    return F.pad(t, pad)


def _crop_dims(
    t: torch.Tensor, starts: tuple[int, ...], lengths: tuple[int, ...]
) -> torch.Tensor | None:
    if any(s < 0 for s in starts):
        return None
    index = [slice(None)] * (t.dim() - len(starts))
    index += [slice(s, s + n) for s, n in zip(starts, lengths, strict=True)]
    out = t[tuple(index)]
    return out if tuple(out.shape[-len(starts) :]) == tuple(lengths) else None


def _channel_layout_mistakes(c: _ConvSetup) -> list[Mistake]:
    """The weight's channel axes rearranged wrongly on the way to a convolution's layout.

    As ``F.conv{n}d``'s weight, (C_out, C_in // groups, ...), the transposed convolution's
    weight is ``to_conv`` of it; each mistake builds another conv weight, and its output is
    torch's for the transposed weight that conv weight stands for (``from_conv``).
    """
    cin, cout_g, kernel, g = c.w.shape[0], c.w.shape[1], tuple(c.w.shape[2:]), c.g
    cin_g = cin // g

    def from_conv(conv_weight: torch.Tensor) -> torch.Tensor:
        per_group = conv_weight.reshape(g, cout_g, cin_g, *kernel).transpose(1, 2)
        return per_group.reshape(cin, cout_g, *kernel)

    def run_as_conv(conv_weight: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        return lambda: c.run(w=from_conv(conv_weight()))

    if cin_g == cout_g:
        reshaped = (
            "in_channels and out_channels are swapped in the weight layout: for a transposed "
            "convolution weight[i, o] connects input channel i to output channel o (weight is "
            "(C_in, C_out // groups, ...), the reverse of conv's): transpose its two channel "
            "axes (per group) to use it as a convolution's weight"
        )
    else:
        reshaped = (
            "the weight's channel axes were rearranged with reshape instead of transpose: "
            "reshape keeps the memory order, so (C_in, C_out // groups, ...) read as "
            "(C_out // groups, C_in, ...) mixes the channels up; use .transpose/.permute "
            "(per group: weight.reshape(groups, C_in // groups, C_out // groups, ...)"
            ".transpose(1, 2))"
        )
    mistakes = [(reshaped, run_as_conv(lambda: c.w.reshape(g * cout_g, cin_g, *kernel)))]
    if g > 1:
        mistakes.append(
            (
                "the groups are split the wrong way: the weight was transposed as a whole, "
                "then cut into groups, so each group gets another group's kernels. Group j "
                "is weight[j·C_in/g : (j+1)·C_in/g]: reshape to (groups, C_in // groups, "
                "C_out // groups, ...) first, then transpose within each group",
                run_as_conv(lambda: c.w.transpose(0, 1).reshape(g * cout_g, cin_g, *kernel)),
            )
        )
    return mistakes


def _output_padding_mistakes(c: _ConvSetup) -> list[Mistake]:
    """output_padding misplaced. Tried before the padding mistakes: where both explain the
    output (output_padding at the start with padding == output_padding is also a crop of
    2·padding at the end), the case's output_padding is the likelier cause."""
    if not any(c.op):
        return []
    zeros = (0,) * c.n
    length = tuple(c.run().shape[-c.n :])
    base = lambda: c.run(op=zeros)  # noqa: E731  (the output without output_padding)

    def shifted_window(pad_before: tuple[int, ...], pad_after: tuple[int, ...]):
        """The uncropped output, zero-extended, cropped at padding, then the bias added."""
        full = _pad_dims(c.run(p=zeros, op=zeros, b=None), pad_before, pad_after)
        size = tuple(n + a for n, a in zip(length, pad_after, strict=True))
        cropped = _crop_dims(full, c.p, size)
        return None if cropped is None else cropped + c.bias_view()

    at_start = "output_padding added at the start instead of the end"
    return [
        (
            "output_padding ignored: it adds output_padding positions at the END of the output",
            base,
        ),
        (
            "output_padding filled with zeros: the extra positions at the end hold "
            "what the full transposed convolution has there (the cropped values "
            "when padding > 0) plus the bias",
            lambda: _pad_dims(base(), zeros, c.op),
        ),
        (at_start, lambda: _pad_dims(base(), c.op, zeros)),
        (at_start, lambda: _pad_dims(base() - c.bias_view(), c.op, zeros) + c.bias_view()),
        (
            f"{at_start} (the crop window is shifted towards the start)",
            lambda: shifted_window(c.op, zeros),
        ),
        (
            "output_padding added on both sides: it extends the END only",
            lambda: _pad_dims(base(), c.op, c.op),
        ),
        (
            "output_padding added on both sides: it extends the END only",
            lambda: shifted_window(c.op, c.op),
        ),
    ]


def _padding_mistakes(c: _ConvSetup) -> list[Mistake]:
    """padding handled as a convolution's, ignored, or cropped at one end only."""
    if not any(c.p):
        return []
    zeros = (0,) * c.n
    length = tuple(c.run().shape[-c.n :])
    full_op = lambda: c.run(p=zeros)  # noqa: E731  (the uncropped result, output_padding included)
    added = (
        "padding added around the output instead of cropped: in a transposed "
        "convolution, padding p removes p positions at each end of the full result "
        "(the lecture: stride and padding are defined in the output map, and padding "
        "modulates a cropping operation)"
    )
    twice = tuple(2 * q for q in c.p)
    return [
        (added, lambda: _pad_dims(full_op(), c.p, c.p)),
        (added, lambda: _pad_dims(c.run(p=zeros, b=None), c.p, c.p) + c.bias_view()),
        (
            "padding applied to the input, as for a convolution: in a transposed "
            "convolution padding crops the output",
            lambda: c.run(x=_pad_dims(c.x, c.p, c.p), p=zeros),
        ),
        ("padding ignored: crop padding positions from each end of the output", full_op),
        (
            "the output is cropped by 2·padding at the start only: crop padding "
            "positions at EACH end",
            lambda: _crop_dims(full_op(), twice, length),
        ),
        (
            "the output is cropped by 2·padding at the end only: crop padding "
            "positions at EACH end",
            lambda: _crop_dims(full_op(), zeros, length),
        ),
    ]


def _conv_mistakes(case: Case, inputs: dict[str, torch.Tensor]) -> list[Mistake]:
    c = _conv_setup(case, inputs)
    mistakes: list[Mistake] = []
    # The output only shows that the taps come out reversed, not which way the code got
    # there: a scatter with a flipped kernel and a convolution without the flip look alike.
    reversed_taps = (
        "the kernel's taps come out in reverse order (your output is torch's with the "
        "kernel flipped): a transposed convolution adds x[i]·w[k] at output i·s + k·d − p, "
        f"w in its stored order. Computed as a convolution (F.conv{c.n}d) of the spread, "
        "zero-padded input, the kernel must be flipped exactly once: not flipping it, or "
        "flipping it twice, gives this output."
    )
    mistakes.append((reversed_taps, lambda: c.run(w=c.w.flip(c.spatial()))))
    if c.n == 2:
        for axis, name in ((-2, "rows (H)"), (-1, "columns (W)")):
            mistakes.append(
                (
                    f"the kernel's taps come out reversed along its {name} only: flip "
                    "both spatial axes or neither",
                    lambda axis=axis: c.run(w=c.w.flip([axis])),
                )
            )
    mistakes += _channel_layout_mistakes(c)
    mistakes += _output_padding_mistakes(c)
    mistakes += _padding_mistakes(c)
    if any(s > 1 for s in c.s):
        ones = (1,) * c.n

        def op_for(stride):
            limit = [max(a, b) for a, b in zip(stride, c.d, strict=True)]
            return tuple(o if o < m else 0 for o, m in zip(c.op, limit, strict=True))

        def strided_conv():
            full = c.run(s=ones, op=op_for(ones))
            index = [slice(None)] * (full.dim() - c.n) + [slice(None, None, s) for s in c.s]
            return full[tuple(index)]

        mistakes.append(
            (
                "stride used like a convolution's stride (keeping every s-th output): in a "
                "transposed convolution the stride spreads the INPUT apart, input i lands at output "
                "i·s (insert s − 1 zeros between input samples, then convolve)",
                strided_conv,
            )
        )
        mistakes.append(
            (
                "stride ignored: input i must land at output i·s",
                lambda: c.run(s=ones, op=op_for(ones)),
            )
        )
        plus = tuple(s + 1 for s in c.s)
        mistakes.append(
            (
                "s zeros inserted between input samples instead of s − 1 (input i "
                "must land at output i·s)",
                lambda: c.run(s=plus, op=op_for(plus)),
            )
        )
    if any(d > 1 for d in c.d):
        ones = (1,) * c.n
        limit = [max(s, 1) for s in c.s]
        op_ok = tuple(o if o < m else 0 for o, m in zip(c.op, limit, strict=True))
        mistakes.append(
            (
                "dilation ignored: kernel tap k reaches output i·s + k·d − p",
                lambda: c.run(d=ones, op=op_ok),
            )
        )
        plus = tuple(d + 1 for d in c.d)
        mistakes.append(
            (
                "d zeros inserted between kernel taps instead of d − 1 (tap k is at offset k·d)",
                lambda: c.run(d=plus),
            )
        )
    if c.b is not None:
        mistakes.append(
            (
                "bias missing: add bias[o] to every position of output channel o",
                lambda: c.run(b=None),
            )
        )
        mistakes.append(("bias added twice", lambda: c.run() + c.bias_view()))
    if c.g > 1:
        mistakes.append(
            (
                "groups ignored: with groups g, input channels [j·C_in/g, (j+1)·C_in/g) "
                "only feed output channels [j·C_out/g, (j+1)·C_out/g)",
                lambda: c.run(g=1),
            )
        )
    return mistakes


def _shape_hint(
    case: Case, inputs: dict[str, torch.Tensor], reference: torch.Tensor, value: torch.Tensor
) -> str | None:
    expected, got = tuple(reference.shape), tuple(value.shape)
    if expected == got:
        return None
    if case.target in _CONV_TARGETS or case.target == "ConvTranspose1d":
        return _conv_shape_hint(case, inputs, expected, got)
    if case.target == "interpolate":
        return _interpolate_shape_hint(case, inputs, expected, got)
    if case.target == "conv1d_matrix" and got == expected[::-1]:
        return (
            "you returned the transposed matrix (the transposed convolution's); "
            "conv1d_matrix is the convolution's matrix, (L − w + 1) rows by L columns"
        )
    if case.target == "ResizeConv2d":
        return (
            "interpolate ×2 then a 3×3 conv with padding=1 keeps (2H, 2W), the shape "
            "ConvTranspose2d(nic, noc, 3, stride=2, padding=1, output_padding=1) gives"
        )
    if case.target == "coverage_map":
        return (
            "the coverage map has the transposed convolution's output size "
            "((W − 1)·s + w per dimension)"
        )
    return None


def _conv_shape_hint(case, inputs, expected, got) -> str | None:
    c = _conv_setup(case, inputs)
    if "output_size" in case.params:
        without = tuple(c.run().shape)
        if got == without:
            return (
                "output_size ignored: forward(input, output_size) gives an output of that "
                "length, with output_padding = output_size − the shortest length "
                "(W − 1)·s − 2·p + d·(w − 1) + 1 in place of the module's"
            )
        return "with output_size, the output is exactly output_size long"
    if len(got) == len(expected) + 1 and got[0] == 1 and got[1:] == expected:
        return "an unbatched input (C, ...) must give an unbatched output: drop the batch dimension you added"
    if len(got) + 1 == len(expected):
        return "a batched input must keep its batch dimension in the output"
    if len(got) != len(expected):
        return None
    channel = len(expected) - c.n - 1
    cin = c.w.shape[0]
    if got[channel] != expected[channel]:
        if got[channel] == cin:
            return (
                "the output has in_channels channels: the weight of a transposed convolution "
                "is (C_in, C_out // groups, ...), so C_out = weight.shape[1] · groups"
            )
        if got[channel] == c.w.shape[1] and c.g > 1:
            return "with groups, the output has weight.shape[1] · groups channels"
        return None
    hints = []
    for axis in range(c.n):
        diff = got[channel + 1 + axis] - expected[channel + 1 + axis]
        s, p, op, d = c.s[axis], c.p[axis], c.op[axis], c.d[axis]
        rule = "(W − 1)·s − 2·p + d·(w − 1) + output_padding + 1"
        if diff == 1 and op == 0:
            hints.append(
                f"1 longer than torch's ({rule}): output_padding applied when 0, or an extra + 1?"
            )
        elif diff == -1:
            hints.append(f"1 shorter than torch's ({rule}): a missing + 1?")
        elif op and diff == -op:
            hints.append("output_padding positions missing at the end")
        elif p and diff == 2 * p:
            hints.append("not cropped by padding at each end")
        elif p and diff == 4 * p:
            hints.append("padding added instead of cropped")
        elif s > 1 and diff == s:
            hints.append("W·s instead of (W − 1)·s")
        elif d > 1 and diff == -(d - 1) * (c.w.shape[2 + axis] - 1):
            hints.append("dilation ignored in the size (the kernel spans d·(w − 1) + 1)")
        elif diff:
            hints.append(f"{diff:+d} compared with torch's {rule}")
    if hints:
        names = ["length"] if c.n == 1 else ["height", "width"]
        return "; ".join(
            f"{names[i] if len(hints) == c.n else 'size'}: {h}" for i, h in enumerate(hints)
        )
    return None


# --- interpolate ----------------------------------------------------------------------

_LINEAR_MODES = ("linear", "bilinear", "bicubic", "trilinear")


def _source_ratios(case: Case, x: torch.Tensor, out_sizes: tuple[int, ...]) -> list[float]:
    """The factor torch maps output to input coordinates with, per dimension."""
    kw = case.params["kwargs"]
    mode = kw.get("mode", "nearest")
    n = x.dim() - 2
    in_sizes = tuple(x.shape[2:])
    scale = kw.get("scale_factor")
    scales = None
    if scale is not None and not kw.get("recompute_scale_factor"):
        scales = (
            [float(v) for v in scale] if isinstance(scale, list | tuple) else [float(scale)] * n
        )
    ratios = []
    for i in range(n):
        if mode in _LINEAR_MODES and kw.get("align_corners"):
            ratios.append((in_sizes[i] - 1) / (out_sizes[i] - 1) if out_sizes[i] > 1 else 0.0)
        elif scales is not None:
            ratios.append(1.0 / scales[i])
        else:
            ratios.append(in_sizes[i] / out_sizes[i])
    return ratios


def _sample_at(x: torch.Tensor, coords: list[torch.Tensor], nearest: bool) -> torch.Tensor:
    """x sampled at source pixel coordinates (clamped to the border), one 1-d tensor per
    spatial dim, with torch's grid_sample (used to reproduce mistaken coordinate maps)."""
    in_sizes = x.shape[2:]
    normalized = []
    for c, n in zip(coords, in_sizes, strict=True):
        c = c.clamp(0, n - 1)
        normalized.append(2 * c / (n - 1) - 1 if n > 1 else torch.zeros_like(c))
    mode = "nearest" if nearest else "bilinear"
    if len(coords) == 1:
        gx = normalized[0].to(x.dtype)
        grid = torch.stack([gx, torch.zeros_like(gx)], -1)[None, None].expand(x.shape[0], 1, -1, 2)
        return F.grid_sample(
            x[:, :, None, :], grid, mode=mode, padding_mode="border", align_corners=True
        )[:, :, 0, :]
    gy, gx = torch.meshgrid(normalized[0].to(x.dtype), normalized[1].to(x.dtype), indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].expand(x.shape[0], -1, -1, 2)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=True)


def _interpolate_mistakes(case: Case, inputs: dict[str, torch.Tensor]) -> list[Mistake]:
    x = inputs["input"]
    kw = _call_kwargs(case)
    mode = kw.get("mode", "nearest")
    align = kw.get("align_corners")
    mistakes: list[Mistake] = []

    def torch_with(**changes):
        return lambda: F.interpolate(x, **{**kw, **changes})

    if mode in _LINEAR_MODES:
        mistakes.append(
            (
                f"align_corners inverted: with align_corners={bool(align)} torch maps output pixel j "
                "to input coordinate "
                + (
                    "j·(W_in − 1)/(W_out − 1) (corner pixels aligned)"
                    if align
                    else "(j + 0.5)·W_in/W_out − 0.5 (pixel centres aligned)"
                ),
                torch_with(align_corners=not align),
            )
        )
    if mode == "nearest":
        mistakes.append(
            (
                "rounded to the nearest source pixel (that is mode='nearest-exact'); "
                "mode='nearest' takes input index floor(j · W_in/W_out)",
                torch_with(mode="nearest-exact"),
            )
        )
    if mode == "nearest-exact":
        mistakes.append(
            (
                "floor(j · W_in/W_out) is mode='nearest'; 'nearest-exact' takes "
                "floor((j + 0.5) · W_in/W_out)",
                torch_with(mode="nearest"),
            )
        )
    if mode != "nearest":
        mistakes.append(
            (
                f"mode ignored: mode={mode!r} was asked, the output is mode='nearest'",
                lambda: F.interpolate(
                    x, **{k: v for k, v in kw.items() if k != "align_corners"}, mode="nearest"
                ),
            )
        )
    if kw.get("scale_factor") is not None:
        rsf = bool(kw.get("recompute_scale_factor"))
        mistakes.append(
            (
                f"recompute_scale_factor={kw.get('recompute_scale_factor')!r} handled as "
                f"{not rsf}: with True torch maps coordinates with W_in/W_out (the output size "
                "recomputed); otherwise with 1/scale_factor",
                torch_with(recompute_scale_factor=not rsf),
            )
        )
    for name in ("size", "scale_factor"):
        value = kw.get(name)
        if isinstance(value, tuple) and len(set(value)) > 1:
            mistakes.append(
                (
                    f"{name} read in the wrong order: it is (H, W)",
                    torch_with(**{name: tuple(reversed(value))}),
                )
            )

    if mode in ("linear", "bilinear", "nearest", "nearest-exact"):
        mistakes += _coordinate_mistakes(case, x, mode, bool(align))
    return mistakes


#: Source coordinates of known mistakes: output pixel j (float64), the input and output
#: sizes and torch's ratio r (input pixels per output pixel) -> the coordinate read.
_Coordinates = Callable[[torch.Tensor, int, int, float], torch.Tensor]


def _coordinate_mistakes(case: Case, x: torch.Tensor, mode: str, align: bool) -> list[Mistake]:
    """Output pixels mapped to mistaken input coordinates (sampled as torch would)."""
    kw = _call_kwargs(case)
    nearest = mode.startswith("nearest")

    def sampled(coordinate: _Coordinates) -> Callable[[], torch.Tensor]:
        def make() -> torch.Tensor:
            out_sizes = tuple(F.interpolate(x, **kw).shape[2:])
            ratios = _source_ratios(case, x, out_sizes)
            coords = [
                coordinate(torch.arange(n_out, dtype=torch.float64), n_in, n_out, r)
                for n_out, n_in, r in zip(out_sizes, x.shape[2:], ratios, strict=True)
            ]
            return _sample_at(x, coords, nearest)  # clamped to the border there

        return make

    def inverse(j, n_in, n_out, r):
        wrong = 1 / r if r else 0.0
        if align and not nearest:
            return j * ((n_out - 1) / (n_in - 1) if n_in > 1 else 0.0)
        if nearest:
            return torch.floor((j + (0.5 if mode == "nearest-exact" else 0.0)) * wrong)
        return ((j + 0.5) * wrong - 0.5).clamp(min=0)

    mistakes: list[Mistake] = []
    if nearest:
        exact = mode == "nearest-exact"
        rule = "floor((j + ½) · W_in/W_out)" if exact else "floor(j · W_in/W_out)"
        rounded = (
            f"the source index is rounded, round(j · W_in/W_out): mode={mode!r} takes "
            f"input index {rule}"
        )
        mistakes.append((rounded, sampled(lambda j, n_in, n_out, r: torch.round(j * r))))
        mistakes.append((rounded, sampled(lambda j, n_in, n_out, r: torch.floor(j * r + 0.5))))
    mistakes.append(
        (
            "the scale is used the wrong way round: output pixel j maps to input coordinate "
            "j · W_in/W_out (that is j / scale_factor), not j · W_out/W_in",
            sampled(inverse),
        )
    )
    if not nearest and not align:
        mistakes.append(
            (
                "no half-pixel offset: with align_corners=False output pixel j maps to input "
                "coordinate (j + 0.5)·W_in/W_out − 0.5 (clamped at 0), not j·W_in/W_out",
                sampled(lambda j, n_in, n_out, r: j * r),
            )
        )
    if not nearest and align:
        wrong_ratios = {
            "j·W_in/W_out": lambda n_in, n_out: n_in / n_out,
            "j·(W_in − 1)/W_out": lambda n_in, n_out: (n_in - 1) / n_out,
            "j·W_in/(W_out − 1)": lambda n_in, n_out: n_in / (n_out - 1) if n_out > 1 else 0.0,
        }
        for formula, ratio in wrong_ratios.items():
            mistakes.append(
                (
                    "a wrong align_corners=True formula: the corner pixels are aligned, "
                    "output pixel j maps to input coordinate j·(W_in − 1)/(W_out − 1); your "
                    f"output reads input coordinate {formula}",
                    sampled(lambda j, n_in, n_out, r, ratio=ratio: j * ratio(n_in, n_out)),
                )
            )
    return mistakes


def _interpolate_shape_hint(case, inputs, expected, got) -> str | None:
    kw = case.params["kwargs"]
    if len(got) != len(expected):
        return "interpolate keeps the (N, C) dimensions and resizes the spatial ones only"
    scale = kw.get("scale_factor")
    if scale is not None:
        n = len(expected) - 2
        scales = list(scale) if isinstance(scale, list | tuple) else [scale] * n
        in_sizes = inputs["input"].shape[2:]
        rounded = tuple(round(i * s) for i, s in zip(in_sizes, scales, strict=True))
        ceiled = tuple(math.ceil(i * s) for i, s in zip(in_sizes, scales, strict=True))
        if tuple(got[2:]) in (rounded, ceiled):
            return "the output size is floor(W_in · scale_factor), per dimension"
    return None


def _resize_conv_mistakes(case: Case, inputs: dict[str, torch.Tensor]) -> list[Mistake]:
    x, w, b = inputs["input"], inputs["conv_weight"], inputs["conv_bias"]

    def variant(**kw):
        return lambda: F.conv2d(F.interpolate(x, scale_factor=2, **kw), w, b, padding=1)

    return [
        ("the upsampling is nearest: use mode='bilinear'", variant(mode="nearest")),
        (
            "align_corners=True in the upsampling: the default (False) is asked",
            variant(mode="bilinear", align_corners=True),
        ),
        (
            "the convolution runs before the upsampling: interpolate first, then self.conv",
            lambda: F.interpolate(F.conv2d(x, w, b, padding=1), scale_factor=2, mode="bilinear"),
        ),
    ]


def _matrix_mistakes(case: Case, inputs: dict[str, torch.Tensor]) -> list[Mistake]:
    kernel, length = inputs["kernel"], int(case.params["input_length"])

    def matrix(k):
        return F.conv1d(torch.eye(length, dtype=k.dtype)[:, None, :], k[None, None])[:, 0, :].T

    return [
        (
            "the kernel is reversed in the rows: F.conv1d is a cross-correlation, row i holds "
            "w[0], ..., w[w−1] at columns i, ..., i + w − 1",
            lambda: matrix(kernel.flip(0)),
        ),
        (
            "you returned the transposed matrix (the transposed convolution's); conv1d_matrix is "
            "the convolution's matrix, (L − w + 1) rows by L columns",
            lambda: matrix(kernel).T,
        ),
    ]


def _coverage_mistakes(case: Case) -> list[Mistake]:
    p = case.params

    def coverage(kernel, stride, size):
        taps = F.conv_transpose2d(
            torch.ones(1, 1, *size, dtype=torch.float64),
            torch.ones(1, 1, *kernel, dtype=torch.float64),
            stride=stride,
        )
        return taps[0, 0].round().to(torch.int64)

    k, s, n = (_tuple(p[key], 2) for key in ("kernel_size", "stride", "input_size"))
    return [
        (
            "height and width swapped: each pair is (height, width), and the map is indexed "
            "[row, column]",
            lambda: coverage(k[::-1], s[::-1], n[::-1]),
        )
    ]


def _length_mistakes(case: Case) -> list[Mistake]:
    a = dict(case.params["args"])
    L, k = a["L"], a["kernel_size"]
    s, p, op, d = (
        a.get(n, dv)
        for n, dv in (("stride", 1), ("padding", 0), ("output_padding", 0), ("dilation", 1))
    )

    def n(value):
        return lambda: torch.tensor(value, dtype=torch.int64)

    return [
        (
            "forgot the + 1 in (L − 1)·s − 2·p + d·(w − 1) + output_padding + 1",
            n((L - 1) * s - 2 * p + d * (k - 1) + op),
        ),
        ("L·s instead of (L − 1)·s", n(L * s - 2 * p + d * (k - 1) + op + 1)),
        (
            "padding added instead of subtracted (it crops the output)",
            n((L - 1) * s + 2 * p + d * (k - 1) + op + 1),
        ),
        (
            "padding subtracted once instead of twice (p at each end)",
            n((L - 1) * s - p + d * (k - 1) + op + 1),
        ),
        ("output_padding ignored", n((L - 1) * s - 2 * p + d * (k - 1) + 1)),
        (
            "dilation ignored: the kernel spans d·(w − 1) + 1",
            n((L - 1) * s - 2 * p + (k - 1) + op + 1),
        ),
        ("d·w instead of d·(w − 1) + 1", n((L - 1) * s - 2 * p + d * k + op)),
    ]


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def grade_case(case: Case, implementation: Any) -> Verdict:
    """All four steps for one case in this process: inputs, torch, the student, comparison."""
    try:
        actual: dict[str, Any] | BaseException = run_student(
            case, implementation, make_inputs(case)
        )
    except Exception as error:  # the student's exception is a result, judged by compare
        actual = error
    # torch's answer only now, on fresh inputs: while the student's code ran, no reference sat
    # in a caller's frame to be read, and no input it could reach is the one torch is given.
    inputs = make_inputs(case)
    expected = reference_outputs(case, inputs)
    return compare(case, inputs, expected, actual)


def run_cases(cases: list[Case], implementation: Any, title: str) -> None:
    """Grade ``cases`` in order, print one line each, raise AssertionError at the first failure."""
    __tracebackhide__ = True  # Jupyter shows the message (it ends at the student's line)
    with _quiet():
        for case in cases:
            verdict = grade_case(case, implementation)
            if not verdict.passed:
                print(f"FAIL {case.describe()}")
                raise AssertionError(verdict.message)
            print(f"ok   {case.describe()}")
    print(f"{title}: all {len(cases)} cases pass")


def check(grade_id: str, implementation: Any) -> None:
    """The visible check a student runs: every public case of ``grade_id``.

    Prints one line per passing case; raises ``AssertionError`` with the first failure's
    message. Never writes to stderr.
    """
    __tracebackhide__ = True
    if grade_id not in PUBLIC_CASES:
        raise KeyError(f"unknown grade_id {grade_id!r}; known: {', '.join(PUBLIC_CASES)}")
    run_cases(PUBLIC_CASES[grade_id], implementation, grade_id)


# --------------------------------------------------------------------------------------
# The student's self-check from a terminal
# --------------------------------------------------------------------------------------


def _test_cell_id(cell: dict[str, Any]) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if cell.get("cell_type") == "code" and meta.get("grade") and not meta.get("solution"):
        return meta.get("grade_id")
    return None


def _runnable(source: str) -> str:
    """The cell without IPython magics and shell lines (they mean nothing to plain Python)."""
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def self_check(notebook_path: str) -> int:
    """Run a notebook's code cells in order (plain ``exec``) and report each test cell.

    Returns 0 when every visible check passes, 1 otherwise.
    """
    with open(notebook_path, encoding="utf-8") as handle:
        notebook = json.load(handle)
    folder = os.path.dirname(os.path.abspath(notebook_path))
    os.chdir(folder)  # as Jupyter does: the notebook's folder is the working directory
    if folder not in sys.path:
        sys.path.insert(0, folder)  # and importable (course_checks sits next to the notebook)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    results: list[tuple[str, bool, str]] = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        grade_id = _test_cell_id(cell)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), _quiet():
                exec(compile(_runnable(source), f"cell {index + 1}", "exec"), namespace)
            if grade_id:
                results.append((grade_id, True, ""))
        except Exception as error:
            message = (
                str(error)
                if isinstance(error, AssertionError)
                else "".join(traceback.format_exception_only(type(error), error)).strip()
            )
            if grade_id:
                results.append((grade_id, False, message))
            else:
                print(f"cell {index + 1} raised {message.splitlines()[0] if message else ''}")
    passed = sum(ok for _, ok, _ in results)
    for grade_id, ok, message in results:
        print(f"{'PASS' if ok else 'FAIL'}  {grade_id}")
        if not ok:
            print("      " + message.replace("\n", "\n      "))
    print(f"{passed}/{len(results)} visible checks pass")
    return 0 if results and passed == len(results) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python course_checks.py NOTEBOOK.ipynb  (runs the notebook's visible checks)")
        return 2
    return self_check(argv[0])


if __name__ == "__main__":
    sys.exit(main())
