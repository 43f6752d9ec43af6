"""Testing the tests: mutants of the instructor's answers must lose points and be diagnosed.

Each mutant is a typical student bug made by small edits of the instructor's code in
``solutions/`` (each edit must apply exactly once, so a changed answer cannot silently
leave a mutant equal to the original). The mutant is graded in-process through
``course_checks`` (``make_inputs``, ``reference_outputs``, ``run_student``, ``compare``) on
the public cases and the hidden cases of fixed seeds; it must fail the tests its bug
breaks, keep the ones it does not touch, and the failing cases must name the bug. A few
mutants also go through the CI grader (``python -m autograder grade``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from autograder import course_checks
from autograder.hidden_cases import hidden_cases
from autograder.notebook import cell_source, read_notebook, student_code

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {
    "01_conv_transpose1d": "conv_transpose1d",
    "02_conv_transpose2d": "conv_transpose2d",
    "03_interpolate": "interpolate",
}
#: Hidden draws used besides the public cases (fixed, so that a failure can be replayed).
HIDDEN_SEEDS = (2026, 7)


@dataclass(frozen=True)
class Mutant:
    """A student bug: edits of the instructor's code, and what grading must say about it."""

    name: str
    assignment: str
    edits: tuple[tuple[str, str], ...]
    loses: tuple[str, ...]  # tests that must fail
    keeps: tuple[str, ...] = ()  # tests that must still pass
    diagnosis: dict[str, str] = field(default_factory=dict)  # test -> text in a failing case
    absent: tuple[str, ...] = ()  # texts no failing case may say (a wrong diagnosis)


CT1 = "01_conv_transpose1d"
CT2 = "02_conv_transpose2d"
ITP = "03_interpolate"
FLIP_1D = ("index[(taps * d) % s, last - (taps * d) // s] = taps",)
SIGNATURE_1D = 's, p = single(stride, "stride"), single(padding, "padding")'
LENGTH_1D = "L_out = output_length(W, w, s, p, op, d)"
RETURN_1D = "    return y[0] if unbatched else y\n"
CROP_1D = "y = y[:, :, start : start + L_out]"
WEIGHT_AS_CONV_1D = "weight.reshape(groups, C_in // groups, C_out_g, w).transpose(1, 2)"
#: What the reversed-taps diagnosis says, and what it once said of a kernel never flipped.
REVERSED_TAPS = "taps come out in reverse order"
FLIPPED = "the kernel is flipped"

MUTANTS = [
    Mutant(
        "kernel_not_flipped_1d",
        CT1,
        ((FLIP_1D[0], "index[(taps * d) % s, (taps * d) // s] = taps"),),
        loses=("ct1d_basic", "ct1d_channels_batch", "ct1d_stride", "ct1d_module"),
        keeps=("ct1d_output_length", "ct1d_matrix"),
        diagnosis={"ct1d_basic": REVERSED_TAPS},
        absent=(FLIPPED,),  # this kernel was never flipped
    ),
    Mutant(
        "kernel_flipped_twice_1d",
        CT1,
        (("kernel = F.pad(weight.reshape(", "kernel = F.pad(weight.flip(-1).reshape("),),
        loses=("ct1d_basic", "ct1d_channels_batch", "ct1d_stride", "ct1d_gradients"),
        keeps=("ct1d_output_length", "ct1d_matrix"),
        diagnosis={"ct1d_basic": REVERSED_TAPS, "ct1d_stride": REVERSED_TAPS},
    ),
    Mutant(
        "channels_swapped_in_weight_1d",
        CT1,
        ((WEIGHT_AS_CONV_1D, "weight.reshape(groups, C_out_g, C_in // groups, w)"),),
        loses=("ct1d_channels_batch", "ct1d_groups"),
        keeps=("ct1d_basic", "ct1d_output_length", "ct1d_matrix"),
        # Square channel blocks show a swap; others show the reshape that mixed them.
        diagnosis={
            "ct1d_channels_batch": "in_channels and out_channels are swapped",
            "ct1d_stride": "reshape instead of transpose",
        },
    ),
    Mutant(
        "groups_split_after_a_whole_transpose_1d",
        CT1,
        (
            (
                WEIGHT_AS_CONV_1D,
                "weight.transpose(0, 1).reshape(groups, C_out_g, C_in // groups, w)",
            ),
        ),
        loses=("ct1d_groups",),
        keeps=("ct1d_basic", "ct1d_channels_batch", "ct1d_stride", "ct1d_padding"),
        diagnosis={"ct1d_groups": "the groups are split the wrong way"},
    ),
    Mutant(
        "padding_added_not_cropped_1d",
        CT1,
        (
            (SIGNATURE_1D, 's, p, added = single(stride, "stride"), 0, single(padding, "padding")'),
            (RETURN_1D, "    y = F.pad(y, (added, added))\n" + RETURN_1D),
        ),
        loses=("ct1d_padding",),
        keeps=("ct1d_basic", "ct1d_stride", "ct1d_groups"),
        diagnosis={"ct1d_padding": "padding added around the output instead of cropped"},
    ),
    Mutant(
        "output_padding_at_the_start_1d",
        CT1,
        (
            (LENGTH_1D, LENGTH_1D + "\n    L_out = output_length(W, w, s, p, 0, d)"),
            (RETURN_1D, "    y = F.pad(y, (op, 0))\n" + RETURN_1D),
        ),
        loses=("ct1d_output_padding",),
        keeps=("ct1d_basic", "ct1d_stride", "ct1d_padding", "ct1d_groups"),
        diagnosis={"ct1d_output_padding": "output_padding added at the start instead of the end"},
    ),
    Mutant(
        "output_padding_by_moving_the_crop_window_1d",
        CT1,
        ((LENGTH_1D, LENGTH_1D + "\n    p, op = p - op, 0  # the window starts op earlier"),),
        loses=("ct1d_output_padding",),
        keeps=("ct1d_basic", "ct1d_stride", "ct1d_padding", "ct1d_groups"),
        diagnosis={"ct1d_output_padding": "output_padding added at the start instead of the end"},
        absent=("2·padding",),  # padding == output_padding makes it look like that too
    ),
    Mutant(
        "output_padding_on_both_sides_1d",
        CT1,
        (
            (LENGTH_1D, LENGTH_1D + "\n    L_out = output_length(W, w, s, p, 0, d)"),
            (RETURN_1D, "    y = F.pad(y, (op, op))\n" + RETURN_1D),
        ),
        loses=("ct1d_output_padding",),
        keeps=("ct1d_basic", "ct1d_stride", "ct1d_padding"),
        diagnosis={"ct1d_output_padding": "output_padding added on both sides"},
    ),
    Mutant(
        "stride_like_a_convolution_1d",
        CT1,
        (
            (
                SIGNATURE_1D,
                's, p = 1, single(padding, "padding")\n    kept = single(stride, "stride")',
            ),
            (RETURN_1D, "    y = y[:, :, ::kept]\n" + RETURN_1D),
        ),
        loses=("ct1d_stride",),
        keeps=("ct1d_basic", "ct1d_channels_batch"),
        diagnosis={"ct1d_stride": "stride used like a convolution's stride"},
    ),
    Mutant(
        "bias_missing_1d",
        CT1,
        (
            (
                "phase_bias = None if bias is None else bias.repeat_interleave(s)",
                "phase_bias = None",
            ),
        ),
        loses=("ct1d_bias",),
        # Hidden cases of every conv test may carry a bias: only the other parts are safe.
        keeps=("ct1d_output_length", "ct1d_matrix"),
        diagnosis={"ct1d_bias": "bias missing"},
    ),
    Mutant(
        "output_length_without_plus_one",
        CT1,
        (
            (
                "length = (L - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1",
                "length = (L - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding",
            ),
        ),
        loses=("ct1d_output_length", "ct1d_basic"),
        keeps=("ct1d_matrix",),
        diagnosis={"ct1d_output_length": "forgot the + 1"},
    ),
    Mutant(
        "matrix_one_row_short",
        CT1,
        (
            (
                "rows = torch.arange(input_length - w + 1, device=kernel.device)",
                "rows = torch.arange(input_length - w, device=kernel.device)",
            ),
        ),
        loses=("ct1d_matrix",),
        keeps=("ct1d_output_length", "ct1d_basic", "ct1d_module"),
        diagnosis={"ct1d_matrix": "shape"},
    ),
    Mutant(
        "kernel_flipped_2d",
        CT2,
        (
            (
                "weight.reshape(groups, C_in_g, C_out_g * w_h * w_w)",
                "weight.flip(-1, -2).reshape(groups, C_in_g, C_out_g * w_h * w_w)",
            ),
        ),
        loses=("ct2d_basic", "ct2d_channels_batch", "ct2d_stride"),
        keeps=("ct2d_coverage_map",),
        diagnosis={"ct2d_basic": REVERSED_TAPS},
    ),
    Mutant(
        "channels_swapped_in_weight_2d",
        CT2,
        (
            (
                "weight.reshape(groups, C_in_g, C_out_g * w_h * w_w)",
                "weight.reshape(groups, C_out_g, C_in_g, w_h * w_w).transpose(1, 2)"
                ".reshape(groups, C_in_g, C_out_g * w_h * w_w)",
            ),
        ),
        loses=("ct2d_channels_batch", "ct2d_groups"),
        keeps=("ct2d_basic", "ct2d_coverage_map"),
        diagnosis={"ct2d_channels_batch": "in_channels and out_channels are swapped"},
    ),
    Mutant(
        "float32_step_in_float64_1d",
        CT1,
        ((CROP_1D, CROP_1D + ".float().to(x.dtype)"),),
        loses=("ct1d_dtypes",),
        keeps=("ct1d_basic", "ct1d_stride", "ct1d_padding", "ct1d_output_length"),
        diagnosis={"ct1d_dtypes": "the result looks like it went through float32"},
    ),
    Mutant(
        "float32_bias_in_float64_1d",
        CT1,
        (("else bias.repeat_interleave(s)", "else bias.float().repeat_interleave(s)"),),
        loses=("ct1d_dtypes",),
        keeps=("ct1d_basic", "ct1d_channels_batch", "ct1d_stride", "ct1d_output_length"),
        diagnosis={"ct1d_dtypes": "torch refused to mix float32 and float64 tensors"},
    ),
    Mutant(
        "one_too_long_in_the_gradient_test_1d",
        CT1,
        ((RETURN_1D, "    y = F.pad(y, (0, 1))\n" + RETURN_1D),),
        loses=("ct1d_gradients",),
        keeps=("ct1d_output_length", "ct1d_matrix"),
        diagnosis={"ct1d_gradients": "output shape: expected"},
        absent=("autograd could not differentiate",),
    ),
    Mutant(
        "module_ignores_output_size",
        CT1,
        (("        if output_size is not None:\n", "        if False:\n"),),
        loses=("ct1d_module",),
        keeps=("ct1d_basic", "ct1d_stride", "ct1d_output_padding"),
        diagnosis={"ct1d_module": "output_size ignored"},
    ),
    Mutant(
        "coverage_map_one_too_long",
        CT2,
        (("minlength=(n - 1) * s + w", "minlength=n * s + w"),),
        loses=("ct2d_coverage_map",),
        keeps=("ct2d_basic", "ct2d_stride"),
        diagnosis={"ct2d_coverage_map": "shape"},
    ),
    Mutant(
        "align_corners_inverted",
        ITP,
        (("align_corners = bool(align_corners)", "align_corners = not align_corners"),),
        loses=(
            "interp_linear",
            "interp_bilinear_size",
            "interp_align_corners",
            "interp_resize_conv",
        ),
        keeps=("interp_nearest_size", "interp_nearest_scale", "interp_nearest_exact"),
        diagnosis={"interp_align_corners": "align_corners inverted"},
    ),
    Mutant(
        "scale_the_wrong_way_round",
        ITP,
        (
            (
                "return torch.tensor(1.0 / scale, dtype=dtype)",
                "return torch.tensor(scale, dtype=dtype)",
            ),
            (
                "return torch.tensor(n_in, dtype=dtype) / n_out",
                "return torch.tensor(n_out, dtype=dtype) / n_in",
            ),
        ),
        loses=("interp_bilinear_scale", "interp_bilinear_size", "interp_linear"),
        diagnosis={"interp_bilinear_scale": "the scale is used the wrong way round"},
    ),
    Mutant(
        "nearest_index_rounded",
        ITP,
        (("return position.floor().long()", "return position.round().long()"),),
        loses=("interp_nearest_scale", "interp_nearest_size"),
        keeps=("interp_linear", "interp_bilinear_size", "interp_align_corners"),
        diagnosis={"interp_nearest_scale": "the source index is rounded"},
        absent=("the scale is used the wrong way round",),
    ),
    Mutant(
        "align_corners_without_the_minus_ones",
        ITP,
        (
            (
                "return torch.tensor(n_in - 1, dtype=dtype) / (n_out - 1)",
                "return torch.tensor(n_in, dtype=dtype) / n_out",
            ),
        ),
        loses=("interp_align_corners", "interp_linear"),
        keeps=("interp_nearest_size", "interp_nearest_scale", "interp_bilinear_scale"),
        diagnosis={"interp_align_corners": "a wrong align_corners=True formula"},
    ),
    Mutant(
        "interpolate_never_raises",
        ITP,
        (
            (
                "    if size is not None and scale_factor is not None:\n        raise",
                "    if False:\n        raise",
            ),
            (
                "    if size is None and scale_factor is None:\n        raise",
                "    if False:\n        raise",
            ),
            (
                "        if align_corners is not None:\n            raise",
                "        if False:\n            raise",
            ),
            (
                "    if mode in linear_modes and input.dim() != linear_modes[mode]:\n        raise",
                "    if False:\n        raise",
            ),
        ),
        # Each of these tests has a visible case where torch raises, not only hidden ones.
        loses=(
            "interp_nearest_size",
            "interp_nearest_scale",
            "interp_linear",
            "interp_bilinear_size",
        ),
        keeps=("interp_bilinear_scale", "interp_align_corners", "interp_resize_conv"),
        diagnosis={"interp_nearest_scale": "torch raises here"},
    ),
    Mutant(
        "output_size_one_too_many",
        ITP,
        (
            (
                "out_sizes = [math.floor(n * s) for n, s in zip(in_sizes, scales, strict=True)]",
                "out_sizes = [math.floor(n * s) + 1 for n, s in zip(in_sizes, scales, strict=True)]",
            ),
        ),
        loses=("interp_nearest_scale", "interp_bilinear_scale", "interp_resize_conv"),
        keeps=("interp_nearest_size", "interp_bilinear_size"),
        # No named mistake explains one pixel too many: the shape mismatch is the message.
        diagnosis={"interp_nearest_scale": "output shape: expected (1, 1, 6, 6), got (1, 1, 7, 7)"},
    ),
]


def answer_cells(assignment: str) -> list[str]:
    """The instructor's code cells, tests excluded, as the grader takes a submission's."""
    notebook = read_notebook(
        REPO_ROOT / "solutions" / assignment / f"{NOTEBOOKS[assignment]}.ipynb"
    )
    return [cell.source for cell in student_code(notebook, notebook)]


def mutate(cells: list[str], edits: tuple[tuple[str, str], ...]) -> list[str]:
    """Apply each edit to the one cell holding it; each must occur exactly once in the code."""
    cells = list(cells)
    for old, new in edits:
        holders = [i for i, source in enumerate(cells) if old in source]
        count = sum(source.count(old) for source in cells)
        assert count == 1, f"edit {old!r} occurs {count} times in the instructor's code"
        cells[holders[0]] = cells[holders[0]].replace(old, new)
    return cells


def namespace_of(cells: list[str], label: str) -> dict:
    namespace: dict = {"__name__": "__mutant__"}
    for index, source in enumerate(cells):
        exec(compile(source, f"<{label} cell {index}>", "exec"), namespace)
    return namespace


@dataclass
class Outcome:
    passed: bool
    messages: list[str]  # message and diagnosis of every failing case


def grade_in_process(namespace: dict, assignment: str) -> dict[str, Outcome]:
    """Every test of ``assignment``: public cases and fixed hidden draws, all cases run."""
    outcomes = {}
    for grade_id, info in course_checks.GRADE_IDS.items():
        if info.assignment != assignment:
            continue
        cases = list(course_checks.PUBLIC_CASES[grade_id])
        for seed in HIDDEN_SEEDS:
            cases += hidden_cases(grade_id, seed)
        messages = []
        for case in cases:
            inputs = course_checks.make_inputs(case)
            expected = course_checks.reference_outputs(case, inputs)
            try:
                actual = course_checks.run_student(case, namespace[info.target], inputs)
            except Exception as error:  # the comparison judges raising
                actual = error
            verdict = course_checks.compare(case, inputs, expected, actual)
            if not verdict.passed:
                messages.append(f"{verdict.message}\n  diagnosis: {verdict.diagnosis}")
        outcomes[grade_id] = Outcome(not messages, messages)
    return outcomes


@pytest.fixture(scope="module")
def instructor_outcomes() -> dict[str, dict[str, Outcome]]:
    return {
        assignment: grade_in_process(namespace_of(answer_cells(assignment), assignment), assignment)
        for assignment in {mutant.assignment for mutant in MUTANTS}
    }


def test_the_unmutated_answers_pass_everything(instructor_outcomes):
    """The baseline: without edits, the same grading gives every test (else mutants prove nothing)."""
    for assignment, outcomes in instructor_outcomes.items():
        failing = {gid: o.messages[:1] for gid, o in outcomes.items() if not o.passed}
        assert not failing, f"{assignment}: the instructor's answer fails {failing}"


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_loses_points_and_is_diagnosed(mutant):
    cells = mutate(answer_cells(mutant.assignment), mutant.edits)
    outcomes = grade_in_process(namespace_of(cells, mutant.name), mutant.assignment)
    for grade_id in mutant.loses:
        assert not outcomes[grade_id].passed, f"{mutant.name} still passes {grade_id}"
    for grade_id in mutant.keeps:
        assert outcomes[grade_id].passed, (
            f"{mutant.name} fails {grade_id}, which its bug does not touch:\n"
            + "\n".join(outcomes[grade_id].messages[:2])
        )
    for grade_id, text in mutant.diagnosis.items():
        messages = outcomes[grade_id].messages
        assert any(text in message for message in messages), (
            f"{mutant.name}: no failing case of {grade_id} says {text!r}:\n"
            + "\n".join(messages[:4])
        )
    for text in mutant.absent:
        wrong = [m for o in outcomes.values() for m in o.messages if text in m]
        assert not wrong, f"{mutant.name}: a failing case says {text!r}:\n{wrong[0]}"


#: Bugs only a rule of the text catches: the visible cases alone must catch them, in
#: every test named (else a student loses the points in hidden cases with no warning).
VISIBLE_ONLY = [
    Mutant(
        "output_padding_limited_by_stride_only_1d",  # dilation forgotten in the rule
        CT1,
        (("if output_padding >= max(stride, dilation):", "if output_padding >= stride:"),),
        loses=("ct1d_output_length", "ct1d_output_padding"),
    ),
    Mutant(
        "output_padding_limited_by_stride_only_2d",
        CT2,
        (("if op >= max(s, d):", "if op >= s:"),),
        loses=("ct2d_output_padding",),
    ),
    next(mutant for mutant in MUTANTS if mutant.name == "interpolate_never_raises"),
]


@pytest.mark.parametrize("mutant", VISIBLE_ONLY, ids=[m.name for m in VISIBLE_ONLY])
def test_the_visible_cases_alone_catch_it(mutant):
    namespace = namespace_of(mutate(answer_cells(mutant.assignment), mutant.edits), mutant.name)
    for grade_id in mutant.loses:
        target = namespace[course_checks.GRADE_IDS[grade_id].target]
        cases = course_checks.PUBLIC_CASES[grade_id]
        verdicts = [course_checks.grade_case(case, target) for case in cases]
        assert not all(v.passed for v in verdicts), f"{grade_id}: no visible case catches it"


#: Mutants also graded by the CI grader, in one batch: (mutant, test, text in its output).
CLI_MUTANTS = [
    ("kernel_not_flipped_1d", "ct1d_basic", REVERSED_TAPS),
    ("padding_added_not_cropped_1d", "ct1d_padding", "padding added around the output"),
    ("output_padding_at_the_start_1d", "ct1d_output_padding", "output_padding added at the start"),
]


def test_mutants_through_the_ci_grader(tmp_path, venv_env):
    by_name = {mutant.name: mutant for mutant in MUTANTS}
    for name, _, _ in CLI_MUTANTS:
        mutant = by_name[name]
        path = REPO_ROOT / "solutions" / mutant.assignment / f"{NOTEBOOKS[mutant.assignment]}.ipynb"
        notebook = read_notebook(path)
        for old, new in mutant.edits:
            holders = [c for c in notebook["cells"] if old in cell_source(c)]
            assert len(holders) == 1, f"{name}: edit {old!r} is not in exactly one cell"
            holders[0]["source"] = cell_source(holders[0]).replace(old, new)
        target = tmp_path / "submitted" / name / mutant.assignment / path.name
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(notebook), encoding="utf-8")
    out = tmp_path / "out"
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder",
            "grade",
            str(tmp_path / "submitted"),
            "--out",
            str(out),
        ]
        + ["--jobs", "2", "--progress", "never"],
        cwd=REPO_ROOT,
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-2000:]
    for name, grade_id, text in CLI_MUTANTS:
        mutant = by_name[name]
        (results_path,) = (out / name / mutant.assignment).glob("*/results.json")
        results = json.loads(results_path.read_text(encoding="utf-8"))
        tests = {test["name"]: test for test in results["tests"]}
        assert results["score"] < 100, name
        assert tests[grade_id]["score"] == 0, f"{name}: {grade_id} kept its points"
        assert text in tests[grade_id]["output"], f"{name}: {tests[grade_id]['output']}"
        for kept in mutant.keeps:
            assert tests[kept]["score"] == tests[kept]["max_score"], f"{name} lost {kept}"
