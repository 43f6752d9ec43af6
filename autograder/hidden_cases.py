"""The hidden cases: more graded calls, drawn from a seed. Never ships to students.

``hidden_cases(grade_id, seed)`` draws a few random cases within the grade_id's feature
(random shapes, parameters and dtypes, still small enough for a plain-loop answer), and
``check_hidden(grade_id, implementation)`` runs them for nbgrader's hidden tests, with the
same printing and raising as ``course_checks.check``. The comparison, the kernel guard and
the diagnosis are ``course_checks``'s: one piece of code for one job.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any

from autograder.course_checks import GRADE_IDS, Case, run_cases

#: How many cases each hidden test draws.
CASES_PER_GRADE_ID = 4

#: The most multiply-adds a conv case asks of a plain-loop answer (batch·C_in·C_out/g·|x|·|w|).
LOOP_BUDGET = 400

#: The environment variable the CI grader (or an instructor) sets to fix the draw.
SEED_VARIABLE = "COURSE_GRADING_SEED"


def all_grade_ids() -> list[str]:
    """Every autograded grade_id, in the assignments' order."""
    return list(GRADE_IDS)


def _ints(rng: random.Random, low: int, high: int, n: int) -> list[int]:
    return [rng.randint(low, high) for _ in range(n)]


def _param(rng: random.Random, values: list[int], n: int, as_tuple: bool) -> Any:
    """An int, or (for 2-d, or 1-d when as_tuple) a tuple of n ints."""
    if n == 2 and as_tuple:
        return (rng.choice(values), rng.choice(values))
    if n == 1 and as_tuple:
        return (rng.choice(values),)
    return rng.choice(values)


def _pair(value: Any, n: int) -> list[int]:
    return list(value) if isinstance(value, tuple) else [value] * n


def _conv_case(grade_id: str, rng: random.Random, n: int) -> Case:
    """One random conv_transpose{n}d case for grade_id's feature (others at their defaults)."""
    feature = grade_id.split("_", 1)[1]
    target = f"conv_transpose{n}d"
    as_tuple = rng.random() < 0.5
    kwargs: dict[str, Any] = {}
    groups = 1
    if feature in ("stride", "output_padding", "dtypes", "gradients") or (
        feature in ("padding", "dilation") and rng.random() < 0.5
    ):
        kwargs["stride"] = _param(rng, [1, 2, 3] if feature != "stride" else [2, 3, 4], n, as_tuple)
    if feature in ("padding", "output_padding", "dtypes", "gradients"):
        kwargs["padding"] = _param(rng, [0, 1, 2] if feature != "padding" else [1, 2], n, as_tuple)
    if feature in ("dilation", "output_padding") or (feature == "dtypes" and rng.random() < 0.5):
        kwargs["dilation"] = _param(
            rng, [1, 2, 3] if feature != "dilation" else [2, 3], n, as_tuple
        )
    if feature in ("groups",) or (feature in ("dtypes", "gradients") and rng.random() < 0.3):
        groups = rng.choice([2, 3])
        kwargs["groups"] = groups
    stride = _pair(kwargs.get("stride", 1), n)
    dilation = _pair(kwargs.get("dilation", 1), n)
    raises = False
    if feature == "output_padding":
        raises = rng.random() < 0.25
        ops = []
        for s, d in zip(stride, dilation, strict=True):
            limit = max(s, d)
            ops.append(rng.randint(limit, limit + 1) if raises else rng.randint(0, limit - 1))
        if raises and n == 2 and rng.random() < 0.5:  # only one dimension out of range
            ops[0] = 0
        kwargs["output_padding"] = tuple(ops) if (n == 2 or as_tuple) else ops[0]
        if not raises and all(o == 0 for o in ops):
            kwargs["stride"] = tuple(max(s, 2) for s in stride) if n == 2 else max(stride[0], 2)
            stride = _pair(kwargs["stride"], n)
            ops[0] = 1
            kwargs["output_padding"] = tuple(ops) if (n == 2 or as_tuple) else ops[0]
    # Small sizes: a plain-loop answer must grade in well under a second per case.
    in_size = [rng.randint(2, 5 if n == 1 else 4) for _ in range(n)]
    kernel = [rng.randint(1, 4 if n == 1 else 3) for _ in range(n)]
    padding = _pair(kwargs.get("padding", 0), n)
    for axis in range(n):  # keep the output non-empty (torch raises otherwise)
        full = (in_size[axis] - 1) * stride[axis] + dilation[axis] * (kernel[axis] - 1) + 1
        while full - 2 * padding[axis] <= 0:
            kernel[axis] += 1
            full += dilation[axis]
    per_group_in = rng.randint(1, 2)
    per_group_out = rng.randint(1, 3)
    cin, cout_g = per_group_in * groups, per_group_out
    unbatched = feature == "unbatched"
    batch = 1 if feature in ("basic",) else rng.randint(1, 3)
    if feature == "basic":
        cin, cout_g = 1, 1
    # A plain-loop answer does batch·C_in·(C_out/g)·|input|·|kernel| multiply-adds in
    # Python (each a few dispatched tensor ops, and as many autograd nodes for gradients).
    budget = LOOP_BUDGET // 2 if feature == "gradients" else LOOP_BUDGET
    while batch * cin * cout_g * math.prod(in_size) * math.prod(kernel) > budget:
        if batch > 1:
            batch -= 1
        elif cout_g > 1:
            cout_g -= 1
        elif cin > groups:
            cin -= groups
        else:
            break
    input_shape = [cin, *in_size] if unbatched else [batch, cin, *in_size]
    params: dict[str, Any] = {
        "input": input_shape,
        "weight": [cin, cout_g, *kernel],
        "bias": feature == "bias" and rng.random() < 0.75 or rng.random() < 0.3,
        "kwargs": kwargs,
        "dtype": rng.choice(["float32", "float64"])
        if feature in ("dtypes", "gradients")
        else "float32",
    }
    if feature == "bias" and not params["bias"]:
        params["bias_none"] = True
    if feature == "bias" and rng.random() < 0.5:
        params["positional"] = True
    if feature == "gradients" and not raises:
        params["grad"] = True
    if rng.random() < 0.3:
        params["ints"] = True
    return Case(grade_id, target, params, rng.randrange(2**31))


def _output_length_case(rng: random.Random) -> Case:
    args: dict[str, Any] = {"L": rng.randint(1, 9), "kernel_size": rng.randint(1, 5)}
    for name, values in (
        ("stride", [1, 2, 3, 4]),
        ("padding", [0, 1, 2, 3]),
        ("output_padding", [0, 1, 2]),
        ("dilation", [1, 2, 3]),
    ):
        if rng.random() < 0.6:
            args[name] = rng.choice(values)
    return Case("ct1d_output_length", "output_length", {"args": args})


def _module_case(rng: random.Random) -> Case:
    groups = rng.choice([1, 1, 2])
    stride = rng.choice([1, 2, 3])
    dilation = rng.choice([1, 2])
    init: dict[str, Any] = {
        "in_channels": groups * rng.randint(1, 2),
        "out_channels": groups * rng.randint(2, 3),
        "kernel_size": rng.randint(2, 4),
    }
    if stride > 1:
        init["stride"] = stride
    if rng.random() < 0.5:
        init["padding"] = rng.randint(0, 1)
    if max(stride, dilation) > 1 and rng.random() < 0.5:
        init["output_padding"] = rng.randint(0, max(stride, dilation) - 1)
    if groups > 1:
        init["groups"] = groups
    if rng.random() < 0.3:
        init["bias"] = False
    if dilation > 1:
        init["dilation"] = dilation
    length = rng.randint(3, 6)
    shape = (
        [init["in_channels"], length]
        if rng.random() < 0.2
        else [rng.randint(1, 2), init["in_channels"], length]
    )
    return Case(
        "ct1d_module",
        "ConvTranspose1d",
        {"init": init, "input": shape, "dtype": "float32", "grad": rng.random() < 0.4},
        rng.randrange(2**31),
    )


def _with_output_size(case: Case, rng: random.Random) -> Case:
    """The module case called with torch's ``output_size`` (now and then one torch refuses)."""
    init, shape = case.params["init"], case.params["input"]
    stride, dilation = init.get("stride", 1), init.get("dilation", 1)
    shortest = (
        (shape[-1] - 1) * stride
        - 2 * init.get("padding", 0)
        + dilation * (init["kernel_size"] - 1)
        + 1
    )
    length = shortest + (stride if rng.random() < 0.2 else rng.randrange(stride))
    leading = [] if rng.random() < 0.6 else [*shape[:-2], init["out_channels"]]
    if len(shape) == 2 and leading:
        leading = [init["out_channels"]]
    return Case(
        case.grade_id,
        case.target,
        {**case.params, "output_size": [*leading, length]},
        case.seed,
    )


def _coverage_case(rng: random.Random) -> Case:
    def value(low: int, high: int) -> Any:
        return (
            (rng.randint(low, high), rng.randint(low, high))
            if rng.random() < 0.5
            else rng.randint(low, high)
        )

    return Case(
        "ct2d_coverage_map",
        "coverage_map",
        {"kernel_size": value(1, 5), "stride": value(1, 4), "input_size": value(1, 5)},
    )


def _matrix_case(rng: random.Random) -> Case:
    length = rng.randint(1, 9)
    return Case(
        "ct1d_matrix",
        "conv1d_matrix",
        {
            "kernel_length": rng.randint(1, length),
            "input_length": length,
            "dtype": rng.choice(["float32", "float64"]),
        },
        rng.randrange(2**31),
    )


# Nearest-neighbour source indices are floor(j · ratio) in float32 in torch; scales whose
# reciprocal is exact keep a correct answer computed in float64 from landing one pixel off.
_NEAREST_SCALES = [0.5, 2.0, 3.0, 4.0, 0.25]
_LINEAR_SCALES = [0.5, 1.5, 2.0, 2.5, 3.0, 1.7, 1.3]


def _interpolate_case(grade_id: str, rng: random.Random) -> Case:
    feature = grade_id.removeprefix("interp_")
    n = 2
    mode = "nearest"
    kwargs: dict[str, Any] = {}
    dtype = "float32"
    by_size = rng.random() < 0.5
    align = None
    if feature.startswith("nearest_size"):
        by_size = True
    elif feature.startswith("nearest_scale"):
        by_size = False
    elif feature == "linear":
        mode, n = "linear", 1
        align = rng.choice([True, False])
    elif feature == "bilinear_size":
        mode, by_size = "bilinear", True
    elif feature == "bilinear_scale":
        mode, by_size = "bilinear", False
    elif feature == "align_corners":
        mode = rng.choice(["linear", "bilinear"])
        n = 1 if mode == "linear" else 2
        align = True
    elif feature == "recompute_scale_factor":
        mode = rng.choice(["linear", "bilinear"])
        n = 1 if mode == "linear" else 2
        by_size = False
    elif feature in ("dtypes", "gradients"):
        mode = rng.choice(["nearest", "linear", "bilinear"])
        n = 1 if mode == "linear" else 2
        dtype = rng.choice(["float32", "float64"])
        if mode != "nearest":
            align = rng.choice([True, False, None])
    elif feature == "bicubic":
        mode = "bicubic"
        align = rng.choice([True, False])
    elif feature == "nearest_exact":
        mode = "nearest-exact"
    in_size = [rng.randint(1, 5) for _ in range(n)]
    if mode == "bicubic":
        in_size = [max(v, 2) for v in in_size]
    if by_size:
        out = [rng.randint(1, 8) for _ in range(n)]
        if mode.startswith("nearest"):  # sizes whose ratio keeps float32 and float64 floors equal
            out = [
                v * rng.choice([1, 2, 3]) if rng.random() < 0.5 else max(1, v // 2) for v in in_size
            ]
        kwargs["size"] = (
            out[0] if n == 1 or (out[0] == out[-1] and rng.random() < 0.5) else tuple(out)
        )
    else:
        scales = _NEAREST_SCALES if mode.startswith("nearest") else _LINEAR_SCALES
        factor = [rng.choice(scales) for _ in range(n)]
        as_tuple = n == 2 and rng.random() < 0.5
        if not as_tuple:
            factor = [factor[0]] * n
        for axis in range(n):
            # At least one output pixel, and never the input's own size: there torch copies
            # the input instead of applying the coordinate map (a corner no lecture explains).
            while (
                in_size[axis] * factor[axis] < 1
                or math.floor(in_size[axis] * factor[axis]) == in_size[axis]
            ):
                in_size[axis] += 1
        kwargs["scale_factor"] = tuple(factor) if as_tuple else factor[0]
        if feature == "recompute_scale_factor":
            kwargs["recompute_scale_factor"] = rng.choice([True, False])
            if not isinstance(kwargs["scale_factor"], tuple):
                kwargs["scale_factor"] = factor[0]
    if mode != "nearest":
        kwargs["mode"] = mode
    if align is not None and mode not in ("nearest", "nearest-exact"):
        kwargs["align_corners"] = align
    shape = [rng.randint(1, 2), rng.randint(1, 3), *in_size]
    params: dict[str, Any] = {"input": shape, "kwargs": kwargs, "dtype": dtype}
    if feature == "gradients":
        params["grad"] = True
    return Case(grade_id, "interpolate", params, rng.randrange(2**31))


#: The interpolate tests that also draw a call torch refuses, and what makes it refused.
_INTERPOLATE_REFUSALS = {
    "interp_nearest_size": ("align_corners", "size_and_scale"),
    "interp_nearest_scale": ("align_corners", "neither"),
    "interp_linear": ("dimensions",),
    "interp_bilinear_size": ("dimensions",),
}


def _interpolate_refusal(grade_id: str, rng: random.Random) -> Case:
    """A call where torch raises (the assignment asks to raise there too)."""
    kind = rng.choice(_INTERPOLATE_REFUSALS[grade_id])
    n = 1 if grade_id == "interp_linear" else 2
    kwargs: dict[str, Any] = {}
    if kind == "align_corners":
        kwargs["mode"] = rng.choice(["nearest", "nearest-exact"])
        kwargs["align_corners"] = rng.choice([True, False])
    elif kind == "dimensions":
        kwargs["mode"] = "linear" if n == 1 else "bilinear"
        n = rng.choice([2, 3]) if n == 1 else rng.choice([1, 3])  # the wrong number of axes
    by_size = rng.random() < 0.5
    if kind != "neither" and (kind == "size_and_scale" or by_size):
        kwargs["size"] = rng.randint(2, 5)
    if kind != "neither" and (kind == "size_and_scale" or not by_size):
        kwargs["scale_factor"] = rng.choice([2, 3])
    size = [rng.randint(1, 3) for _ in range(n)]
    shape = [rng.randint(1, 2), rng.randint(1, 2), *size]
    return Case(grade_id, "interpolate", {"input": shape, "kwargs": kwargs}, rng.randrange(2**31))


def _resize_conv_case(rng: random.Random) -> Case:
    nic, noc = rng.randint(1, 3), rng.randint(1, 3)
    shape = [rng.randint(1, 2), nic, rng.randint(1, 4), rng.randint(1, 4)]
    return Case(
        "interp_resize_conv",
        "ResizeConv2d",
        {"init": [nic, noc], "input": shape, "dtype": rng.choice(["float32", "float64"])},
        rng.randrange(2**31),
    )


def hidden_cases(grade_id: str, seed: int) -> list[Case]:
    """``CASES_PER_GRADE_ID`` random cases of ``grade_id``, the same for the same seed, and
    for some interpolate tests one more, a call torch refuses."""
    if grade_id not in GRADE_IDS:
        raise KeyError(f"unknown grade_id {grade_id!r}")
    rng = random.Random(f"{grade_id}:{seed}")
    target = GRADE_IDS[grade_id].target
    cases = []
    for _ in range(CASES_PER_GRADE_ID):
        if target == "conv_transpose1d":
            cases.append(_conv_case(grade_id, rng, 1))
        elif target == "conv_transpose2d":
            cases.append(_conv_case(grade_id, rng, 2))
        elif target == "output_length":
            cases.append(_output_length_case(rng))
        elif target == "conv1d_matrix":
            cases.append(_matrix_case(rng))
        elif target == "ConvTranspose1d":
            cases.append(_module_case(rng))
        elif target == "coverage_map":
            cases.append(_coverage_case(rng))
        elif target == "interpolate":
            cases.append(_interpolate_case(grade_id, rng))
        elif target == "ResizeConv2d":
            cases.append(_resize_conv_case(rng))
    # Each on its own generator: the draws above stay what they were before these were added.
    if grade_id in _INTERPOLATE_REFUSALS:
        cases.append(_interpolate_refusal(grade_id, random.Random(f"{grade_id}:{seed}:refusal")))
    if grade_id == "ct1d_module":
        extra = random.Random(f"{grade_id}:{seed}:output_size")
        index = extra.randrange(len(cases))
        cases[index] = _with_output_size(cases[index], extra)
    return cases


def grading_seed() -> int:
    """The seed of this run: ``$COURSE_GRADING_SEED`` when set, else a fresh random one."""
    value = os.environ.get(SEED_VARIABLE)
    return int(value) if value else random.SystemRandom().randrange(2**31)


def check_hidden(grade_id: str, implementation: Any, seed: int | None = None) -> None:
    """nbgrader's hidden test: the hidden cases of ``grade_id`` for ``seed`` (see
    ``grading_seed``). Prints one line per case; raises AssertionError at the first failure."""
    seed = grading_seed() if seed is None else seed
    run_cases(hidden_cases(grade_id, seed), implementation, f"{grade_id} (hidden, seed {seed})")
