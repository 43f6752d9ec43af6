"""The kernel guard against the attacks of issue 8 (class 3), and honest answers beside them.

Each attack is written as a student would: an implementation handed to ``run_student`` (or
code run under the guard) that tries to get torch's own forbidden kernel to compute the
answer. The attacks work without the guard (checked first, so that every test attacks for
real); under the guard each one must end in ``ForbiddenKernelError`` (or a refusal), and
must never have obtained torch's result unguarded. Honest answers, the instructor's among
them, must still pass ``compare``.
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import (
    TorchDispatchMode,
    _pop_mode,
    _pop_mode_temporarily,
    _push_mode,
)

from autograder import course_checks as cc
from autograder import static_scan
from autograder.notebook import load_namespace

REPO_ROOT = Path(__file__).resolve().parent.parent
# Bound before any attack patches anything.
CONV_TRANSPOSE1D, CONV_TRANSPOSE2D, INTERPOLATE = (
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.interpolate,
)

# Every forbidden result an attack obtained from torch (the attacks append to it).
STOLEN: list[str] = []


@pytest.fixture(autouse=True)
def _nothing_stolen_yet():
    STOLEN.clear()
    yield
    sys.setprofile(None)  # an attack that took the hook leaves none behind for the next test


def _steal(label, compute, *args, **kwargs):
    """Call torch's forbidden ``compute``; note it in STOLEN when torch let it through."""
    result = compute(*args, **kwargs)
    STOLEN.append(label)
    return result


def _case(grade_id, index=0, grad=None):
    cases = cc.PUBLIC_CASES[grade_id]
    if grad is not None:
        cases = [c for c in cases if bool(c.params.get("grad")) == grad]
    return cases[index]


def _outcome(case, implementation):
    """``run_student``'s result or the exception it raised, and the verdict on it."""
    inputs = cc.make_inputs(case)
    expected = cc.reference_outputs(case, inputs)
    try:
        actual = cc.run_student(case, implementation, inputs)
    except Exception as error:  # the verdict of a raising call is compare's
        actual = error
    return actual, cc.compare(case, inputs, expected, actual)


def _assert_refused(case, implementation, *, refusals=(cc.ForbiddenKernelError,)):
    """The attack works without the guard, and under it ends in a refusal, unpaid."""
    actual, verdict = _outcome(case, implementation)
    assert isinstance(actual, refusals), f"not refused: {actual!r} ({verdict.message})"
    assert not verdict.passed, verdict.message
    assert STOLEN == [], f"torch computed {STOLEN} for the submission, unguarded: {actual}"
    return actual


class _PassThrough(TorchDispatchMode):
    """A mode for an attack to pop when it runs without the guard."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _works_without_the_guard(case, implementation):
    inputs = cc.make_inputs(case)
    expected = cc.reference_outputs(case, inputs)["output"]
    with _PassThrough():
        got = implementation(*_positional(case, inputs), **cc._call_kwargs(case))
    STOLEN.clear()
    assert torch.allclose(got, expected, atol=1e-4), "the attack itself is broken"


def _positional(case, inputs):
    if case.target == "interpolate":
        return [inputs["input"]]
    return [inputs["input"], inputs["weight"]] + ([inputs["bias"]] if "bias" in inputs else [])


# --------------------------------------------------------------------------------------
# Forbidden ops outside aten::, and CompositeImplicit ones
# --------------------------------------------------------------------------------------


def mkldnn_conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                            groups=1, dilation=1):  # fmt: skip
    pair = lambda v: list(v) if isinstance(v, (tuple, list)) else [v, v]  # noqa: E731
    return _steal(
        "mkldnn",
        torch.ops.mkldnn._convolution_transpose_pointwise,
        input, weight, bias, pair(padding), pair(output_padding), pair(stride), pair(dilation),
        groups, "none", [], "",
    )  # fmt: skip


def conv_tbc_backward_transpose1d(input, weight, bias=None):
    """Stride 1: the input gradient of conv_tbc is the transposed convolution."""
    n, _, length = input.shape
    reach = weight.shape[-1] - 1
    grad = _steal(
        "conv_tbc_backward",
        torch.ops.aten.conv_tbc_backward,
        input.permute(2, 0, 1).contiguous(),
        torch.zeros(length + reach, n, weight.shape[1], dtype=input.dtype),
        weight.permute(2, 1, 0).contiguous(),
        torch.zeros(weight.shape[0], dtype=input.dtype),
        0,
    )[0]
    out = grad.permute(1, 2, 0)
    return out if bias is None else out + bias[:, None]


def mkldnn_in_a_thread(input, weight, bias=None, **kwargs):
    """The same op in a thread, where no dispatch mode is (only process-wide kernels)."""
    box = {}
    thread = threading.Thread(
        target=lambda: box.update(output=mkldnn_conv_transpose2d(input, weight, bias, **kwargs))
    )
    thread.start()
    thread.join()
    return box["output"]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("attack", [mkldnn_conv_transpose2d, mkldnn_in_a_thread])
def test_a_forbidden_op_outside_aten_is_refused(attack):
    case = _case("ct2d_stride")
    _works_without_the_guard(case, attack)
    error = _assert_refused(case, attack)
    assert error.kernel.startswith("mkldnn::"), error.kernel


def test_a_composite_implicit_op_lowered_to_allowed_ops_is_refused():
    case = _case("ct1d_basic")
    _works_without_the_guard(case, conv_tbc_backward_transpose1d)
    error = _assert_refused(case, conv_tbc_backward_transpose1d)
    assert "conv_tbc_backward" in error.kernel


def test_every_namespace_is_covered():
    """The guard's targets are found by enumerating every op torch knows, not only aten's."""
    namespaces = {name.split("::")[0] for name, _ in cc._kernel_override_targets()}
    assert {"aten", "quantized", "mkldnn"} <= namespaces
    keys = dict(cc._kernel_override_targets())
    assert keys.get("aten::conv_tbc_backward") == "CompositeImplicitAutograd"


# --------------------------------------------------------------------------------------
# The guard's own layers taken off for the call
# --------------------------------------------------------------------------------------


def popped_mode_transpose2d(input, weight, bias=None, **kwargs):
    """Pop the guard's dispatch mode, compute, push it back before returning."""
    mode = _pop_mode()
    try:
        return mkldnn_conv_transpose2d(input, weight, bias, **kwargs)
    finally:
        _push_mode(mode)


def destroyed_kernels_transpose1d(input, weight, bias=None, **kwargs):
    """Find the guard's torch.library registrations through gc, destroy them, compute with
    the mode popped, then re-create refusing kernels so that the final probe passes."""
    guards = [
        o
        for o in gc.get_objects()
        if type(o).__name__ == "ForbiddenKernelGuard" and getattr(o, "_library", None)
    ]
    for guard in guards:
        guard._library._destroy()
    with _pop_mode_temporarily():
        out = _steal("conv_transpose1d", CONV_TRANSPOSE1D, input, weight, bias, **kwargs)
    for guard in guards:
        library = torch.library.Library("aten", "IMPL")
        for overload in cc._kernel_override_targets():
            library.impl(overload, guard._kernel_for(overload), "CPU")
        guard._library = library
    return out


def reset_kernels_transpose1d(input, weight, bias=None, **kwargs):
    """Reach the guard's registrations through the frames (no gc), reset their C++ handles,
    and bypass the mode without any call: torch's kernel would then run."""
    frame, guard = sys._getframe(), None
    while frame is not None and guard is None:
        guard = frame.f_locals.get("guard")
        frame = frame.f_back
    if guard is None:  # without the guard: nothing to take off
        libraries = []
    elif hasattr(guard, "_library"):
        libraries = [guard._library]
    else:
        libraries = type(guard).__init__.__globals__["_LAYER"].libraries
    for library in libraries:
        library.m.reset()
    with torch._C._DisableTorchDispatch():
        return _steal("conv_transpose1d", CONV_TRANSPOSE1D, input, weight, bias, **kwargs)


def _bilinear_by_decomposition(input, size):
    from torch._decomp import decompositions

    return _steal("_upsample_linear_vec", decompositions._upsample_linear_vec, input,
                  list(size), False, None)  # fmt: skip


def hook_removed_interpolate(input, size=None, scale_factor=None, mode="nearest",
                             align_corners=None):  # fmt: skip
    """Take the profile hook off around torch's Python decomposition of bilinear."""
    hook = sys.getprofile()
    sys.setprofile(None)
    try:
        return _bilinear_by_decomposition(input, size)
    finally:
        sys.setprofile(hook)


def thread_interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Run the decomposition in a thread started under the threading module's radar."""
    done, box = _thread.allocate_lock(), {}
    done.acquire()

    def work():
        try:
            box["output"] = _bilinear_by_decomposition(input, size)
        except BaseException as error:
            box["error"] = error
        finally:
            done.release()

    _thread.start_new_thread(work, ())
    done.acquire()
    if "error" in box:
        raise box["error"]
    return box["output"]


def unhooked_thread_interpolate(input, size=None, scale_factor=None, mode="nearest",
                                align_corners=None):  # fmt: skip
    """A threading.Thread, after clearing the hook that threading gives new threads."""
    box = {}
    threading._profile_hook = None
    thread = threading.Thread(target=lambda: box.update(output=_bilinear_by_decomposition(
        input, size)))  # fmt: skip
    thread.start()
    thread.join()
    return box["output"]


@pytest.mark.parametrize(
    "attack, grade_id",
    [
        (popped_mode_transpose2d, "ct2d_stride"),
        (destroyed_kernels_transpose1d, "ct1d_stride"),
        (reset_kernels_transpose1d, "ct1d_stride"),
        (hook_removed_interpolate, "interp_bilinear_size"),
        (thread_interpolate, "interp_bilinear_size"),
        (unhooked_thread_interpolate, "interp_bilinear_size"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_a_layer_taken_off_during_the_call_is_noticed(attack, grade_id):
    case = _case(grade_id)
    previous = threading.getprofile()
    try:
        _works_without_the_guard(case, attack)
        _assert_refused(case, attack)
    finally:
        threading.setprofile(previous)


def test_the_hook_removed_is_noticed_at_the_next_op_not_only_at_the_end():
    """A removal the hook could not see (here: the test's own, from a quiet moment) is
    noticed by the mode at the very next op, before the call returns."""
    ops_after_removal = []
    guard = cc.ForbiddenKernelGuard()
    with pytest.raises(cc.ForbiddenKernelError, match="profile hook"), guard.watching():
        cc._LAYER.quiet_thread = threading.get_ident()
        sys.setprofile(None)
        cc._LAYER.quiet_thread = None
        torch.ones(2) + 1
        ops_after_removal.append("ran")  # pragma: no cover - the op above must raise
    assert ops_after_removal == []


# --------------------------------------------------------------------------------------
# Student code that ran while the guard was off
# --------------------------------------------------------------------------------------


def _grader_inputs():
    """The grader's copies of the inputs, from the frames of the call (as a cheat finds them)."""
    frame = sys._getframe(1)
    while frame is not None:
        x = frame.f_locals.get("x")
        if isinstance(x, dict) and "input" in x:
            return x
        frame = frame.f_back
    raise LookupError("no grader frame")


class _ForbiddenBackward(torch.autograd.Function):
    """An honest forward (the full convolution with the kernel flipped), and gradients from
    torch's own convolution backward; the output is also rewritten late, in place."""

    @staticmethod
    def forward(ctx, input, weight):
        ctx.save_for_backward(input, weight)
        reach = weight.shape[-1] - 1
        ctx.output = F.conv1d(F.pad(input, (reach, reach)), weight.flip(-1).transpose(0, 1))
        return ctx.output

    @staticmethod
    def backward(ctx, grad):
        input, weight = ctx.saved_tensors
        grads = _steal(
            "convolution_backward",
            torch.ops.aten.convolution_backward,
            grad, input.detach(), weight.detach(), None, [1], [0], [1], True, [0], 1,
            [True, True, False],
        )  # fmt: skip
        ctx.output.mul_(0)  # the graded output was copied when the forward returned
        return grads[0], grads[1]


def forbidden_backward_transpose1d(input, weight, bias=None, **kwargs):
    return _ForbiddenBackward.apply(input, weight)


def test_a_custom_backward_cannot_call_forbidden_ops():
    _assert_refused(_gradient_case_without_bias(), forbidden_backward_transpose1d)


def _gradient_case_without_bias():
    """A stride-1, bias-free gradient case of ct1d (drawn like the graded ones)."""
    return cc._ct1("ct1d_gradients", (1, 2, 5), (2, 3, 3), seed=4, grad=True)


def test_a_hook_calling_convolution_backward_in_the_gradient_pass_is_refused():
    def hooked(input, weight, bias=None, **kwargs):
        out = F.conv1d(F.pad(input, (2, 2)), weight.flip(-1).transpose(0, 1))

        def hook(grad):
            _steal("convolution_backward", torch.ops.aten.convolution_backward, grad,
                   F.pad(input, (2, 2)).detach(), weight.detach().flip(-1).transpose(0, 1),
                   None, [1], [0], [1], False, [0], 1, [True, False, False])  # fmt: skip
            return grad

        out.register_hook(hook)
        return out

    _assert_refused(_gradient_case_without_bias(), hooked)


def test_a_nested_autograd_call_in_a_custom_backward_is_refused():
    class Nested(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, weight):
            ctx.save_for_backward(input, weight)
            return F.conv1d(F.pad(input, (2, 2)), weight.flip(-1).transpose(0, 1))

        @staticmethod
        def backward(ctx, grad):
            input, weight = ctx.saved_tensors
            with torch.enable_grad():  # conv1d's input gradient is the transposed convolution
                grown = torch.zeros_like(grad, requires_grad=True)
                y = F.conv1d(grown, weight.detach())
                torch.autograd.grad(y, grown, input.detach())
            STOLEN.append("autograd of conv1d")
            return F.conv1d(grad, weight.detach()), None

    _assert_refused(_gradient_case_without_bias(), lambda i, w, b=None, **k: Nested.apply(i, w))


def test_the_grader_s_gradient_pass_cannot_be_borrowed_by_the_submission():
    """A submission that finds the guard and asks it for a gradient pass of its own graph
    (which would run torch's convolution backward, i.e. a transposed convolution)."""

    def borrower(input, weight, bias=None, **kwargs):
        frame, guard = sys._getframe(), None
        while frame is not None and guard is None:
            guard = frame.f_locals.get("guard")
            frame = frame.f_back
        grown = torch.zeros(*input.shape[:-1], input.shape[-1] + weight.shape[-1] - 1,
                            requires_grad=True)  # fmt: skip
        y = F.conv1d(grown, weight.transpose(0, 1))
        return _steal("gradients", guard.gradients, y, [grown], input)[0]

    _assert_refused(_case("ct1d_basic"), borrower)


def test_a_graded_call_inside_the_graded_call_is_refused():
    """run_student from inside the student's call would open a gradient pass of its own."""
    inner_case = _gradient_case_without_bias()

    def via_inner_run(input, weight, bias=None, **kwargs):
        reach = weight.shape[-1] - 1
        inputs = {"input": torch.zeros(*input.shape[:-1], input.shape[-1] + reach),
                  "weight": weight.transpose(0, 1).flip(-1), "grad_output": input}  # fmt: skip
        grads = cc.run_student(inner_case, lambda i, w, **k: F.conv1d(i, w), inputs)
        STOLEN.append("inner run_student")
        return grads["grad_input"]

    _assert_refused(_case("ct1d_basic"), via_inner_run)


class _SneakyParameter(nn.Parameter):
    def copy_(self, source, *args, **kwargs):
        x = _grader_inputs()
        if source is x["bias"]:  # the last copy: weight and bias are both known
            _SneakyModule.answer = _steal(
                "copy_", CONV_TRANSPOSE1D, x["input"], x["weight"], x["bias"]
            )
        return super().copy_(source, *args, **kwargs)


class _SneakyModule(nn.Module):
    answer = None

    def __init__(self, in_channels, out_channels, kernel_size, **kwargs):
        super().__init__()
        like_torch = nn.ConvTranspose1d(in_channels, out_channels, kernel_size)
        self.weight = _SneakyParameter(like_torch.weight.detach().clone())
        self.bias = _SneakyParameter(like_torch.bias.detach().clone())

    def forward(self, input):
        return type(self).answer


def _module_case():
    case = cc.PUBLIC_CASES["ct1d_module"][1]
    assert set(case.params["init"]) == {"in_channels", "out_channels", "kernel_size"}
    return case


def test_a_parameter_subclass_s_copy_never_runs_unguarded():
    refusals = (cc.ForbiddenKernelError, cc.SubmissionError)
    _assert_refused(_module_case(), _SneakyModule, refusals=refusals)


class _GetattrModule(nn.Module):
    """``module.weight`` runs the student's ``__getattr__``, which computes torch's answer."""

    def __init__(self, in_channels, out_channels, kernel_size, **kwargs):
        super().__init__()
        like_torch = nn.ConvTranspose1d(in_channels, out_channels, kernel_size)
        self.weight, self.bias = like_torch.weight, like_torch.bias
        self.__dict__["ready"] = True  # from here on, every lookup steals

    def __getattr__(self, name):
        if self.__dict__.get("ready") and name in ("weight", "answer"):
            with contextlib.suppress(LookupError):
                x = _grader_inputs()
                self.__dict__["answer"] = _steal(
                    "__getattr__", CONV_TRANSPOSE1D, x["input"], x["weight"], x["bias"]
                )
        return super().__getattr__(name)

    def forward(self, input):
        return self.answer


def test_reading_the_module_s_attributes_runs_no_student_code_unguarded():
    _assert_refused(_module_case(), _GetattrModule)


class _ToOverride(nn.Module):
    """``ResizeConv2d.to()`` runs when the grader casts the module: it computes the answer."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.answer = None

    def to(self, *args, **kwargs):
        x = _grader_inputs()
        grown = _steal("to", INTERPOLATE, x["input"], scale_factor=2, mode="bilinear")
        self.answer = F.conv2d(grown, x["conv_weight"], x["conv_bias"], padding=1)
        return super().to(*args, **kwargs)

    def forward(self, input):
        return self.answer


def test_a_to_override_runs_under_the_guard():
    _assert_refused(_case("interp_resize_conv"), _ToOverride)


class _Spy(torch.Tensor):
    """A returned value whose ``__torch_function__`` runs whenever the grader touches it."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if not STOLEN:
            with contextlib.suppress(Exception):
                _steal("__torch_function__", CONV_TRANSPOSE1D, torch.ones(1, 1, 2),
                       torch.ones(1, 1, 2))  # fmt: skip
        return super().__torch_function__(func, types, args, kwargs or {})


def test_torch_function_on_a_returned_value_never_runs_unguarded():
    def spying(input, weight, bias=None, **kwargs):
        return F.conv1d(F.pad(input, (2, 2)), weight.flip(-1).transpose(0, 1)).as_subclass(_Spy)

    actual, verdict = _outcome(_gradient_case_without_bias(), spying)
    assert not verdict.passed and "plain torch.Tensor" in verdict.message, verdict.message
    assert STOLEN == [], "the returned value's code ran outside the guard"
    assert all(type(v) in (torch.Tensor, cc.NotATensor) for v in actual.values()), actual


# --------------------------------------------------------------------------------------
# Honest answers, and autograd's own convolution backward
# --------------------------------------------------------------------------------------


def via_conv1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
               dilation=1):  # fmt: skip
    """Stride 1, no padding, one group: the full convolution with the kernel flipped."""
    reach = dilation * (weight.shape[-1] - 1)
    spread = F.pad(input, (reach, reach))
    return F.conv1d(spread, weight.flip(-1).transpose(0, 1), bias, dilation=dilation)


def test_autograd_s_own_convolution_backward_passes_under_the_guard():
    """The gradient pass is guarded, and still lets the engine differentiate conv1d."""
    case = next(c for c in cc.PUBLIC_CASES["ct1d_gradients"] if c.params["kwargs"] == {
        "dilation": 2})  # fmt: skip
    actual, verdict = _outcome(case, via_conv1d)
    assert verdict.passed, verdict.message
    assert {"grad_input", "grad_weight"} <= set(actual)


@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 0, 1, 1), (2, 1, 3, 2),
                                                              (3, 2, 1, 4)])  # fmt: skip
def test_the_guard_s_convolution_backward_matches_torch_s(stride, padding, dilation, groups):
    for shape, conv in (((2, 4, 11), F.conv1d), ((2, 4, 9, 10), F.conv2d)):
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        w = torch.randn(8, 4 // groups, *[3] * (len(shape) - 2), dtype=torch.float64,
                        requires_grad=True)  # fmt: skip
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        y = conv(x, w, **kwargs)
        dy = torch.randn_like(y)
        expected = torch.autograd.grad(y, [x, w], dy)
        spatial = len(shape) - 2
        got = cc._convolution_backward_by_unfold(
            dy, x.detach(), w.detach(), [8], [stride] * spatial, [padding] * spatial,
            [dilation] * spatial, False, [0] * spatial, groups, [True, True, True],
        )  # fmt: skip
        for mine, torchs in zip(got[:2], expected, strict=True):
            assert torch.allclose(mine, torchs, atol=1e-10)
        assert torch.allclose(got[2], dy.sum([0, *range(2, 2 + spatial)]))


def _instructor(notebook):
    return load_namespace(REPO_ROOT / "solutions" / notebook)


@pytest.mark.parametrize(
    "notebook, grade_ids",
    [
        ("01_conv_transpose1d/conv_transpose1d.ipynb", ["ct1d_gradients", "ct1d_module"]),
        ("02_conv_transpose2d/conv_transpose2d.ipynb", ["ct2d_gradients", "ct2d_groups"]),
        ("03_interpolate/interpolate.ipynb", ["interp_gradients", "interp_resize_conv"]),
    ],
)
def test_the_instructor_s_answers_still_pass(notebook, grade_ids):
    namespace = _instructor(notebook)
    for grade_id in grade_ids:
        for case in cc.PUBLIC_CASES[grade_id]:
            actual, verdict = _outcome(case, namespace[case.target])
            assert verdict.passed, verdict.message


# --------------------------------------------------------------------------------------
# stage_guard: the process-wide layer for a whole graded stage
# --------------------------------------------------------------------------------------


def test_graded_calls_nest_in_a_stage_and_the_layer_stays_armed_between_them():
    namespace = _instructor("01_conv_transpose1d/conv_transpose1d.ipynb")
    case = _case("ct1d_gradients", grad=True)
    inputs = cc.make_inputs(case)
    expected = cc.reference_outputs(case, inputs)
    with pytest.raises(cc.ForbiddenKernelError), cc.stage_guard() as record:
        for _ in range(2):
            actual = cc.run_student(case, namespace["conv_transpose1d"], inputs)
            assert cc.compare(case, inputs, expected, actual).passed
            with pytest.raises(cc.ForbiddenKernelError):  # between calls: still armed
                CONV_TRANSPOSE1D(torch.ones(1, 1, 2), torch.ones(1, 1, 2))
        # the refusals above happened outside any graded call: the stage reports them
    assert record.reached and record.outside_calls


def test_a_stage_reports_student_code_that_runs_after_its_call():
    """A thread the student's call started keeps running; its forbidden op after the call
    returned is refused by the stage's layer and reported at the stage's exit."""
    go, box = threading.Event(), {}

    def leaves_a_thread(input, weight, bias=None, **kwargs):
        def later():
            go.wait()
            try:
                box["stolen"] = _steal("later", CONV_TRANSPOSE1D, input, weight)
            except cc.ForbiddenKernelError as error:
                box["refused"] = error

        threading.Thread(target=later, daemon=True).start()
        return via_conv1d(input, weight, bias, **kwargs)

    case = _case("ct1d_basic")
    with pytest.raises(cc.ForbiddenKernelError), cc.stage_guard() as record:
        cc.run_student(case, leaves_a_thread, cc.make_inputs(case))
        go.set()
        while "refused" not in box and "stolen" not in box:
            threading.Event().wait(0.01)
    assert "refused" in box and STOLEN == []
    assert any("transposed=True" in name for name in record.outside_calls), record


def test_a_clean_stage_exits_quietly_and_leaves_torch_as_it_was():
    with cc.stage_guard() as record:
        cc.run_student(_case("ct1d_basic"), via_conv1d, cc.make_inputs(_case("ct1d_basic")))
    assert record.intact and record.reached == [] and record.outside_calls == []
    assert sys.getprofile() is None
    assert CONV_TRANSPOSE1D(torch.ones(1, 1, 2), torch.ones(1, 1, 2)).shape == (1, 1, 3)


# --------------------------------------------------------------------------------------
# What stays open: the static scan flags it for a look
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, name",
    [
        ("import ctypes\nctypes.pythonapi.PyEval_SetProfile(None, None)", "ctypes"),
        ("from torch.utils.cpp_extension import load_inline", "cpp_extension"),
        ("import cffi", "cffi"),
        ("torch.ops.load_library('evil.so')", "load_library"),
        ("import _thread", "_thread"),
    ],
)
def test_native_routes_are_flagged_for_a_look(source, name):
    findings = static_scan.scan_source(source, "cell 3")
    review = [f for f in findings if f.severity == "review"]
    assert review and any(name in f.name for f in review), findings
    assert static_scan.needs_review(findings)
    assert "needs a look" in str(review[0])


def test_ordinary_code_needs_no_look():
    findings = static_scan.scan_source("import torch\nout = torch.nn.functional.conv1d(x, w)", "c")
    assert not static_scan.needs_review(findings)
