"""The kernel watch: uprobes on libtorch's forbidden kernels, seen from outside the process.

Each route runs in a subprocess, in a thread of its own (its thread id is how the watch
attributes the hit), with one intra-op thread so the kernels run on that thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from autograder import kernel_watch, sandbox

PROBED = kernel_watch.probe()
pytestmark = pytest.mark.skipif(not PROBED[0], reason=f"no uprobes here: {PROBED[1]}")

_SETUP = """
import torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1)
torch.manual_seed(0)
x1, w1 = torch.randn(2, 4, 9), torch.randn(4, 3, 3)
x2, w2 = torch.randn(2, 4, 6, 6), torch.randn(4, 3, 3, 3)
x3, w3 = torch.randn(1, 2, 4, 4, 4), torch.randn(2, 2, 2, 2, 2)
theta = torch.tensor([[[0.9, 0.1, 0.0], [-0.1, 0.9, 0.1]]])
grid2 = torch.rand(2, 5, 5, 2) * 2 - 1
grid3 = torch.rand(1, 3, 3, 3, 3) * 2 - 1
"""

# Every route to a forbidden kernel that a submission could take from Python.
FORBIDDEN_ROUTES = {
    "F.conv_transpose1d": "F.conv_transpose1d(x1, w1, stride=2)",
    "F.conv_transpose2d": "F.conv_transpose2d(x2, w2, stride=2, padding=1)",
    "F.conv_transpose2d groups=2": "F.conv_transpose2d(x2, torch.randn(4, 2, 3, 3), groups=2)",
    "F.conv_transpose2d channels_last": (
        "F.conv_transpose2d(x2.to(memory_format=torch.channels_last), w2)"
    ),
    "F.conv_transpose2d float64 (slow kernel)": "F.conv_transpose2d(x2.double(), w2.double())",
    "F.conv_transpose3d": "F.conv_transpose3d(x3, w3)",
    "nn.ConvTranspose2d": "nn.ConvTranspose2d(4, 3, 3, stride=2)(x2)",
    "aten.convolution transposed": (
        "torch.ops.aten.convolution(x2, w2, None, [1, 1], [0, 0], [1, 1], True, [0, 0], 1)"
    ),
    "aten._convolution transposed": (
        "torch.ops.aten._convolution(x2, w2, None, [1, 1], [0, 0], [1, 1], True, [0, 0], 1,"
        " False, False, True, True)"
    ),
    "aten.slow_conv_transpose2d": "torch.ops.aten.slow_conv_transpose2d(x2, w2, [3, 3])",
    "aten.slow_conv_transpose3d": "torch.ops.aten.slow_conv_transpose3d(x3, w3, [2, 2, 2])",
    "mkldnn._convolution_transpose_pointwise": (
        "torch.ops.mkldnn._convolution_transpose_pointwise(x2, w2, None, [0, 0], [0, 0],"
        " [1, 1], [1, 1], 1, 'none', [], '')"
    ),
    "aten.convolution_backward": (
        "torch.ops.aten.convolution_backward(torch.randn(2, 3, 4, 4), x2, w2.transpose(0, 1),"
        " None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, False])"
    ),
    "conv1d backward (autograd)": (
        "x = x1.clone().requires_grad_(); F.conv1d(x, w1.transpose(0, 1)).sum().backward()"
    ),
    "conv2d backward (autograd)": (
        "x = x2.clone().requires_grad_(); F.conv2d(x, w2.transpose(0, 1)).sum().backward()"
    ),
    "conv2d backward float64 (slow kernel)": (
        "x = x2.double().requires_grad_(); F.conv2d(x, w2.double().transpose(0, 1)).sum().backward()"
    ),
    "aten.conv_tbc_backward": (
        "torch.ops.aten.conv_tbc_backward(torch.randn(7, 2, 3), torch.randn(9, 2, 4),"
        " torch.randn(3, 4, 3), torch.randn(3), 0)"
    ),
    "F.interpolate nearest": "F.interpolate(x2, scale_factor=2)",
    "F.interpolate nearest-exact": "F.interpolate(x1, scale_factor=2, mode='nearest-exact')",
    "F.interpolate nearest 3d": "F.interpolate(x3, scale_factor=2)",
    "F.interpolate linear": "F.interpolate(x1, scale_factor=2, mode='linear')",
    "F.interpolate bilinear": "F.interpolate(x2, size=(9, 9), mode='bilinear')",
    "F.interpolate bilinear antialias": (
        "F.interpolate(x2, size=(3, 3), mode='bilinear', antialias=True)"
    ),
    "F.interpolate bicubic": "F.interpolate(x2, scale_factor=2, mode='bicubic')",
    "F.interpolate bicubic antialias": (
        "F.interpolate(x2, size=(3, 3), mode='bicubic', antialias=True)"
    ),
    "F.interpolate trilinear": "F.interpolate(x3, scale_factor=2, mode='trilinear')",
    "F.interpolate area": "F.interpolate(x2, scale_factor=2, mode='area')",
    "F.interpolate area 1d": "F.interpolate(x1, scale_factor=2, mode='area')",
    "F.interpolate backward": (
        "x = x2.clone().requires_grad_(); F.interpolate(x, scale_factor=2).sum().backward()"
    ),
    "F.upsample": "F.upsample(x2, scale_factor=2)",
    "F.upsample_bilinear": "F.upsample_bilinear(x2, scale_factor=2)",
    "nn.Upsample": "nn.Upsample(scale_factor=3, mode='nearest')(x1)",
    "torch._C._nn.upsample_nearest1d": "torch._C._nn.upsample_nearest1d(x1, [18])",
    "F.grid_sample bilinear": "F.grid_sample(x2, grid2, align_corners=False)",
    "F.grid_sample nearest": "F.grid_sample(x2, grid2, mode='nearest', align_corners=False)",
    "F.grid_sample bicubic": "F.grid_sample(x2, grid2, mode='bicubic', align_corners=False)",
    "F.grid_sample 3d": "F.grid_sample(x3, grid3, align_corners=False)",
    "F.affine_grid": "F.affine_grid(theta, [1, 1, 4, 4], align_corners=False)",
}

# What honest answers use: none of it may be seen.
HONEST_ROUTES = {
    "F.conv1d": "F.conv1d(x1, w1.transpose(0, 1), stride=2, padding=1)",
    "F.conv2d": "F.conv2d(x2, w2.transpose(0, 1), padding=1)",
    "F.conv2d dilated, grouped": (
        "F.conv2d(x2, torch.randn(4, 2, 3, 3), dilation=2, groups=2, padding=2)"
    ),
    "nn.Conv2d": "nn.Conv2d(4, 3, 3)(x2)",
    "matmul and its backward": (
        "a = torch.randn(5, 4, requires_grad=True); (a @ torch.randn(4, 3)).sum().backward()"
    ),
    "einsum": "torch.einsum('bci,cok->boik', x1, w1)",
    "F.fold / F.unfold and backward": (
        "u = F.unfold(x2.clone().requires_grad_(), 3); F.fold(u, (6, 6), 3).sum().backward()"
    ),
    "index_add": "torch.zeros(20).index_add(0, torch.tensor([1, 5, 5]), torch.ones(3))",
    "scatter_add": "torch.zeros(20).scatter_add(0, torch.tensor([2, 2, 7]), torch.ones(3))",
    "gather and its backward": (
        "s = torch.randn(10, requires_grad=True); s.gather(0, torch.tensor([1, 1])).sum().backward()"
    ),
    "repeat_interleave": "x2.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)",
    "F.pad": "F.pad(x2, (1, 1, 2, 2))",
}


def _route_script(routes: dict[str, str]) -> str:
    """Run each route in a thread of its own; print {route: thread id} as JSON."""
    calls = "\n".join(
        f"def route_{i}():\n{textwrap.indent(code.replace('; ', chr(10)), '    ')}\n"
        f"ids[{name!r}] = run(route_{i})"
        for i, (name, code) in enumerate(routes.items())
    )
    return (
        _SETUP
        + "import json, threading\nids = {}\n"
        + "def run(function):\n"
        + "    thread = threading.Thread(target=function); thread.start(); thread.join()\n"
        + "    return thread.native_id\n"
        + calls
        + "\nprint(json.dumps(ids))\n"
    )


def _run(script: str, prefix: list[str] | None = None) -> tuple[int, dict[str, int]]:
    """Run ``script`` in a fresh Python (under ``prefix``, e.g. bwrap); (host PID, its output)."""
    command = (prefix or []) + [sys.executable, "-I", "-c", script]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return process.pid, json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def watch():
    with kernel_watch.KernelWatch() as running:
        yield running


def test_every_forbidden_route_is_seen_by_its_own_thread(watch):
    pid, thread_ids = _run(_route_script(FORBIDDEN_ROUTES))
    unseen = [route for route, tid in thread_ids.items() if not watch.hits([tid])]
    assert unseen == []
    # The process as a whole is seen too (threads map to their tgid), and only once.
    assert watch.hits([pid]) != []
    assert watch.hits([pid]) == []
    assert watch.intact, watch.problems


def test_each_family_is_named_by_the_routes_that_reach_it(watch):
    routes = {
        "transposed convolution": FORBIDDEN_ROUTES["F.conv_transpose2d"],
        "upsampling": FORBIDDEN_ROUTES["F.interpolate bicubic"],
        "grid sampling": FORBIDDEN_ROUTES["F.grid_sample bilinear"],
        "convolution backward": FORBIDDEN_ROUTES["conv1d backward (autograd)"],
    }
    _, thread_ids = _run(_route_script(routes))
    families = {f.name: f.family for f in watch.functions}
    for family, tid in thread_ids.items():
        assert {families[name] for name in watch.hits([tid])} == {family}


def test_honest_operations_are_not_seen(watch):
    pid, thread_ids = _run(_route_script(HONEST_ROUTES))
    assert watch.hits([pid, *thread_ids.values()]) == []
    assert watch.intact, watch.problems


def test_a_process_in_bubblewrap_is_seen_under_its_host_pid(watch):
    ok, why = sandbox.probe_bwrap()
    if not ok:
        pytest.skip(f"bubblewrap cannot run here: {why}")
    jobs = tempfile.mkdtemp(prefix="kernel-watch-")
    prefix = sandbox.bwrap_command(os.path.dirname(sandbox.RUNNER), jobs)
    routes = {
        "transposed": FORBIDDEN_ROUTES["F.conv_transpose1d"],
        "grid": FORBIDDEN_ROUTES["F.grid_sample nearest"],
    }
    bwrap_pid, thread_ids = _run(_route_script(routes), prefix)
    assert max(thread_ids.values()) < 100  # the sandbox's own PID namespace
    families = {f.name: f.family for f in watch.functions}
    seen = {families[name] for name in watch.hits([bwrap_pid])}
    assert seen == {"transposed convolution", "grid sampling"}
    honest_pid, _ = _run(_route_script(HONEST_ROUTES), prefix)
    assert watch.hits([honest_pid]) == []


def test_a_hit_of_another_process_is_kept_for_it(watch):
    first, _ = _run(_route_script({"a": FORBIDDEN_ROUTES["F.upsample"]}))
    second, _ = _run(_route_script({"b": HONEST_ROUTES["F.conv2d"]}))
    assert watch.hits([second]) == []
    assert "at::native::structured_upsample_nearest2d_out_cpu::impl" in watch.hits([first])


def test_a_thread_that_garbles_its_record_is_still_seen_and_the_watch_says_so(watch):
    assert watch.take_problems() == []
    # A comm (thread name) holding a newline splits its trace records in two.
    garble = (
        "open(f'/proc/self/task/{threading.get_native_id()}/comm', 'w').write('a\\nb-1 (1) [0] ')"
    )
    routes = {"garbled": garble + "; " + FORBIDDEN_ROUTES["F.interpolate linear"]}
    pid, _ = _run(_route_script(routes))
    assert "at::native::upsample_linear1d_kernel_impl" in watch.hits([pid])
    assert not watch.intact
    problems = watch.take_problems()
    assert problems and all("unreadable trace line" in p for p in problems)
    assert watch.intact


def test_a_full_trace_buffer_is_reported_as_lost_events():
    flood = "for _ in range(3000):\n    F.interpolate(x1, size=12)"
    with kernel_watch.KernelWatch(buffer_kb=8, drain_every=None) as small:
        _run(_route_script({"flood": flood}))
        assert any(problem.startswith("the trace lost") for problem in small.take_problems())


def test_the_watch_removes_its_instance_and_probes_and_a_dead_graders():
    root = kernel_watch.tracefs_root()
    with kernel_watch.KernelWatch() as running:
        name = running._instance.name
        assert os.path.isdir(f"{root}/instances/{name}")
    assert not os.path.exists(f"{root}/instances/{name}")
    assert name.replace("-", "_") not in open(f"{root}/uprobe_events").read()
    # A grader killed with its watch set leaves both behind: the next start removes them.
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = kernel_watch._TraceInstance(root, f"autograder-{dead.pid}-0badc0de")
    stale.define([f"p:{stale.group}/f0 {kernel_watch.torch_library()}:{watch_offset()}"])
    stale.enable(stale.group)
    dead.kill()
    dead.wait()
    with kernel_watch.KernelWatch():
        assert not os.path.exists(stale.path)
        assert stale.group not in open(f"{root}/uprobe_events").read()


def watch_offset() -> str:
    return hex(kernel_watch.forbidden_functions()[0].offset)


_TIMING = """
import time
def best(call, n=2000):  # CPU time (the trap is the kernel's): steadier than wall time
    times = []
    for _ in range(5):
        began = time.process_time()
        for _ in range(n):
            call()
        times.append((time.process_time() - began) / n)
    return min(times)
print(best(lambda: F.conv1d(x1, w1.transpose(0, 1))), best(lambda: F.interpolate(x1, size=10)))
"""


def _timings() -> tuple[float, float]:
    """Seconds per call of an honest conv1d and of a forbidden interpolate, in a fresh Python."""
    command = [sys.executable, "-I", "-c", _SETUP + _TIMING]
    honest, forbidden = subprocess.run(
        command, capture_output=True, text=True, check=True
    ).stdout.split()
    return float(honest), float(forbidden)


def test_setup_is_quick_and_a_path_honest_code_takes_costs_nothing_more(watch):
    assert watch.setup_seconds["define"] + watch.setup_seconds["enable"] < 10
    group = os.path.join(watch._instance.path, "events", watch._instance.group, "enable")
    runs: dict[str, list[tuple[float, float]]] = {"1": [], "0": []}
    try:
        for state in ("1", "0", "1", "0"):  # "0": the probes leave (unless another watch runs)
            kernel_watch._write(group, state)
            runs[state].append(_timings())
    finally:
        kernel_watch._write(group, "1")
    on, off = (tuple(map(min, zip(*runs[state], strict=True))) for state in ("1", "0"))
    print(f"per call, watched vs not: conv1d {on[0] * 1e6:.2f} vs {off[0] * 1e6:.2f} us,"
          f" interpolate {on[1] * 1e6:.2f} vs {off[1] * 1e6:.2f} us")  # fmt: skip
    assert on[0] < off[0] * 1.5 + 5e-6  # honest: no probe on its path


# The routes of the families the grader watches (conv backward and area are allowed it).
GRADER_ROUTES = {
    name: code
    for name, code in FORBIDDEN_ROUTES.items()
    if "backward" not in name.replace("F.interpolate backward", "") and "area" not in name
}


def test_the_graders_choke_points_see_every_route_of_its_families():
    """The grader probes only the choke points (fewer probes, a faster teardown): every
    transposed-convolution, upsampling and grid-sampling route still runs through one."""
    from autograder import sandbox

    assert "F.interpolate backward" in GRADER_ROUTES and "F.conv_transpose3d" in GRADER_ROUTES
    with kernel_watch.KernelWatch(select=sandbox._watched) as watch:
        assert len(watch.functions) < len(kernel_watch.forbidden_functions()) / 2
        _, thread_ids = _run(_route_script(GRADER_ROUTES))
        unseen = [route for route, tid in thread_ids.items() if not watch.hits([tid])]
        _, honest = _run(_route_script(HONEST_ROUTES))
        seen_honest = [route for route, tid in honest.items() if watch.hits([tid])]
    assert unseen == []
    assert seen_honest == []


def test_a_detached_close_removes_everything_in_the_background_and_is_not_stale():
    """close(detach=True) returns at once; a process of its own removes the probes, and a
    new watch started meanwhile leaves that removal alone."""
    import time
    from pathlib import Path

    watch = kernel_watch.KernelWatch(select=lambda f: f.family == "grid sampling")
    watch.start()
    name = watch._instance.name
    group = watch._instance.group
    began = time.monotonic()
    assert watch.close(detach=True) == []
    assert time.monotonic() - began < 1
    root = kernel_watch.tracefs_root()
    assert all(not line.startswith(f"{name}:") for line in kernel_watch.remove_stale(root))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        defined = Path(root, "uprobe_events").read_text()
        if group not in defined and not Path(root, "instances", name).exists():
            break
        time.sleep(0.2)
    assert group not in Path(root, "uprobe_events").read_text()
    assert not Path(root, "instances", name).exists()


def test_kernel_threads_forked_by_kthreadd_are_not_a_garbled_record():
    """kthreadd names its children at creation; a user process's child keeps its name."""
    watch = kernel_watch.KernelWatch()
    kworker = (
        "        kthreadd-2       (      2) [000] .....  8500.743253: sched_process_fork: "
        "comm=kthreadd pid=2 child_comm=kworker/1:2 child_pid=11334"
    )
    watch._read_line(kworker)
    assert watch.problems == [] and watch._lineage.parent[11334] == 2
    renamed = (
        "          python-500     (    500) [001] .....  8500.9: sched_process_fork: "
        "comm=python pid=500 child_comm=other child_pid=501"
    )
    watch._read_line(renamed)
    assert len(watch.problems) == 1 and "inconsistent fork record" in watch.problems[0]
