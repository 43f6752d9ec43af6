"""The instructor's answers match torch on a wide randomized sweep.

Every answer is taken from its notebook through the one notebook loader
(``autograder.notebook.load_namespace``) and judged by the one comparison
(``autograder.course_checks``): for many seeds, the hidden cases of every grade_id, then a
broader sweep drawn here (larger strides, dilations and paddings, odd sizes, non-integer
scale factors, 1-d to 3-d nearest, bicubic with align_corners), still as ``Case``s compared
with torch through ``grade_case``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.course_checks import GRADE_IDS, Case, grade_case
from autograder.hidden_cases import hidden_cases
from autograder.notebook import load_namespace

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {
    "01_conv_transpose1d": "conv_transpose1d",
    "02_conv_transpose2d": "conv_transpose2d",
    "03_interpolate": "interpolate",
}
HIDDEN_SEEDS = range(6)
SWEEP_CASES = 100


@pytest.fixture(scope="module")
def answers() -> dict[str, dict]:
    """Each assignment's namespace: the instructor's notebook run without its test cells."""
    return {
        assignment: load_namespace(REPO_ROOT / "solutions" / assignment / f"{name}.ipynb")
        for assignment, name in NOTEBOOKS.items()
    }


def failures(cases: list[Case], implementation) -> list[str]:
    found = []
    for case in cases:
        verdict = grade_case(case, implementation)
        if not verdict.passed:
            found.append(f"{case.describe()}: {verdict.message}")
    return found


@pytest.mark.parametrize("grade_id", sorted(GRADE_IDS))
def test_hidden_cases_pass_for_many_seeds(answers, grade_id):
    info = GRADE_IDS[grade_id]
    implementation = answers[info.assignment][info.target]
    cases = [case for seed in HIDDEN_SEEDS for case in hidden_cases(grade_id, seed)]
    assert cases
    failed = failures(cases, implementation)
    assert not failed, f"{len(failed)} of {len(cases)} cases fail, first: {failed[0]}"


def conv_sweep(n: int, rng: random.Random) -> list[Case]:
    """Transposed convolutions with every parameter at once, wider than the hidden cases."""
    cases = []
    while len(cases) < SWEEP_CASES:
        groups = rng.choice([1, 1, 2, 3])
        stride = [rng.randint(1, 5) for _ in range(n)]
        dilation = [rng.randint(1, 4) for _ in range(n)]
        padding = [rng.randint(0, 4) for _ in range(n)]
        kernel = [rng.randint(1, 5) for _ in range(n)]
        size = [rng.randint(1, 7) for _ in range(n)]
        # Also output_padding >= max(stride, dilation) now and then: torch raises, so must we.
        output_padding = [
            rng.randint(0, max(s, d) - (rng.random() > 0.1))
            for s, d in zip(stride, dilation, strict=True)
        ]
        lengths = [
            (w_in - 1) * s - 2 * p + d * (k - 1) + op + 1
            for w_in, s, p, d, k, op in zip(
                size, stride, padding, dilation, kernel, output_padding, strict=True
            )
        ]
        if min(lengths) < 1:
            continue  # torch itself is inconsistent about empty outputs
        batch = [] if rng.random() < 0.2 else [rng.randint(1, 3)]
        as_tuple = rng.random() < 0.5
        kwargs = {
            name: tuple(values) if as_tuple or len(set(values)) > 1 else values[0]
            for name, values in [
                ("stride", stride),
                ("padding", padding),
                ("output_padding", output_padding),
                ("dilation", dilation),
            ]
        }
        kwargs["groups"] = groups
        raises = any(
            op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation, strict=True)
        )
        params = {
            "input": [*batch, groups * rng.randint(1, 2), *size],
            "weight": [0, rng.randint(1, 3), *kernel],
            "bias": rng.random() < 0.5,
            "kwargs": kwargs,
            "dtype": rng.choice(["float32", "float64"]),
            "grad": not raises and rng.random() < 0.5,
        }
        params["weight"][0] = params["input"][len(batch)]
        grade_id = "ct1d_gradients" if n == 1 else "ct2d_gradients"
        cases.append(Case(grade_id, f"conv_transpose{n}d", params, rng.randrange(2**31)))
    return cases


def interpolate_sweep(rng: random.Random) -> list[Case]:
    """Resizes in every mode, with sizes and scale factors the hidden cases leave out."""
    spatial_dims = {
        "nearest": [1, 2, 3],
        "nearest-exact": [1, 2, 3],
        "linear": [1],
        "bilinear": [2],
        "bicubic": [2],
    }
    scales = [0.3, 0.5, 0.7, 1.1, 1.5, 1.7, 2, 2.5, 3, 4 / 3]
    cases = []
    for _ in range(SWEEP_CASES):
        mode = rng.choice(list(spatial_dims))
        n = rng.choice(spatial_dims[mode])
        size = [rng.randint(1 if mode != "bicubic" else 2, 9) for _ in range(n)]
        kwargs: dict = {"mode": mode}
        by_size = rng.random() < 0.5
        if by_size:
            kwargs["size"] = tuple(rng.randint(1, 14) for _ in range(n))
        else:
            factors = [rng.choice(scales) for _ in range(n)]
            size = [max(v, 4) for v in size]  # keep every output non-empty
            kwargs["scale_factor"] = tuple(factors) if rng.random() < 0.5 else factors[0]
            kwargs["recompute_scale_factor"] = rng.choice([None, True, False])
        if not mode.startswith("nearest"):
            kwargs["align_corners"] = rng.choice([None, True, False])
        # torch's own backward disagrees with its forward for nearest and bicubic when a
        # scale_factor is used as is (it differentiates with in/out): no gradient there.
        differentiable = (
            by_size or kwargs.get("recompute_scale_factor") or mode in ("linear", "bilinear")
        )
        params = {
            "input": [rng.randint(1, 2), rng.randint(1, 3), *size],
            "kwargs": kwargs,
            "dtype": rng.choice(["float32", "float64"]),
            "grad": bool(differentiable) and rng.random() < 0.5,
        }
        grade_id = "interp_gradients" if params["grad"] else "interp_dtypes"
        cases.append(Case(grade_id, "interpolate", params, rng.randrange(2**31)))
    return cases


@pytest.mark.parametrize("n", [1, 2])
def test_conv_transpose_broad_sweep(answers, n):
    implementation = answers[list(NOTEBOOKS)[n - 1]][f"conv_transpose{n}d"]
    cases = conv_sweep(n, random.Random(f"conv_transpose{n}d"))
    failed = failures(cases, implementation)
    assert not failed, f"{len(failed)} of {len(cases)} cases fail, first: {failed[0]}"


def test_interpolate_broad_sweep(answers):
    cases = interpolate_sweep(random.Random("interpolate"))
    failed = failures(cases, answers["03_interpolate"]["interpolate"])
    assert not failed, f"{len(failed)} of {len(cases)} cases fail, first: {failed[0]}"


def test_sweep_can_fail(answers):
    """The comparison the sweep relies on rejects a wrong answer (here: stride ignored)."""
    conv_transpose1d = answers["01_conv_transpose1d"]["conv_transpose1d"]

    def ignores_stride(input, weight, bias=None, stride=1, **kwargs):
        return conv_transpose1d(input, weight, bias, **kwargs)

    cases = [
        c for c in conv_sweep(1, random.Random(0)) if c.params["kwargs"]["stride"] not in (1, (1,))
    ]
    assert failures(cases[:10], ignores_stride)


def test_the_answers_take_the_integral_values_torch_takes(answers):
    """NumPy integers, 1-sequences (expanded for 2-d parameters) and lists: what torch
    takes, the answers take, with torch's result; a float stride both refuse."""
    one, two, three = (answers[a] for a in NOTEBOOKS)
    i = np.int64
    x1, w1 = torch.randn(2, 2, 5), torch.randn(2, 3, 3)
    for kwargs in (
        {"stride": i(2), "padding": (i(1),), "dilation": [2], "groups": i(1)},
        {"stride": (3,), "output_padding": i(1), "groups": i(2)},
    ):
        expected = F.conv_transpose1d(x1, w1, **kwargs)
        torch.testing.assert_close(one["conv_transpose1d"](x1, w1, **kwargs), expected)
    assert one["output_length"](i(5), i(3), stride=i(2), output_padding=i(1)) == 12
    with pytest.raises(TypeError):
        F.conv_transpose1d(x1, w1, stride=2.0)
    with pytest.raises(ValueError):
        one["conv_transpose1d"](x1, w1, stride=2.0)
    x2, w2 = torch.randn(1, 2, 3, 4), torch.randn(2, 1, 2, 3)
    for kwargs in (
        {"stride": (2,), "padding": i(1), "dilation": (i(1), 2)},
        {"stride": [i(2), 3], "output_padding": (1,), "groups": i(2)},
    ):
        expected = F.conv_transpose2d(x2, w2, **kwargs)
        torch.testing.assert_close(two["conv_transpose2d"](x2, w2, **kwargs), expected)
    kernel = torch.randn(3)
    matrix = F.conv1d(torch.eye(6)[:, None, :], kernel[None, None])[:, 0, :].T
    torch.testing.assert_close(one["conv1d_matrix"](kernel, i(6)), matrix)
    taps = F.conv_transpose2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2), stride=2)
    assert torch.equal(two["coverage_map"]((i(2),), i(2), [3, i(3)]), taps[0, 0].long())
    image = torch.randn(1, 2, 4, 5)
    for kwargs in ({"size": i(7)}, {"size": (i(3), 8), "mode": "bilinear"}):
        ours = three["interpolate"](image, **kwargs)
        torch.testing.assert_close(ours, F.interpolate(image, **kwargs))


def test_the_module_takes_what_nn_conv_transpose1d_takes(answers):
    """Constructor arguments as NumPy integers and 1-tuples, and forward's output_size."""
    i = np.int64
    args = (i(2), i(4), (3,))
    kwargs = {"stride": (i(2),), "padding": i(1), "groups": i(2), "dilation": [1]}
    ours, theirs = (
        answers["01_conv_transpose1d"]["ConvTranspose1d"](*args, **kwargs),
        nn.ConvTranspose1d(*args, **kwargs),
    )
    assert ours.weight.shape == theirs.weight.shape
    with torch.no_grad():
        ours.weight.copy_(theirs.weight)
        ours.bias.copy_(theirs.bias)
    x = torch.randn(3, 2, 5)
    for output_size in (None, [9], [10], (3, 4, 10), torch.Size([3, 4, 9])):
        torch.testing.assert_close(
            ours(x, output_size=output_size), theirs(x, output_size=output_size)
        )
    for output_size in ([8], [11], [4, 10]):
        with pytest.raises(ValueError):
            theirs(x, output_size=output_size)
        with pytest.raises(ValueError):
            ours(x, output_size=output_size)


@pytest.mark.parametrize(
    ("mode", "align_corners"),
    [
        ("bilinear", False),
        ("bilinear", True),
        ("bicubic", False),
        ("bicubic", True),
        ("linear", False),
    ],
)
def test_a_large_float32_resize_matches_torch_within_its_own_tolerance(
    answers, mode, align_corners
):
    """345x456 -> 270x270 in float32: the source coordinates rounded as torch's kernels
    round them, every element within torch.testing's float32 tolerance of torch's."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 345, 456, generator=generator)
    size: tuple[int, ...] = (270, 270)
    if mode == "linear":
        image, size = image[0], (270,)
    kwargs = {"size": size, "mode": mode, "align_corners": align_corners}
    expected = F.interpolate(image, **kwargs)
    torch.testing.assert_close(answers["03_interpolate"]["interpolate"](image, **kwargs), expected)
