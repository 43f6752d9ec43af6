"""The shared checks, validated against torch and against answers derived independently.

The naive answers below are written from the lecture's formulas, index by index, and share
nothing with ``course_checks``: a transposed convolution adds x[i]·w[k] at output
i·s + k·d − p; interpolation maps output pixel j to an input coordinate and mixes the
neighbours. If the harness and these derivations agree on every case, the harness is fair.
"""

from __future__ import annotations

import gc
import importlib
import io
import itertools
import json
import linecache
import math
import re
import shutil
import subprocess
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _pop_mode_temporarily

from autograder import course_checks as cc
from autograder import hidden_cases as hc

REPO_ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------
# Independent answers, from the lecture's formulas
# --------------------------------------------------------------------------------------


def _as_tuple(value, n):
    return tuple(value) if isinstance(value, list | tuple) else (value,) * n


def naive_conv_transpose(
    n,
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    *,
    flip=False,
    swap_channels=False,
    channel_memory=None,
    padding_mode="crop",
    output_padding_mode="end",
    stride_mode="spread",
    use_dilation=True,
    bias_times=1,
):
    """out[..., i·s + k·d − p] += x[..., i] · w[..., k], with groups and output_padding.

    The keyword-only flags make the typical student mistakes, for the diagnosis tests.
    """
    s, p, op, d = (_as_tuple(v, n) for v in (stride, padding, output_padding, dilation))
    if not use_dilation:
        d = (1,) * n
    unbatched = input.dim() == n + 1
    x = input[None] if unbatched else input
    w = weight.flip(list(range(-n, 0))) if flip else weight
    batch, c_in = x.shape[:2]
    c_out_g = w.shape[1]
    c_in_g = c_in // groups
    if swap_channels:  # read the weight as (C_out, C_in // groups, k), as conv does
        w = w.reshape(groups, c_in_g, c_out_g, *w.shape[2:]).transpose(1, 2).reshape(w.shape)
    if channel_memory:  # the conv weight a student built, read back index by index
        flat, picked = w.reshape(c_in * c_out_g, *w.shape[2:]), torch.empty_like(w)
        for ci, co in itertools.product(range(c_in), range(c_out_g)):
            group, i = divmod(ci, c_in_g)
            row = (group * c_out_g + co) * c_in_g + i  # in conv's (C_out, C_in // groups)
            if channel_memory == "reshaped":  # weight.reshape(C_out, C_in // groups, k)
                picked[ci, co] = flat[row]
            else:  # "transposed whole": weight.transpose(0, 1).reshape(C_out, C_in // groups, k)
                picked[ci, co] = w[row % c_in, row // c_in]
        w = picked
    sizes, kernel = x.shape[2:], w.shape[2:]
    lengths = []
    for a in range(n):
        if op[a] >= max(s[a], d[a]):
            raise ValueError("output_padding must be smaller than max(stride, dilation)")
        lengths.append((sizes[a] - 1) * s[a] + d[a] * (kernel[a] - 1) + 1)
    spread = s if stride_mode == "spread" else (1,) * n
    full_lengths = [(sizes[a] - 1) * spread[a] + d[a] * (kernel[a] - 1) + 1 for a in range(n)]
    full = torch.zeros(batch, c_out_g * groups, *full_lengths, dtype=x.dtype)
    for b, ci, co in itertools.product(range(batch), range(c_in), range(c_out_g)):
        group = ci // c_in_g
        for i in itertools.product(*[range(v) for v in sizes]):
            for k in itertools.product(*[range(v) for v in kernel]):
                at = tuple(i[a] * spread[a] + k[a] * d[a] for a in range(n))
                full[(b, group * c_out_g + co) + at] += x[(b, ci) + i] * w[(ci, co) + k]
    bias_view = bias.reshape(-1, *[1] * n) if bias is not None else 0

    def pad(t, before, after):
        widths = []
        for a in reversed(range(n)):
            widths += [before[a], after[a]]
        return F.pad(t, widths)

    def crop(t, starts, counts):
        index = [slice(None), slice(None)] + [
            slice(starts[a], starts[a] + counts[a]) for a in range(n)
        ]
        return t[tuple(index)]

    zeros = (0,) * n
    if stride_mode == "conv":  # crop, then keep every s-th output (conv1d with stride s)
        out = crop(full, p, [full_lengths[a] - 2 * p[a] for a in range(n)])
        out = out[(slice(None), slice(None)) + tuple(slice(None, None, v) for v in s)]
    elif padding_mode == "add":
        out = pad(pad(full, p, p), zeros, op)
    else:
        core = [lengths[a] - 2 * p[a] for a in range(n)]
        if any(v <= 0 for v in core):
            raise ValueError("the output would be empty")
        if output_padding_mode == "end":
            out = crop(pad(full, zeros, op), p, [core[a] + op[a] for a in range(n)])
        elif output_padding_mode == "start":
            out = pad(crop(full, p, core), op, zeros)
        elif output_padding_mode == "window":  # the crop window moved output_padding back
            out = crop(pad(full, op, zeros), p, [core[a] + op[a] for a in range(n)])
        elif output_padding_mode == "both":
            out = pad(crop(full, p, core), op, op)
        elif output_padding_mode == "zeros":
            out = pad(crop(full, p, core) + bias_view * bias_times, zeros, op)
            return out[0] if unbatched else out
        else:
            raise AssertionError(output_padding_mode)
    out = out + bias_view * bias_times
    return out[0] if unbatched else out


def naive_conv_transpose1d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    return naive_conv_transpose(
        1, input, weight, bias, stride, padding, output_padding, groups, dilation
    )


def naive_conv_transpose2d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    return naive_conv_transpose(
        2, input, weight, bias, stride, padding, output_padding, groups, dilation
    )


def naive_output_length(L, kernel_size, stride=1, padding=0, output_padding=0, dilation=1):
    """The lecture's s(W − 1) + w, with dilation, the crop by padding and output_padding."""
    if output_padding >= max(stride, dilation):
        raise ValueError("output_padding must be smaller than max(stride, dilation)")
    length = (L - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if length <= 0:
        raise ValueError("the output would be empty")
    return length


def naive_conv1d_matrix(kernel, input_length):
    """Row i holds the kernel at columns i .. i + w − 1 (the lecture's banded matrix)."""
    w = kernel.shape[0]
    matrix = torch.zeros(input_length - w + 1, input_length, dtype=kernel.dtype)
    for i in range(input_length - w + 1):
        for k in range(w):
            matrix[i, i + k] = kernel[k]
    return matrix


def naive_coverage_map(kernel_size, stride, input_size):
    """Each input pixel stamps a kernel-sized block of ones at (i·s_h, j·s_w)."""
    (kh, kw), (sh, sw), (h, w) = (_as_tuple(v, 2) for v in (kernel_size, stride, input_size))
    counts = torch.zeros((h - 1) * sh + kh, (w - 1) * sw + kw, dtype=torch.int64)
    for i, j in itertools.product(range(h), range(w)):
        counts[i * sh : i * sh + kh, j * sw : j * sw + kw] += 1
    return counts


class NaiveConvTranspose1d(nn.Module):
    """Parameters shaped and initialised as torch documents for ConvTranspose1d."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
    ):
        super().__init__()
        self.options = (stride, padding, output_padding, groups, dilation)
        bound = 1 / math.sqrt(out_channels // groups * kernel_size)
        shape = (in_channels, out_channels // groups, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = (
            nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None
        )

    def forward(self, x, output_size=None):
        stride, padding, output_padding, groups, dilation = self.options
        if output_size is not None:  # torch's documented range: the shortest length + 0 … s − 1
            kernel = self.weight.shape[-1]
            shortest = (x.shape[-1] - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1
            output_padding = list(output_size)[-1] - shortest
            if not 0 <= output_padding < stride:
                raise ValueError(f"output_size {output_size} is out of reach")
        return naive_conv_transpose1d(
            x, self.weight, self.bias, stride, padding, output_padding, groups, dilation
        )


def _cubic_weight(t, a=-0.75):
    t = abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def _interpolate_refused(dims, size, scale_factor, mode, align_corners) -> bool:
    """F.interpolate's documented refusals: align_corners with a nearest mode, both or
    neither of size and scale_factor, a mode for another number of spatial dimensions."""
    needs = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}
    return (
        (mode.startswith("nearest") and align_corners is not None)
        or (size is None) == (scale_factor is None)
        or needs.get(mode, dims) != dims
    )


def naive_interpolate(
    input,
    size=None,
    scale_factor=None,
    mode="nearest",
    align_corners=None,
    recompute_scale_factor=None,
    antialias=False,
):
    """Output pixel j reads input coordinate (j + ½)·W_in/W_out − ½ (or j·(W_in−1)/(W_out−1)
    with align_corners), computed in float64, one output pixel at a time. Raises where
    torch's documentation says it does."""
    if _interpolate_refused(input.dim(), size, scale_factor, mode, align_corners):
        raise ValueError("torch refuses these arguments")
    n = input.dim() - 2
    in_sizes = input.shape[2:]
    if size is not None:
        out_sizes, scales = list(_as_tuple(size, n)), [None] * n
    else:
        factors = list(_as_tuple(scale_factor, n))
        out_sizes = [math.floor(i * f) for i, f in zip(in_sizes, factors, strict=True)]
        scales = [None] * n if recompute_scale_factor else factors

    def taps(j, n_in, n_out, scale):
        if mode in ("linear", "bilinear", "bicubic") and align_corners:
            src = j * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        else:
            ratio = 1 / scale if scale is not None else n_in / n_out
            if mode == "nearest":
                return [(min(math.floor(j * ratio), n_in - 1), 1.0)]
            if mode == "nearest-exact":
                return [(min(math.floor((j + 0.5) * ratio), n_in - 1), 1.0)]
            src = (j + 0.5) * ratio - 0.5
            if mode != "bicubic":
                src = max(src, 0.0)
        low = math.floor(src)
        if mode == "bicubic":
            return [
                (min(max(low + k, 0), n_in - 1), _cubic_weight(src - low - k))
                for k in (-1, 0, 1, 2)
            ]
        low = min(low, n_in - 1)
        return [(low, 1 - (src - low)), (min(low + 1, n_in - 1), src - low)]

    out = torch.zeros(*input.shape[:2], *out_sizes, dtype=input.dtype)
    for j in itertools.product(*[range(v) for v in out_sizes]):
        per_axis = [taps(j[a], in_sizes[a], out_sizes[a], scales[a]) for a in range(n)]
        value = 0
        for combo in itertools.product(*per_axis):
            weight = math.prod(t[1] for t in combo)
            value = value + input[(slice(None), slice(None)) + tuple(t[0] for t in combo)] * weight
        out[(slice(None), slice(None)) + j] = value
    return out


class NaiveResizeConv2d(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv(naive_interpolate(x, scale_factor=2, mode="bilinear"))


NAIVE = {
    "conv_transpose1d": naive_conv_transpose1d,
    "conv_transpose2d": naive_conv_transpose2d,
    "output_length": naive_output_length,
    "conv1d_matrix": naive_conv1d_matrix,
    "coverage_map": naive_coverage_map,
    "ConvTranspose1d": NaiveConvTranspose1d,
    "interpolate": naive_interpolate,
    "ResizeConv2d": NaiveResizeConv2d,
}

CONV_IDS = [g for g, info in cc.GRADE_IDS.items() if g.startswith(("ct1d_", "ct2d_"))]
INTERP_IDS = [g for g, info in cc.GRADE_IDS.items() if g.startswith("interp_")]


# --------------------------------------------------------------------------------------
# Cases and references
# --------------------------------------------------------------------------------------


def test_grade_ids_match_the_plan():
    points = {}
    for info in cc.GRADE_IDS.values():
        points[info.assignment] = points.get(info.assignment, 0) + info.points
    assert points == {"01_conv_transpose1d": 100, "02_conv_transpose2d": 100, "03_interpolate": 100}
    assert set(cc.PUBLIC_CASES) == set(cc.GRADE_IDS)
    assert all(cc.PUBLIC_CASES[g] for g in cc.GRADE_IDS)
    assert all(c.target == cc.GRADE_IDS[g].target for g, cs in cc.PUBLIC_CASES.items() for c in cs)


def _torch_should_raise(case: cc.Case) -> bool:
    """Independently of torch: an invalid output_padding or an empty output."""
    if case.target == "output_length":
        try:
            naive_output_length(**case.params["args"])
        except ValueError:
            return True
        return False
    if case.target == "interpolate":
        kw = case.params["kwargs"]
        return _interpolate_refused(
            len(case.params["input"]),
            kw.get("size"),
            kw.get("scale_factor"),
            kw.get("mode", "nearest"),
            kw.get("align_corners"),
        )
    if case.target == "ConvTranspose1d" and "output_size" in case.params:
        init, length = case.params["init"], case.params["input"][-1]
        stride = init.get("stride", 1)
        shortest = (
            (length - 1) * stride
            - 2 * init.get("padding", 0)
            + init.get("dilation", 1) * (init["kernel_size"] - 1)
            + 1
        )
        return not 0 <= case.params["output_size"][-1] - shortest < stride
    if case.target in ("conv_transpose1d", "conv_transpose2d"):
        n = 1 if case.target.endswith("1d") else 2
        kw = case.params["kwargs"]
        s, p, op, d = (
            _as_tuple(kw.get(k, v), n)
            for k, v in (("stride", 1), ("padding", 0), ("output_padding", 0), ("dilation", 1))
        )
        sizes, kernel = case.params["input"][-n:], case.params["weight"][-n:]
        return any(
            op[a] >= max(s[a], d[a])
            or (sizes[a] - 1) * s[a] - 2 * p[a] + d[a] * (kernel[a] - 1) + op[a] + 1 <= 0
            for a in range(n)
        )
    return False


def _all_cases(seeds=range(3)):
    for grade_id in cc.GRADE_IDS:
        yield from cc.PUBLIC_CASES[grade_id]
        for seed in seeds:
            yield from hc.hidden_cases(grade_id, seed)


def test_every_reference_runs_or_raises_where_expected():
    raising = 0
    for case in _all_cases():
        inputs = cc.make_inputs(case)
        expected = cc.reference_outputs(case, inputs)
        assert (expected == {}) == _torch_should_raise(case), case.describe()
        raising += expected == {}
        for value in expected.values():
            assert type(value) is torch.Tensor
        if case.params.get("grad") and expected:
            assert {"grad_input", "output"} <= set(expected), case.describe()
    assert raising >= 6  # the public error cases at least


def test_the_lectures_numbers():
    def output_of(grade_id, index):
        case = cc.PUBLIC_CASES[grade_id][index]
        return cc.reference_outputs(case, cc.make_inputs(case))["output"].flatten().tolist()

    assert output_of("ct1d_basic", 0) == [2, 7, 4, -4, -2, 1]
    assert output_of("ct1d_basic", 1) == [0, 0, 1, 2, 3, 0, 0, 0, 0]
    assert output_of("ct1d_stride", 0) == [2, 4, 1, 6, -3, 0, -1, -2, 1]
    assert output_of("ct1d_module", 0) == [1, 2, 1, 0, -1, -2, -1]
    assert output_of("interp_nearest_scale", 0)[:6] == [1, 1, 1, 2, 2, 2]
    bilinear = output_of("interp_bilinear_scale", 0)
    assert bilinear[12:18] == pytest.approx([5 / 3, 5 / 3, 2, 7 / 3, 8 / 3, 8 / 3], abs=1e-6)
    case = next(c for c in cc.PUBLIC_CASES["ct2d_coverage_map"] if c.params["kernel_size"] == 4)
    counts = cc.reference_outputs(case, {})["output"]
    # 4x4 kernel, stride 3: overlaps of one pixel every 3, so counts 1, 2 (edges) and 4 (corners)
    assert counts.shape == (13, 13) and sorted(set(counts.flatten().tolist())) == [1, 2, 4]
    assert counts[3, 3] == 4 and counts[3, 1] == 2 and counts[1, 1] == 1


def test_hidden_cases_are_seeded_and_small():
    for grade_id in cc.GRADE_IDS:
        first = [c.describe() for c in hc.hidden_cases(grade_id, 7)]
        assert first == [c.describe() for c in hc.hidden_cases(grade_id, 7)]
        assert first != [c.describe() for c in hc.hidden_cases(grade_id, 8)] or grade_id in (
            "ct1d_output_length",
        )
    for case in _all_cases():
        for tensor in cc.make_inputs(case).values():
            assert tensor.numel() <= 600, case.describe()


def test_cases_survive_json():
    for case in _all_cases(seeds=[0]):
        back = cc.Case.from_json(json.loads(json.dumps(case.to_json())))
        inputs = cc.make_inputs(back)
        assert all(torch.equal(inputs[k], v) for k, v in cc.make_inputs(case).items())
        assert back.describe() == case.describe()


# --------------------------------------------------------------------------------------
# The independent answers pass every case
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("grade_id", CONV_IDS)
def test_naive_conv_answers_pass_the_public_checks(grade_id, capsys):
    cc.check(grade_id, NAIVE[cc.GRADE_IDS[grade_id].target])
    printed = capsys.readouterr()
    assert printed.err == ""
    assert printed.out.count("\nok   ") + printed.out.startswith("ok   ") == len(
        cc.PUBLIC_CASES[grade_id]
    )


@pytest.mark.parametrize("grade_id", INTERP_IDS)
def test_naive_interpolation_passes_the_public_checks(grade_id, capsys):
    cc.check(grade_id, NAIVE[cc.GRADE_IDS[grade_id].target])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("grade_id", list(cc.GRADE_IDS))
def test_naive_answers_pass_the_hidden_checks(grade_id, capsys):
    hc.check_hidden(grade_id, NAIVE[cc.GRADE_IDS[grade_id].target], seed=11)
    hc.check_hidden(grade_id, NAIVE[cc.GRADE_IDS[grade_id].target], seed=12)
    assert capsys.readouterr().err == ""


def test_check_hidden_reads_the_seed_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv(hc.SEED_VARIABLE, "1234")
    hc.check_hidden("ct1d_stride", naive_conv_transpose1d)
    assert "seed 1234" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# The kernel guard
# --------------------------------------------------------------------------------------

_X1 = torch.randn(1, 2, 5)
_W1 = torch.randn(2, 3, 3)
_X2 = torch.randn(1, 1, 3, 3)
conv_transpose_alias = F.conv_transpose1d


def _autograd_of_conv1d():
    grown = torch.zeros(1, 3, 7, requires_grad=True)
    y = F.conv1d(grown, _W1)
    return torch.autograd.grad(y, grown, _X1)[0]


def _autograd_of_conv2d():
    grown = torch.zeros(1, 1, 4, 4, requires_grad=True)
    y = F.conv2d(grown, torch.ones(1, 1, 2, 2))
    return torch.autograd.grad(y, grown, _X2)[0]


FORBIDDEN_ROUTES = {
    "F.conv_transpose1d": lambda: F.conv_transpose1d(_X1, _W1),
    "torch.conv_transpose1d": lambda: torch.conv_transpose1d(_X1, _W1),
    "an alias": lambda: conv_transpose_alias(_X1, _W1),
    "torch.ops.aten.conv_transpose1d": lambda: torch.ops.aten.conv_transpose1d(_X1, _W1),
    "torch.convolution(transposed=True)": lambda: torch.convolution(
        _X1, _W1, None, [1], [0], [1], True, [0], 1
    ),
    "torch.ops.aten._convolution": lambda: torch.ops.aten._convolution(
        _X1, _W1, None, [1], [0], [1], True, [0], 1, False, False, False, False
    ),
    "F.conv_transpose2d": lambda: F.conv_transpose2d(_X2, torch.ones(1, 1, 2, 2)),
    "nn.ConvTranspose1d": lambda: nn.ConvTranspose1d(2, 3, 3)(_X1),
    "nn.ConvTranspose2d": lambda: nn.ConvTranspose2d(1, 1, 2)(_X2),
    "autograd of conv1d": _autograd_of_conv1d,
    "autograd of conv2d": _autograd_of_conv2d,
    "torch.nn.grad.conv1d_input": lambda: torch.nn.grad.conv1d_input((1, 3, 7), _W1, _X1),
    "F.interpolate": lambda: F.interpolate(_X2, scale_factor=2, mode="bilinear"),
    "F.interpolate nearest-exact": lambda: F.interpolate(_X1, size=9, mode="nearest-exact"),
    "F.upsample": lambda: F.upsample(_X2, scale_factor=2),
    "nn.Upsample": lambda: nn.Upsample(scale_factor=2, mode="bilinear")(_X2),
    "torch._C._nn.upsample_nearest1d": lambda: torch._C._nn.upsample_nearest1d(_X1, [10]),
    "F.grid_sample": lambda: F.grid_sample(_X2, torch.zeros(1, 2, 2, 2), align_corners=False),
    "F.affine_grid + grid_sample": lambda: F.grid_sample(
        _X2,
        F.affine_grid(torch.eye(2, 3)[None], [1, 1, 6, 6], align_corners=False),
        align_corners=False,
    ),
}


def _in_a_thread():
    result = {}

    def work():
        try:
            result["output"] = F.conv_transpose1d(_X1, _W1)
        except BaseException as error:
            result["error"] = error

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["output"]


def _with_the_mode_popped():
    with _pop_mode_temporarily():
        return F.conv_transpose1d(_X1, _W1)


def _with_the_dispatch_modes_disabled():
    with torch._C._DisableTorchDispatch():
        return F.interpolate(_X2, scale_factor=2)


def _in_inference_mode():
    with torch.inference_mode():
        return F.interpolate(_X2, scale_factor=2, mode="bilinear")


def _with_the_kernels_removed():
    # A submission hunting the guard's registrations down (only the guard's: destroying
    # torch's own libraries would break the rest of this process)
    for candidate in gc.get_objects():
        if type(candidate) is cc.ForbiddenKernelGuard and candidate._library is not None:
            candidate._library._destroy()
    with _pop_mode_temporarily():
        return F.conv_transpose1d(_X1, _W1)


FORBIDDEN_ROUTES.update(
    {
        "in another thread": _in_a_thread,
        "with the dispatch mode popped": _with_the_mode_popped,
        "with dispatch modes disabled": _with_the_dispatch_modes_disabled,
        "in inference mode": _in_inference_mode,
        "aten.slow_conv_transpose2d": lambda: torch.ops.aten.slow_conv_transpose2d(
            _X2, torch.ones(1, 1, 2, 2), [2, 2]
        ),
        "aten._convolution, groups": lambda: torch.ops.aten._convolution(
            torch.randn(1, 4, 3),
            torch.randn(4, 1, 2),
            None,
            [2],
            [0],
            [1],
            True,
            [0],
            2,
            False,
            False,
            True,
            True,
        ),
        "the guard's kernels removed": _with_the_kernels_removed,
        "the profile hook removed": lambda: (sys.setprofile(None), _X1 + 1),
        "torch._decomp's Python interpolation": lambda: importlib.import_module(
            "torch._decomp.decompositions"
        )._upsample_linear_vec(_X2, [5, 5], False, None),
        "torch._decomp's Python grid sampler": lambda: importlib.import_module(
            "torch._decomp.decompositions"
        )._grid_sampler_2d(_X2, torch.zeros(1, 2, 2, 2), 0, 0, False),
    }
)


@pytest.mark.filterwarnings("ignore:`nn.functional.upsample` is deprecated")
@pytest.mark.parametrize("route", list(FORBIDDEN_ROUTES))
def test_the_guard_catches_every_route(route):
    guard = cc.ForbiddenKernelGuard()
    with pytest.raises(cc.ForbiddenKernelError) as raised:
        with guard.watching():
            FORBIDDEN_ROUTES[route]()
    kernel = raised.value.kernel
    # a forbidden kernel by name, or the tampering call that preceded it, in parentheses
    assert kernel.startswith("(") or any(w in kernel for w in ("conv", "sampl", "grid")), kernel
    # and torch's own kernels work again once the graded call is over
    assert F.conv_transpose1d(_X1, _W1).shape == (1, 3, 7)
    assert F.interpolate(_X2, scale_factor=2).shape == (1, 1, 6, 6)


def test_a_forbidden_route_fails_the_case_even_when_the_error_is_caught():
    def sneaky(input, weight, bias=None, **kwargs):
        try:
            return F.conv_transpose1d(input, weight, bias, **kwargs)
        except Exception:
            return naive_conv_transpose1d(input, weight, bias, **kwargs)

    case = cc.PUBLIC_CASES["ct1d_stride"][0]
    verdict = cc.grade_case(case, sneaky)
    assert not verdict.passed and "aten::convolution(transposed=True)" in verdict.message
    with pytest.raises(AssertionError, match="torch's own kernel"):
        cc.check("ct1d_basic", F.conv_transpose1d)
    with pytest.raises(AssertionError, match="upsample_bilinear2d"):
        cc.check("interp_bilinear_size", F.interpolate)


def test_the_guard_lets_the_allowed_operations_through():
    guard = cc.ForbiddenKernelGuard()
    with guard.watching():
        F.conv1d(torch.randn(1, 3, 7), _W1)
        F.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), padding=1, stride=2)
        F.pad(_X1, (2, 2))
        F.fold(F.unfold(torch.randn(1, 2, 4, 4), 2), (4, 4), 2)
        torch.einsum("bci,cok->boik", _X1, _W1)
        _X1[0].T @ torch.randn(2, 3)
        torch.zeros(5).index_add_(0, torch.tensor([0, 2, 2]), torch.ones(3))
        torch.zeros(5).scatter_add_(0, torch.tensor([1, 1, 4]), torch.ones(3))
        # conv1d's own gradient is only forbidden inside the forward call; here it is the
        # building block, and its forward pass is a plain convolution
        weight = torch.randn(2, 2, 3, requires_grad=True)
        F.conv1d(torch.randn(1, 2, 5), weight).sum()
    assert guard.reached == []


def test_gradients_are_taken_outside_the_guard():
    """A forward built from conv1d is legal; autograd then runs conv1d's backward outside."""

    def via_conv1d(
        input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
    ):
        """Stride 1, no padding, one group: the lecture's full convolution, kernel flipped."""
        reach = dilation * (weight.shape[-1] - 1)
        spread = F.pad(input, (reach, reach))
        return F.conv1d(spread, weight.flip(-1).transpose(0, 1), bias, dilation=dilation)

    cc.check("ct1d_basic", via_conv1d)
    gradient_case = cc.PUBLIC_CASES["ct1d_gradients"][1]
    assert gradient_case.params["kwargs"] == {"dilation": 2}
    verdict = cc.grade_case(gradient_case, via_conv1d)
    assert verdict.passed, verdict.message


# --------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------


class _AlwaysEqual:
    shape = (1, 1, 6)
    dtype = torch.float32

    def __eq__(self, other):
        return True

    def __getattr__(self, name):
        return lambda *a, **k: self


class _TensorSubclass(torch.Tensor):
    pass


def _lecture_case():
    case = cc.PUBLIC_CASES["ct1d_basic"][0]
    inputs = cc.make_inputs(case)
    return case, inputs, cc.reference_outputs(case, inputs)


def test_compare_accepts_the_right_answer_only():
    case, inputs, expected = _lecture_case()
    right = torch.tensor([[[2.0, 7.0, 4.0, -4.0, -2.0, 1.0]]])
    assert cc.compare(case, inputs, expected, {"output": right}).passed
    rejected = {
        "subclass": right.as_subclass(_TensorSubclass),
        "parameter": nn.Parameter(right.clone()),
        "float64": right.double(),
        "shape": right[..., :5],
        "unsqueezed": right[None],
        "NaN": right.clone().index_fill_(-1, torch.tensor([3]), float("nan")),
        "inf": right.clone().index_fill_(-1, torch.tensor([0]), float("inf")),
        "always equal": _AlwaysEqual(),
        "list": right.tolist(),
        "off by 1e-3": right + 1e-3,
        "not a tensor after the sandbox": cc.NotATensor("builtins.list"),
    }
    for name, value in rejected.items():
        verdict = cc.compare(case, inputs, expected, {"output": value})
        assert not verdict.passed, name
        assert case.describe() in verdict.message
    assert cc.compare(case, inputs, expected, {"output": right + 1e-6}).passed


def test_compare_messages_name_shape_and_largest_error():
    case, inputs, expected = _lecture_case()
    wrong = torch.tensor([[[2.0, 7.0, 4.0, -4.0, -2.5, 1.0]]])
    message = cc.compare(case, inputs, expected, {"output": wrong}).message
    assert "largest absolute error 0.5 at [0, 0, 4]" in message
    message = cc.compare(case, inputs, expected, {"output": wrong[..., :5]}).message
    assert "expected (1, 1, 6), got (1, 1, 5)" in message


def test_a_value_mismatch_shows_the_tolerance_and_both_values_apart():
    """float64 results 3e-7 apart print alike at 6 digits: the message shows more, and the
    tolerance rule with its numbers (float64: 1e-9 relative, scaled absolute)."""
    case = _case1d((1, 1, 4), (1, 1, 3), seed=3)
    inputs = cc.make_inputs(case)
    expected = cc.reference_outputs(case, inputs)
    right = naive_conv_transpose1d(inputs["input"], inputs["weight"])
    message = cc.compare(case, inputs, expected, {"output": right + 3e-7}).message
    shown = re.search(r"expected (\S+), got (\S+);", message)
    assert shown and shown.group(1) != shown.group(2), message
    assert float(shown.group(2)) - float(shown.group(1)) == pytest.approx(3e-7, rel=0.01)
    scale = max(1.0, expected["output"].abs().max().item())
    assert f"atol + rtol·|expected| = {1e-9 * scale:.3g} + 1e-09·" in message, message


def _in_float32_then_back(input, weight, bias=None, **kwargs):
    """A float64 answer with one float32 step (a tensor made without dtype=, say)."""
    return naive_conv_transpose1d(input.float(), weight.float(), None, **kwargs).double()


def test_a_float64_result_computed_in_float32_is_named():
    case = _case1d((2, 2, 5), (2, 3, 3), stride=2)
    verdict = cc.grade_case(case, _in_float32_then_back)
    assert not verdict.passed and "went through float32" in verdict.diagnosis, verdict.message
    assert cc.grade_case(case, naive_conv_transpose1d).passed


def test_torch_refusing_to_mix_dtypes_is_explained():
    def mixes(input, weight, bias=None, **kwargs):
        spread = torch.zeros(input.shape)  # float32 whatever the input's dtype
        return F.conv1d(input + spread.double(), weight.float())

    verdict = cc.grade_case(_case1d((1, 1, 4), (1, 1, 3)), mixes)
    assert "your code raised RuntimeError" in verdict.message
    assert "mix float32 and float64" in verdict.diagnosis, verdict.message
    assert "dtype=input.dtype" in verdict.message


def test_a_wrong_output_length_in_a_gradient_case_is_a_shape_problem():
    def one_too_long(input, weight, bias=None, **kwargs):
        return F.pad(naive_conv_transpose1d(input, weight, bias, **kwargs), (0, 1))

    case = cc.PUBLIC_CASES["ct1d_gradients"][0]
    verdict = cc.grade_case(case, one_too_long)
    assert not verdict.passed
    expected = cc.reference_outputs(case, cc.make_inputs(case))["output"].shape
    longer = (*expected[:-1], expected[-1] + 1)
    assert f"output shape: expected {tuple(expected)}, got {longer}" in verdict.message
    assert "autograd" not in verdict.message


BROKEN_ANSWER = """\
def broken(input, weight, bias=None, **kwargs):
    scale = 2
    return input[..., 99] * scale
"""


@pytest.mark.parametrize(
    ("filename", "shown"),
    [
        ("<ipython-input-7-0a1b2c3d>", "Cell In[7], line 3"),  # IPython's cell names
        ("/tmp/ipykernel_4242/2716023.py", 'File "/tmp/ipykernel_4242/2716023.py", line 3'),
    ],
)
def test_a_visible_check_ends_at_the_students_own_line(filename, shown):
    """Code compiled as a notebook's cell (its source in linecache, as IPython keeps it):
    the failure's last lines are the student's cell, line and source, not the checks'."""
    lines = BROKEN_ANSWER.splitlines(keepends=True)
    linecache.cache[filename] = (len(BROKEN_ANSWER), None, lines, filename)
    namespace: dict = {}
    exec(compile(BROKEN_ANSWER, filename, "exec"), namespace)
    with redirect_stdout(io.StringIO()), pytest.raises(AssertionError) as raised:
        cc.check("ct1d_basic", namespace["broken"])
    message = str(raised.value)
    assert "your code raised IndexError" in message
    ending = f"in your code: {shown}, in broken\n    return input[..., 99] * scale"
    assert message.endswith(ending), message
    assert "course_checks" not in message


@pytest.mark.slow
def test_the_students_line_in_a_jupyter_kernel(tmp_path, venv_env):
    """A real kernel (nbclient and ipykernel, as nbgrader runs a notebook): the error a test
    cell shows ends with the answer cell's number, line and source."""
    import nbformat
    from nbclient import NotebookClient

    shutil.copy(REPO_ROOT / "autograder" / "course_checks.py", tmp_path)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import torch"),
        nbformat.v4.new_code_cell(BROKEN_ANSWER),
        nbformat.v4.new_code_cell('from course_checks import check\ncheck("ct1d_basic", broken)'),
    ]
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )  # fmt: skip
    client.execute(env=venv_env)
    (error,) = [o for o in notebook.cells[2].outputs if o.output_type == "error"]
    assert error.ename == "AssertionError"
    assert error.evalue.endswith(
        "in your code: Cell In[2], line 3, in broken\n    return input[..., 99] * scale"
    ), error.evalue
    shown = "\n".join(error.traceback)
    assert "skipping hidden" in shown  # check()'s own frame is hidden in the traceback


def test_compare_of_raising_cases():
    case = next(
        c
        for c in cc.PUBLIC_CASES["ct1d_output_padding"]
        if "output_padding" in c.params["kwargs"]
        and c.params["kwargs"]["output_padding"] == 2
        and c.params["kwargs"].get("stride") == 2
    )
    inputs = cc.make_inputs(case)
    assert cc.reference_outputs(case, inputs) == {}
    assert cc.compare(case, inputs, {}, ValueError("too large")).passed
    assert not cc.compare(case, inputs, {}, cc.ForbiddenKernelError("aten::x")).passed
    verdict = cc.compare(case, inputs, {}, {"output": torch.zeros(1, 1, 11)})
    assert not verdict.passed and "torch raises" in verdict.message
    case, inputs, expected = _lecture_case()
    assert not cc.compare(case, inputs, expected, RuntimeError("boom")).passed


def test_export_and_import_keep_the_type_verdict():
    case, inputs, expected = _lecture_case()
    outputs = {
        "output": torch.tensor([[[2.0, 7.0, 4.0, -4.0, -2.0, 1.0]]]).as_subclass(_TensorSubclass)
    }
    tensors, others = cc.export_outputs(outputs)
    assert tensors == {} and "TensorSubclass" in others["output"]
    assert not cc.compare(case, inputs, expected, cc.import_outputs(tensors, others)).passed


# --------------------------------------------------------------------------------------
# The diagnosis
# --------------------------------------------------------------------------------------


def _case1d(input, weight, bias=False, seed=5, **kwargs):
    return cc.Case(
        "test",
        "conv_transpose1d",
        {
            "input": list(input),
            "weight": list(weight),
            "bias": bias,
            "kwargs": kwargs,
            "dtype": "float64",
        },
        seed,
    )


def _case2d(input, weight, bias=False, seed=5, **kwargs):
    return cc.Case(
        "test",
        "conv_transpose2d",
        {
            "input": list(input),
            "weight": list(weight),
            "bias": bias,
            "kwargs": kwargs,
            "dtype": "float64",
        },
        seed,
    )


CONV_MISTAKES = [
    # (case, the mutant's flags, words the diagnosis must contain)
    (_case1d((2, 2, 4), (2, 3, 3), stride=2), {"flip": True}, "taps come out in reverse order"),
    (_case2d((1, 2, 3, 3), (2, 1, 2, 3), stride=2), {"flip": True}, "in reverse order"),
    (_case1d((2, 3, 4), (3, 3, 2), padding=1), {"swap_channels": True}, "swapped"),
    (
        _case1d((2, 2, 4), (2, 3, 2), stride=2),
        {"channel_memory": "reshaped"},
        "reshape instead of transpose",
    ),
    (
        _case2d((1, 4, 3, 3), (4, 3, 2, 2), groups=2),
        {"channel_memory": "reshaped"},
        "reshape instead of transpose",
    ),
    (
        _case1d((1, 4, 4), (4, 3, 3), groups=2),
        {"channel_memory": "transposed whole"},
        "groups are split the wrong way",
    ),
    (
        _case1d((1, 2, 4), (2, 2, 3), stride=3, padding=2, output_padding=2),
        {"output_padding_mode": "window"},
        "output_padding added at the start",
    ),
    (
        _case1d((1, 2, 4), (2, 2, 3), True, stride=2, output_padding=1),
        {"output_padding_mode": "window"},
        "output_padding added at the start",
    ),
    (_case1d((1, 2, 4), (2, 2, 3), stride=2, padding=1), {"padding_mode": "add"}, "padding added"),
    (
        _case1d((1, 2, 4), (2, 2, 3), stride=2, padding=1, output_padding=1),
        {"output_padding_mode": "start"},
        "output_padding added at the start",
    ),
    (
        _case1d((1, 1, 4), (1, 1, 3), stride=3, padding=1, output_padding=2),
        {"output_padding_mode": "both"},
        "both sides",
    ),
    (
        _case2d((1, 1, 3, 3), (1, 1, 3, 3), True, stride=2, padding=1, output_padding=1),
        {"output_padding_mode": "zeros"},
        "filled with zeros",
    ),
    (_case1d((1, 2, 4), (2, 2, 3), stride=3), {"stride_mode": "conv"}, "spreads the INPUT"),
    (
        _case1d((1, 2, 4), (2, 2, 3), stride=2, dilation=2),
        {"use_dilation": False},
        "dilation ignored",
    ),
    (_case1d((2, 2, 4), (2, 3, 3), True), {"bias_times": 0}, "bias missing"),
    (_case2d((1, 2, 3, 3), (2, 2, 2, 2), True, stride=2), {"bias_times": 2}, "bias added twice"),
]


@pytest.mark.parametrize("index", range(len(CONV_MISTAKES)))
def test_each_conv_mistake_is_named(index):
    case, flags, words = CONV_MISTAKES[index]
    n = 1 if case.target.endswith("1d") else 2
    inputs = cc.make_inputs(case)
    expected = cc.reference_outputs(case, inputs)
    args = (inputs["input"], inputs["weight"], inputs.get("bias"))
    kwargs = case.params["kwargs"]
    mistaken = naive_conv_transpose(n, *args, **kwargs, **flags)
    verdict = cc.compare(case, inputs, expected, {"output": mistaken})
    assert not verdict.passed
    assert verdict.diagnosis and words in verdict.diagnosis, verdict.message
    right = naive_conv_transpose(n, *args, **kwargs)
    verdict = cc.compare(case, inputs, expected, {"output": right})
    assert verdict.passed and verdict.diagnosis is None


def test_shape_only_diagnosis_of_an_off_by_one():
    case = _case1d((1, 1, 4), (1, 1, 3), stride=2)
    inputs = cc.make_inputs(case)
    expected = cc.reference_outputs(case, inputs)
    longer = F.pad(expected["output"], (0, 1)) + 1  # values that explain nothing
    verdict = cc.compare(case, inputs, expected, {"output": longer})
    assert "1 longer than torch's" in verdict.diagnosis


def test_the_module_weight_layout_is_named():
    class ConvLayout(NaiveConvTranspose1d):
        def __init__(self, in_channels, out_channels, kernel_size, **kwargs):
            super().__init__(in_channels, out_channels, kernel_size, **kwargs)
            bound = 1 / math.sqrt(in_channels * kernel_size)
            self.weight = nn.Parameter(
                torch.empty(out_channels, in_channels, kernel_size).uniform_(-bound, bound)
            )

    verdict = cc.grade_case(cc.PUBLIC_CASES["ct1d_module"][1], ConvLayout)
    assert not verdict.passed and "like nn.Conv1d's" in verdict.diagnosis


def _interp_case(shape, dtype="float64", seed=3, **kwargs):
    return cc.Case(
        "test", "interpolate", {"input": list(shape), "kwargs": kwargs, "dtype": dtype}, seed
    )


def _naive_with_coordinates(source_of):
    """A 1-d linear interpolation reading input coordinate ``source_of(j, n_in, n_out)``."""

    def interpolate(x, size):
        n_in = x.shape[-1]
        out = torch.zeros(*x.shape[:-1], size, dtype=x.dtype)
        for j in range(size):
            src = min(max(source_of(j, n_in, size), 0.0), n_in - 1)
            low = min(math.floor(src), n_in - 1)
            high = min(low + 1, n_in - 1)
            out[..., j] = x[..., low] * (1 - (src - low)) + x[..., high] * (src - low)
        return out

    return interpolate


def _naive_nearest_rounded(x, size):
    """mode='nearest' on the last axis, the source index rounded instead of floored."""
    n_in = x.shape[-1]
    index = [min(round(j * n_in / size), n_in - 1) for j in range(size)]
    return x[..., index]


INTERP_MISTAKES = [
    (
        _interp_case((1, 2, 4), size=7),
        lambda x: _naive_nearest_rounded(x, 7),
        "the source index is rounded",
    ),
    (
        _interp_case((1, 2, 5), size=9, mode="linear", align_corners=True),
        lambda x: _naive_with_coordinates(lambda j, i, o: j * i / o)(x, 9),
        "a wrong align_corners=True formula",
    ),
    (
        _interp_case((1, 2, 5), size=9, mode="linear", align_corners=True),
        lambda x: _naive_with_coordinates(lambda j, i, o: j * (i - 1) / o)(x, 9),
        "your output reads input coordinate j·(W_in − 1)/W_out",
    ),
    (
        _interp_case((1, 2, 5), size=9, mode="linear", align_corners=True),
        lambda x: naive_interpolate(x, size=9, mode="linear", align_corners=False),
        "align_corners inverted",
    ),
    (
        _interp_case((1, 1, 3, 4), scale_factor=2, mode="bilinear"),
        lambda x: naive_interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
        "align_corners inverted",
    ),
    (
        _interp_case((1, 2, 4), size=7, mode="linear"),
        lambda x: _naive_with_coordinates(lambda j, i, o: (j + 0.5) * o / i - 0.5)(x, 7),
        "wrong way round",
    ),
    (
        _interp_case((1, 2, 4), size=7, mode="linear"),
        lambda x: _naive_with_coordinates(lambda j, i, o: j * i / o)(x, 7),
        "half-pixel offset",
    ),
    (
        _interp_case((1, 1, 3, 4), size=(5, 7)),
        lambda x: naive_interpolate(x, size=(5, 7), mode="nearest-exact"),
        "nearest-exact",
    ),
    (
        _interp_case((1, 1, 3, 3), scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
        lambda x: naive_interpolate(x, scale_factor=1.7, mode="bilinear"),
        "recompute_scale_factor",
    ),
    (
        _interp_case((1, 1, 3, 4), size=(5, 7), mode="bilinear"),
        lambda x: naive_interpolate(x, size=(7, 5), mode="bilinear"),
        "wrong order",
    ),
]


@pytest.mark.parametrize("index", range(len(INTERP_MISTAKES)))
def test_each_interpolation_mistake_is_named(index):
    case, mistaken_of, words = INTERP_MISTAKES[index]
    inputs = cc.make_inputs(case)
    expected = cc.reference_outputs(case, inputs)
    verdict = cc.compare(case, inputs, expected, {"output": mistaken_of(inputs["input"])})
    assert not verdict.passed
    assert verdict.diagnosis and words in verdict.diagnosis, verdict.message
    right = naive_interpolate(inputs["input"], **cc._call_kwargs(case))
    verdict = cc.compare(case, inputs, expected, {"output": right})
    assert verdict.passed and verdict.diagnosis is None


# --------------------------------------------------------------------------------------
# Quiet, and the notebook self-check
# --------------------------------------------------------------------------------------


def test_check_never_writes_to_stderr():
    def noisy(input, weight, bias=None, **kwargs):
        import warnings

        warnings.warn("a harmless warning", UserWarning, stacklevel=1)
        print("debug", file=sys.stderr)
        return naive_conv_transpose1d(input, weight, bias, **kwargs)

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        cc.check("ct1d_basic", noisy)
        with pytest.raises(AssertionError):
            cc.check("ct1d_stride", lambda *a, **k: noisy(*a, **{**k, "stride": 1}))
    assert err.getvalue() == ""
    assert "ok   conv_transpose1d(input (1, 1, 4), weight (1, 1, 3))" in out.getvalue()


def _notebook(cells):
    def cell(source, grade_id=None):
        metadata = {}
        if grade_id:
            metadata["nbgrader"] = {
                "grade": True,
                "solution": False,
                "grade_id": grade_id,
                "points": 5,
                "locked": True,
            }
        return {
            "cell_type": "code",
            "metadata": metadata,
            "source": source,
            "outputs": [],
            "execution_count": None,
        }

    return {"cells": [cell(*c) for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_the_command_line_self_check(tmp_path):
    answer = Path(__file__).read_text(encoding="utf-8")
    start = answer.index("def _as_tuple(")
    end = answer.index("def naive_output_length(")
    code = "import itertools, torch\nimport torch.nn.functional as F\n" + answer[start:end]
    code += "\nconv_transpose1d = naive_conv_transpose1d\n%matplotlib inline\n"
    passing = "from course_checks import check\ncheck('ct1d_stride', conv_transpose1d)\n"
    failing = "from course_checks import check\ncheck('ct1d_basic', lambda i, w, *a, **k: i)\n"
    path = tmp_path / "nb.ipynb"
    script = REPO_ROOT / "autograder" / "course_checks.py"
    for cells, status in (
        ([(code,), (passing, "ct1d_stride")], 0),
        ([(code,), (passing, "ct1d_stride"), (failing, "ct1d_basic")], 1),
    ):
        path.write_text(json.dumps(_notebook(cells)), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(script), str(path)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert result.returncode == status, result.stdout + result.stderr
        assert "PASS  ct1d_stride" in result.stdout
        if status:
            assert "FAIL  ct1d_basic" in result.stdout and "shape" in result.stdout


def test_the_public_cases_cover_the_plan():
    conv = [c for g in CONV_IDS for c in cc.PUBLIC_CASES[g] if c.target.startswith("conv_tr")]
    kwargs = [v for c in conv for v in c.params["kwargs"].values()]
    assert any(isinstance(v, int) and v > 1 for v in kwargs)
    assert any(isinstance(v, tuple) for v in kwargs)
    assert any(len(c.params["input"]) == len(c.params["weight"]) - 1 for c in conv)  # unbatched
    assert any(c.params["bias"] for c in conv) and any(c.params.get("bias_none") for c in conv)
    assert {c.params["dtype"] for c in conv} == {"float32", "float64"}
    assert any(c.params.get("grad") for c in conv)
    assert any(c.params["kwargs"].get("groups", 1) > 1 for c in conv)
    raising = [c for c in conv if _torch_should_raise(c)]
    assert {c.grade_id for c in raising} == {"ct1d_output_padding", "ct2d_output_padding"}


def _allowed_only_by_dilation(arguments: dict, n: int) -> bool:
    """stride <= output_padding < dilation along an axis: allowed, though not by stride."""
    s, op, d = (
        _as_tuple(arguments.get(k, v), n)
        for k, v in (("stride", 1), ("output_padding", 0), ("dilation", 1))
    )
    return any(s[a] <= op[a] < d[a] for a in range(n))


def test_every_rule_a_hidden_case_grades_has_a_visible_case():
    """A rule graded only by hidden cases would cost points no visible check warned of."""
    dilation_only = {
        grade_id
        for grade_id, cases in cc.PUBLIC_CASES.items()
        for c in cases
        if (c.target == "output_length" and _allowed_only_by_dilation(c.params["args"], 1))
        or (
            c.target.startswith("conv_transpose")
            and _allowed_only_by_dilation(c.params["kwargs"], 1 if "1d" in c.target else 2)
        )
    }
    assert {"ct1d_output_length", "ct1d_output_padding", "ct2d_output_padding"} <= dilation_only
    for grade_id in hc._INTERPOLATE_REFUSALS:  # tests whose hidden draws include a refusal
        assert any(_torch_should_raise(c) for c in cc.PUBLIC_CASES[grade_id]), grade_id
        assert all(_torch_should_raise(hc.hidden_cases(grade_id, seed)[-1]) for seed in range(5))
    output_size = [c for c in cc.PUBLIC_CASES["ct1d_module"] if "output_size" in c.params]
    assert any(_torch_should_raise(c) for c in output_size)
    assert any(not _torch_should_raise(c) for c in output_size)


def test_resize_conv_and_coverage_mistakes_are_named():
    class NearestResize(NaiveResizeConv2d):
        def forward(self, x):
            return self.conv(naive_interpolate(x, scale_factor=2, mode="nearest"))

    verdict = cc.grade_case(cc.PUBLIC_CASES["interp_resize_conv"][0], NearestResize)
    assert not verdict.passed and "nearest" in verdict.diagnosis
    assert cc.grade_case(cc.PUBLIC_CASES["interp_resize_conv"][0], NaiveResizeConv2d).passed

    case = next(
        c
        for c in cc.PUBLIC_CASES["ct2d_coverage_map"]
        if c.params["stride"] == [1, 2] or c.params["stride"] == (1, 2)
    )
    expected = cc.reference_outputs(case, {})
    swapped = naive_coverage_map(
        *(_as_tuple(case.params[k], 2)[::-1] for k in ("kernel_size", "stride", "input_size"))
    )
    verdict = cc.compare(case, {}, expected, {"output": swapped})
    assert not verdict.passed and "(height, width)" in verdict.diagnosis


def test_warm_up_leaves_no_guard_behind():
    cc.warm_up()
    F.conv_transpose1d(_X1, _W1)  # outside the guard, torch's own kernel is fine


def test_an_output_rewritten_after_the_guarded_call_is_not_what_is_graded():
    """A student's backward hook runs during the gradient pass: what it writes into the
    returned tensor must not change the graded output, copied when the forward returned, and
    torch's answer cannot be computed there, since the pass runs under the guard."""
    case = next(c for c in cc.PUBLIC_CASES["ct1d_gradients"] if c.params.get("grad"))
    inputs = cc.make_inputs(case)
    expected = cc.reference_outputs(case, inputs)
    forbidden = torch.nn.functional.conv_transpose1d

    def placeholder_then_rewrite(compute):
        def implementation(input, weight, bias=None, **kwargs):
            out = torch.zeros_like(expected["output"]) + 0 * (input.sum() + weight.sum())
            if bias is not None:
                out = out + 0 * bias.sum()

            def rewrite(grad):
                with torch.no_grad():
                    out.copy_(compute(input, weight, bias, **kwargs))
                return grad

            out.register_hook(rewrite)
            return out

        return implementation

    ones = placeholder_then_rewrite(
        lambda input, *args, **kwargs: torch.ones_like(expected["output"])
    )
    actual = cc.run_student(case, ones, inputs)
    assert torch.count_nonzero(actual["output"]) == 0
    assert not cc.compare(case, inputs, expected, actual).passed
    with pytest.raises(cc.ForbiddenKernelError, match="transposed=True"):
        cc.run_student(case, placeholder_then_rewrite(forbidden), inputs)


def test_a_student_reading_its_callers_frames_finds_no_reference():
    """In the notebook's own process the student's code can walk up the stack: torch's
    answer must not be computed until the student's call has returned."""
    source = Path(__file__).parent / "fixtures" / "sources" / "cheat_frame_inspection.py"
    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    with pytest.raises(AssertionError, match="output values differ"):
        cc.check("ct1d_basic", namespace["conv_transpose1d"])
