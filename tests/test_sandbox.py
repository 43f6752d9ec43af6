"""The sandbox's promises, each tried by a submission that attacks it (``python -m autograder``).

Each test writes a few submissions of the mini release of ``test_grader.py`` and grades
them end to end: a process started by a cell, a thread left for the graded calls, a file
left for the next job, a sandbox that dies in the middle of a batch, a machine without
bubblewrap. Expected scores are what each submission deserves: full marks for the honest
part of a notebook, 0 where the graded calls did not run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_grader import (
    FULL,
    REPO_ROOT,
    grader,
    results,
    scores,
    submission,
    write_release,
    write_submission,
)


def test_a_cell_can_start_no_process_nor_program(tmp_path):
    """fork, subprocess and os.system fail in a cell with EPERM; the notebook is still graded."""
    attempts = (
        "import os, subprocess\n"
        "refused = []\n"
        "for attempt in (os.fork, lambda: subprocess.run(['true']), lambda: os.system('true')):\n"
        "    try:\n"
        "        if attempt() == 0:\n"
        "            os._exit(0)\n"
        "    except OSError as error:\n"
        "        refused.append(error.errno)\n"
        "assert refused == [1, 1], refused\n"
    )
    release = write_release(tmp_path)
    write_submission(tmp_path, "forks", submission(extra=attempts))
    run = grader("grade", "submitted", "--out", "out", "--release", str(release), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    data = results(tmp_path / "out", "forks")
    # os.system does not raise: it returns the failed fork's status, so only two errors.
    assert data["score"] == FULL and "raised" not in data["output"], data["output"]
    assert any("seccomp" in p for p in data["extra_data"]["protections"])


def test_a_thread_left_by_the_cells_gets_no_case(tmp_path):
    """The cases are sent only when the cells' threads are gone: one that waits gets none."""
    waiter = "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n"
    release = write_release(tmp_path)
    write_submission(tmp_path, "a_waits", submission(extra=waiter))
    write_submission(tmp_path, "b_honest", submission())
    run = grader(
        "grade", "submitted", "--out", "out", "--release", str(release), "--jobs", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert scores(tmp_path / "out") == {"a_waits": 0, "b_honest": FULL}
    assert "thread(s) running" in results(tmp_path / "out", "a_waits")["output"]


def test_each_job_starts_with_a_new_tmp_and_job_folder(tmp_path):
    """What one submission leaves in /tmp, /dev/shm or its job folder, the next never sees."""
    plant = (
        "import os\n"
        "for path in ('/tmp/answer', '../answer', '/dev/shm/answer'):\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    # Found anything: it throws its own answer away and scores 0 on the conv tests.
    look = (
        "import os\n"
        "if any(os.path.exists(p) for p in ('/tmp/answer', '../answer', '/dev/shm/answer')):\n"
        "    del conv_transpose1d\n"
    )
    release = write_release(tmp_path)
    write_submission(tmp_path, "a_plants", submission(extra=plant))
    notebook = submission()
    notebook["cells"].append({"cell_type": "code", "metadata": {}, "source": look,
                              "outputs": [], "execution_count": None})  # fmt: skip
    write_submission(tmp_path, "b_looks", notebook)
    run = grader(
        "grade", "submitted", "--out", "out", "--release", str(release), "--jobs", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert scores(tmp_path / "out") == {"a_plants": FULL, "b_looks": FULL}


def _zygotes(root_pid: int) -> list[int]:
    """The sandbox workers (python running runner.py) below ``root_pid``."""
    from autograder.sandbox import _host_descendants

    found = []
    for pid in _host_descendants(root_pid):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"runner.py") for a in arguments) and b"python" in arguments[0]:
            found.append(pid)
    return found


def test_a_worker_killed_mid_batch_is_graded_again(tmp_path):
    """The sandbox dying under an honest submission costs it nothing: a fresh worker grades it."""
    release = write_release(tmp_path)
    write_submission(tmp_path, "slow", submission(extra="import time\ntime.sleep(6)\n"))
    command = [sys.executable, "-m", "autograder", "grade", "submitted", "--out", "out",
               "--release", str(release), "--jobs", "1"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE) as run:
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and run.poll() is None:
            # Killed while the submission's process runs (the zygote has a child then).
            for zygote in _zygotes(run.pid):
                if Path(f"/proc/{zygote}/task/{zygote}/children").read_text().split():
                    os.kill(zygote, signal.SIGKILL)
                    killed = zygote
            time.sleep(0.2)
        stderr = run.communicate(timeout=300)[1].decode()
    assert killed is not None, "the worker was never seen running a job"
    assert run.returncode == 0, stderr
    data = results(tmp_path / "out", "slow")
    assert data["score"] == FULL, data["output"]
    assert "not_graded" not in data["extra_data"]


def test_without_bubblewrap_nothing_is_graded(tmp_path):
    """No bwrap on PATH: exit 2, a message naming bubblewrap, and no output folder at all."""
    release = write_release(tmp_path)
    write_submission(tmp_path, "someone", submission())
    (tmp_path / "bin").mkdir()
    env = dict(os.environ, PATH=str(tmp_path / "bin"), PYTHONPATH=str(REPO_ROOT))
    run = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", "submitted", "--out", "out",
         "--release", str(release)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "bubblewrap" in run.stderr and "--sandbox none" in run.stderr
    assert not (tmp_path / "out").exists()


def test_sandbox_none_is_said_in_every_result(tmp_path):
    """--sandbox none grades (a trusted class) and every result says there was no sandbox."""
    release = write_release(tmp_path)
    write_submission(tmp_path, "correct", submission())
    run = grader(
        "grade", "submitted", "--out", "out", "--release", str(release), "--sandbox", "none",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = results(tmp_path / "out", "correct")
    assert data["score"] == FULL
    assert data["extra_data"]["sandbox"] == "none"
    assert "NO SANDBOX" in data["output"]


# Native code inside the graded call (a route the README names as the in-process guard's
# limit): ctypes removes the guard's profile hook from C, where no Python event sees it, the
# guard's kernels are destroyed, and torch's own kernel runs. In-process Python and native
# code can undo the in-process guard; the uprobes outside the sandbox cannot be undone.
GUARD_UNDONE = """
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    import ctypes, sys
    import torch
    ctypes.pythonapi.PyEval_SetProfile(None, None)
    for library in sys.modules["course_checks"]._LAYER.libraries:
        library._destroy()
    with torch._C._DisableTorchDispatch():
        return torch.ops.aten.conv_transpose1d(
            input, weight, bias, stride, padding, output_padding, groups, dilation
        )
"""


def test_the_kernel_watch_sees_a_graded_call_that_undid_the_guard(tmp_path):
    """Where uprobes can be set, a forbidden native kernel reached with the cases in the
    sandbox costs every graded test, whatever the in-process guard was told."""
    from autograder import kernel_watch

    ok, why = kernel_watch.probe()
    if not ok:
        import pytest

        pytest.skip(f"uprobes cannot be set here: {why}")
    release = write_release(tmp_path)
    write_submission(tmp_path, "undoer", submission(extra=GUARD_UNDONE))
    run = grader("grade", "submitted", "--out", "out", "--release", str(release), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    data = results(tmp_path / "out", "undoer")
    assert data["score"] == 0, data["output"]
    assert "seen by the grader from outside" in data["output"]
    assert "conv_transpose" in data["output"]


def test_landlock_without_bubblewrap_hides_the_repository(tmp_path):
    """--sandbox landlock (a container that refuses namespaces): the submission can read
    neither the hidden cases nor the solutions, nor write the output folder."""
    from autograder import sandbox

    if os.geteuid() == 0 and sandbox.fallback_drop_uid() is None:
        import pytest

        # The grader refuses this mode then (a submission would run as root): tested below.
        pytest.skip("nobody cannot read this Python install (tests/test_gradescope.py copies it)")
    out = tmp_path / "out"
    probe = (
        "import os\n"
        f"secrets = [{str(REPO_ROOT / 'autograder' / 'hidden_cases.py')!r},\n"
        f"           {str(REPO_ROOT / 'solutions')!r}, '/proc/1/status']\n"
        "reached = []\n"
        "for path in secrets:\n"
        "    try:\n"
        "        os.listdir(path) if os.path.isdir(path) else open(path).read(10)\n"
        "        reached.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "try:\n"
        f"    os.makedirs({str(out / 'planted')!r})\n"
        "    reached.append('out')\n"
        "except OSError:\n"
        "    pass\n"
        "if reached:\n"
        "    del conv_transpose1d\n"
    )
    release = write_release(tmp_path)
    notebook = submission()
    notebook["cells"].append({"cell_type": "code", "metadata": {}, "source": probe,
                              "outputs": [], "execution_count": None})  # fmt: skip
    write_submission(tmp_path, "prober", notebook)
    run = grader(
        "grade", "submitted", "--out", "out", "--release", str(release), "--sandbox",
        "landlock", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = results(out, "prober")
    assert data["score"] == FULL, data["output"]
    assert not (out / "planted").exists()
    assert "Landlock without bubblewrap" in data["output"]


def test_landlock_refuses_to_run_a_submission_as_root(tmp_path):
    """As root, where nobody cannot read the Python install, --sandbox landlock grades nothing."""
    from autograder import sandbox

    if os.geteuid() != 0 or sandbox.fallback_drop_uid() is not None:
        import pytest

        pytest.skip("this machine's Python is readable by nobody: the mode runs as nobody")
    release = write_release(tmp_path)
    write_submission(tmp_path, "someone", submission())
    run = grader(
        "grade", "submitted", "--out", "out", "--release", str(release), "--sandbox",
        "landlock", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2 and "would run as root" in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()


# A hostile reviewer's attack on an earlier design: a cell says cells-done itself and waits
# to take the cases (there, from the channel they came on; here, from the pipe they will
# come in, which the process holds from the start). The cells run in a thread of their own
# now, and the cases go only to the main thread, seen from outside blocked on that pipe
# under the runner's frames: this cell is still running when it says it is done, so no
# case is sent at all.
TAKES_THE_CASES = """
import fcntl, os, stat
pipes = {}
for fd in range(3, 64):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            pipes[fd] = fcntl.fcntl(fd, fcntl.F_GETFL) & 3
    except OSError:
        pass
status = [fd for fd, access in pipes.items() if access == os.O_WRONLY]
cases = [fd for fd, access in pipes.items() if access == os.O_RDONLY]
os.write(status[0], b"cells-done\\n")
print("TOOK", len(os.read(cases[0], 1 << 20)))
"""


def test_a_cell_that_says_it_is_done_gets_no_case_and_needs_a_look(tmp_path):
    release = write_release(tmp_path)
    write_submission(tmp_path, "taker", submission(extra=TAKES_THE_CASES))
    run = grader("grade", "submitted", "--out", "out", "--release", str(release), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    data = results(tmp_path / "out", "taker")
    assert data["score"] == 0, data["output"]
    assert "TOOK" not in data["output"]
    assert "the cells left 1 thread(s) running" in data["output"]
    assert any("cases were refused" in reason for reason in data["extra_data"]["needs_a_look"])
    summary = (tmp_path / "out" / "summary.md").read_text().split("## Needs a look", 1)[1]
    assert "taker" in summary


# The runner's wait, as the stack check sees it: the same function names as runner.py, so
# that ``expected_wait_stack`` finds the chain in this source. {call} is _child's one call.
WAITER = """
import os
from os import read


def _receive_cases(cases_fd):
    return read(cases_fd, 1)


def _child(cases_fd):
    {call}


def _run_job(cases_fd):
    _child(cases_fd)


def main():
    cases_fd, _ = os.pipe()
    print(os.fstat(cases_fd).st_ino, flush=True)
    _run_job(cases_fd)


main()
"""


def _stack_problem_of(tmp_path: Path, call: str) -> str | None:
    from autograder import sandbox

    script = tmp_path / "runner.py"
    source = WAITER.replace("{call}", call)
    script.write_text(source)
    waiter = subprocess.Popen([sys.executable, "-I", str(script)], stdout=subprocess.PIPE)
    try:
        inode = int(waiter.stdout.readline())
        deadline = time.monotonic() + 30
        while not sandbox.waiting_on_pipe(waiter.pid, inode):
            assert time.monotonic() < deadline and waiter.poll() is None
            time.sleep(0.01)
        return sandbox.wait_stack_problem(
            waiter.pid, sandbox.expected_wait_stack(str(script), source)
        )
    finally:
        waiter.kill()
        waiter.wait()


def test_the_stack_check_accepts_only_the_runners_own_frames(tmp_path):
    """Read from outside with py-spy: the runner's chain passes; the same wait reached
    through one frame more (a lambda here; a cell, a hook or a patched function in a
    submission) is refused, and the refusal names the frame."""
    assert _stack_problem_of(tmp_path, "_receive_cases(cases_fd)") is None
    problem = _stack_problem_of(tmp_path, "(lambda: _receive_cases(cases_fd))()")
    assert problem is not None and "<lambda>" in problem
