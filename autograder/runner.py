"""The untrusted side of the grader: a worker ("zygote") that runs submissions in the sandbox.

This file runs INSIDE the sandbox, as a script (``python -I -B runner.py``), next to a copy
of ``course_checks.py``; it imports nothing from the ``autograder`` package, which the
sandbox does not contain. The zygote imports torch and the checks once, then, for each job
the trusted grader sends:

* takes the job's cases and inputs out of the job folder and holds them (no student code
  has run yet, and none can read the zygote's memory: it is not dumpable, and the sandbox
  has no /proc);
* forks stage A, which redirects its stdout/stderr to files, takes its own process group
  and temporary directory, sets rlimits (CPU time, address space, processes, file size)
  and, outside bubblewrap, drops to ``nobody`` when it can; then executes the student's
  code cells with plain ``exec`` in one namespace (a cell that raises is reported and the
  next cells still run; IPython's ``%``/``!`` lines are reported as unsupported and
  skipped);
* A forks stage B and exits, ending every thread the cells started; the zygote kills every
  process the cells left, then sends B the cases and inputs; B calls
  ``course_checks.run_student`` for each case under the kernel guard and writes the
  outputs (safetensors) and a small JSON status per case.

So no student code runs while the inputs exist outside a graded call, except what a
graded call itself starts.

Everything the child writes is untrusted: the grader reads it back with safe loaders and
compares in its own process. The zygote never reports a result, only that the child ended.

Protocol (one JSON object per line): the grader writes ``{"job": NAME, ...limits}`` on the
zygote's stdin; the zygote answers ``{"ready": true}`` once at start and
``{"job": NAME, "ended": STATUS}`` when the job's child and all its descendants are gone.
"""

from __future__ import annotations

import argparse
import builtins
import ctypes
import gc
import importlib.util
import json
import os
import resource
import signal
import sys
import time
import traceback

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000

#: Names of files in a job directory (written by the grader or by the child).
CELLS_FILE = "cells.json"
CASES_FILE = "cases.json"
INPUTS_FILE = "inputs.safetensors"
CELL_REPORT_FILE = "cells_report.json"
TAMPER_FILE = "tamper.json"
DONE_FILE = "done.json"

PRELOAD = (
    "numpy",
    "math",
    "itertools",
    "functools",
    "collections",
    "typing",
    "dataclasses",
    "random",
    "time",
    "torch.nn",
    "torch.nn.functional",
    "torch.autograd",
    "matplotlib",
    "matplotlib.pyplot",
)

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> bool:
    return _libc.prctl(option, value, 0, 0, 0) == 0


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle)


def _load_course_checks(path: str):
    """Import the copy of course_checks.py as the top-level module ``course_checks``.

    Isolated mode (``-I``) keeps the script's folder off ``sys.path``; registering the module
    by hand lets a student cell's ``from course_checks import check`` work as in Jupyter.
    """
    spec = importlib.util.spec_from_file_location("course_checks", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["course_checks"] = module
    spec.loader.exec_module(module)
    return module


def _snapshot(module) -> dict[str, object]:
    """The code objects of a module's functions and classes' methods, to detect tampering."""
    seen: dict[str, object] = {}
    for name, value in vars(module).items():
        code = getattr(value, "__code__", None)
        if code is not None:
            seen[name] = (value, code)
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for attr, member in vars(value).items():
                member_code = getattr(member, "__code__", None)
                if member_code is not None:
                    seen[f"{name}.{attr}"] = (member, member_code)
    return seen


def _tampered(module, before: dict[str, object]) -> list[str]:
    """What the student's code changed in the checks module (empty when nothing)."""
    if sys.modules.get("course_checks") is not module:
        return ["sys.modules['course_checks'] was replaced"]
    after = _snapshot(module)
    changed = []
    for name, (value, code) in before.items():
        now = after.get(name)
        if now is None or now[0] is not value or now[1] is not code or value.__code__ is not code:
            changed.append(name)
    return changed


def _strip_magics(source: str) -> tuple[str, list[str]]:
    """Blank out IPython's ``%`` and ``!`` lines (kept as empty lines so line numbers hold)."""
    kept, dropped = [], []
    for line in source.splitlines():
        if line.lstrip().startswith(("%", "!")):
            dropped.append(line.strip())
            kept.append("")
        else:
            kept.append(line)
    return "\n".join(kept), dropped


def _short_traceback(error: BaseException, limit_chars: int = 3000) -> str:
    """The traceback of a student's error, from the student's frames on."""
    frames = traceback.extract_tb(error.__traceback__)
    student = [frame for frame in frames if frame.filename.startswith("<")]
    lines = traceback.format_list(student[-6:]) if student else []
    lines += traceback.format_exception_only(type(error), error)
    text = "".join(lines)
    return text if len(text) <= limit_chars else "..." + text[-limit_chars:]


def _run_cells(cells: list[dict], namespace: dict, report_path: str) -> list[dict]:
    report = []
    for cell in cells:
        # Written before each cell: if a cell ends the process, the grader knows which.
        _write_json(report_path, report + [{"label": cell["label"], "running": True}])
        entry = {"label": cell["label"], "error": None, "unsupported": []}
        source = cell["source"]
        try:
            code = compile(source, f"<{cell['label']}>", "exec")
        except SyntaxError as error:
            stripped, dropped = _strip_magics(source)
            if not dropped:
                entry["error"] = _short_traceback(error)
                report.append(entry)
                continue
            entry["unsupported"] = dropped
            try:
                code = compile(stripped, f"<{cell['label']}>", "exec")
            except SyntaxError as second:
                entry["error"] = _short_traceback(second)
                report.append(entry)
                continue
        try:
            exec(code, namespace)
        except BaseException as error:  # SystemExit, KeyboardInterrupt too: as in a notebook
            entry["error"] = _short_traceback(error)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        report.append(entry)
    return report


def _run_cases(job_dir: str, setup: dict, namespace: dict, cases, inputs_all) -> None:
    # The checks' functions as the worker bound them, before any student code ran.
    run_student, export_outputs = setup["run_student"], setup["export_outputs"]
    case_from_json, forbidden_error = setup["case_from_json"], setup["forbidden_error"]
    save_file = setup["save_file"]
    for index, spec in enumerate(cases):
        status_path = os.path.join(job_dir, f"case_{index}.json")
        _write_json(status_path, {"state": "started"})
        case = case_from_json(spec)
        prefix = f"{index}/"
        inputs = {k[len(prefix) :]: v for k, v in inputs_all.items() if k.startswith(prefix)}
        status = {"state": "finished", "error": None, "kernel": None, "others": {}}
        start = time.perf_counter()
        if case.target not in namespace:
            status["error"] = f"your notebook does not define `{case.target}`"
            status["error_type"] = "NameError"
            status["missing"] = True
        else:
            try:
                outputs = run_student(case, namespace[case.target], inputs)
                if not isinstance(outputs, dict):
                    raise TypeError(f"run_student returned a {type(outputs).__name__}")
                # Exporting runs torch code the student may have patched: keep the guard
                # armed, so a forbidden kernel cannot slip into the outputs at this point.
                with setup["guard_class"]().watching():
                    tensors, others = export_outputs(outputs)
                    save_file(tensors, os.path.join(job_dir, f"case_{index}.safetensors"))
                status["others"] = others
            except forbidden_error as error:
                status["kernel"] = str(getattr(error, "kernel", "?"))
                status["error"] = str(error)[:1000]
            except BaseException as error:  # the student's error is a result (see compare)
                status["error"] = str(error)[:2000]
                status["error_type"] = type(error).__name__
                status["traceback"] = _short_traceback(error)
        status["seconds"] = time.perf_counter() - start
        _write_json(status_path, status)


def _set_limits(job: dict) -> None:
    def limit(kind: int, value: int) -> None:
        soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(kind, (value, value if kind != resource.RLIMIT_CPU else value + 1))
        except (ValueError, OSError):
            resource.setrlimit(kind, (value, hard))

    limit(resource.RLIMIT_CPU, int(job["cpu_seconds"]))
    limit(resource.RLIMIT_FSIZE, int(job["file_bytes"]))
    limit(resource.RLIMIT_NPROC, int(job["processes"]))
    limit(resource.RLIMIT_CORE, 0)
    base = job.get("base_bytes")
    if not isinstance(base, int):  # measured by the grader from outside; else our own
        with open("/proc/self/statm") as handle:
            base = int(handle.read().split()[0]) * resource.getpagesize()
    limit(resource.RLIMIT_AS, base + int(job["memory_bytes"]))


def _drop_privileges(uid: int | None, gid: int | None) -> None:
    if uid is None or os.getuid() != 0:
        return
    os.setgroups([])
    os.setgid(gid if gid is not None else uid)
    os.setuid(uid)


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the worker closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _send_blob(fd: int, blob: bytes) -> None:
    data = len(blob).to_bytes(8, "big") + blob
    while data:
        data = data[os.write(fd, data) :]


def _receive_blob(fd: int) -> bytes:
    return _read_exactly(fd, int.from_bytes(_read_exactly(fd, 8), "big"))


def _child(job_dir: str, job: dict, fds: dict[str, int], setup: dict) -> None:
    """The forked child (stage A, then B): never returns (``os._exit``).

    Stage A runs the student's cells. It never sees the cases nor their inputs: the
    worker took them out of the job folder before A started. After the cells, A forks
    stage B and exits at once, which ends every thread the cells started; the worker kills
    every other process the cells left, and only then hands the cases and inputs to B,
    which runs them.
    """
    code = 3
    try:
        os.setpgid(0, 0)
        for fd in (fds["control_in"], fds["control_out"], fds["to_child_w"], fds["from_child_r"]):
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
            out = os.open(os.path.join(job_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, fd)
            os.close(out)
        work = os.path.join(job_dir, "work")
        os.makedirs(work, exist_ok=True)
        if setup["unshare_net"]:
            # Outside bubblewrap: no network when the kernel lets us (a root grader can
            # unshare the network alone; otherwise with a user namespace).
            if _libc.unshare(CLONE_NEWNET) != 0:
                _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)
        if setup["drop_uid"] is not None and os.getuid() == 0:
            os.chown(job_dir, setup["drop_uid"], setup["drop_uid"])
            for root, dirs, files in os.walk(job_dir):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), setup["drop_uid"], setup["drop_uid"])
            _drop_privileges(setup["drop_uid"], setup["drop_uid"])
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _set_limits(job)
        # Writing past the file-size limit then fails with an error instead of killing us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(work)
        os.environ["TMPDIR"] = work
        os.environ["HOME"] = work
        os.environ["MPLCONFIGDIR"] = work
        import tempfile

        tempfile.tempdir = work
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)

        checks = setup["checks"]
        load_bytes = setup["load_bytes"]
        before = setup["snapshot"]
        to_child, from_child = fds["to_child_r"], fds["from_child_w"]
        _read_exactly(to_child, 1)  # the worker has taken the cases out of the job folder
        cells = json.loads(open(os.path.join(job_dir, CELLS_FILE), encoding="utf-8").read())
        os.unlink(os.path.join(job_dir, CELLS_FILE))
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        report_path = os.path.join(job_dir, CELL_REPORT_FILE)
        _write_json(report_path, _run_cells(cells, namespace, report_path))
        _write_json(os.path.join(job_dir, TAMPER_FILE), _tampered(checks, before))
        sys.stdout.flush()
        sys.stderr.flush()

        stage_b = os.fork()
        if stage_b:
            os.write(from_child, f"{stage_b}\n".encode())
            os._exit(0)  # ends every thread the cells started
        gc.disable()  # no finaliser of the student's objects runs while the inputs are here
        os.setpgid(0, 0)
        cases = json.loads(_receive_blob(to_child))
        inputs_all = load_bytes(_receive_blob(to_child))
        _run_cases(job_dir, setup, namespace, cases, inputs_all)
        # A graded call may have patched the checks for the next ones: look again.
        tampered = _tampered(checks, before)
        if tampered:
            _write_json(os.path.join(job_dir, TAMPER_FILE), tampered)
        _write_json(os.path.join(job_dir, DONE_FILE), {"done": True})
        code = 0
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    os._exit(code)


def _kill_all_but(keep: set[int], first: int, last: int) -> int:
    """In the sandbox's PID namespace: kill every process except ``keep`` (and init); how
    many there were. There is no /proc to list them. PIDs are handed out in increasing
    order, so what stage A's cells forked lies between A's PID and B's; try every PID
    when the numbering wrapped around."""
    killed = 0
    candidates = range(first, last) if first <= last else range(2, 1 << 22)
    for pid in candidates:
        if pid not in keep:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def _run_job(job: dict, jobs_dir: str, setup: dict, fds: dict[str, int], writer) -> tuple[int, int]:
    """Fork stage A, feed stage B, wait for both: the wait status of the job's end, and how
    many processes the cells had left running (killed before the graded calls)."""
    job_dir = os.path.join(jobs_dir, job["job"])
    # Out of the job folder before any student code runs; held here, where it cannot look.
    cases_blob = open(os.path.join(job_dir, CASES_FILE), "rb").read()
    inputs_blob = open(os.path.join(job_dir, INPUTS_FILE), "rb").read()
    os.unlink(os.path.join(job_dir, CASES_FILE))
    os.unlink(os.path.join(job_dir, INPUTS_FILE))
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    fds = dict(fds, to_child_r=to_child_r, to_child_w=to_child_w)
    fds.update(from_child_r=from_child_r, from_child_w=from_child_w)
    stage_a = os.fork()
    if stage_a == 0:
        _child(job_dir, job, fds, setup)
    os.close(to_child_r)
    os.close(from_child_w)
    writer.write(json.dumps({"job": job["job"], "pid": stage_a}) + "\n")
    writer.flush()
    status, stray = None, 0
    try:
        os.write(to_child_w, b"g")
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(from_child_r, 64)
            if not chunk:
                break
            line += chunk
        _, status = os.waitpid(stage_a, 0)
        if line.strip().isdigit():
            stage_b = int(line)
            writer.write(json.dumps({"job": job["job"], "pid": stage_b}) + "\n")
            writer.flush()
            if setup["pid_namespace"]:
                stray = _kill_all_but({os.getpid(), stage_b}, stage_a + 1, stage_b)
            else:
                try:
                    os.killpg(stage_a, signal.SIGKILL)  # what the cells left in A's group
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                _send_blob(to_child_w, cases_blob)
                _send_blob(to_child_w, inputs_blob)
            except OSError:
                pass
            _, status = os.waitpid(stage_b, 0)
    except (OSError, ChildProcessError):
        pass
    finally:
        os.close(to_child_w)
        os.close(from_child_r)
    return (status if isinstance(status, int) else -1), stray


def _descendants(root_pid: int) -> list[int]:
    """The live processes whose parent chain leads to ``root_pid`` (from /proc)."""
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [root_pid]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.append(pid)
                frontier.append(pid)
    return found


def _sweep(in_pid_namespace: bool) -> None:
    """Kill every process the last job left behind, and reap them (we are their subreaper)."""
    for _ in range(50):
        if in_pid_namespace:
            try:
                os.kill(-1, signal.SIGKILL)  # all but us and the namespace's init (bwrap)
            except ProcessLookupError:
                pass
        for pid in _descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", required=True, help="path of course_checks.py")
    parser.add_argument("--jobs-dir", required=True)
    parser.add_argument("--drop-uid", type=int, default=None)
    parser.add_argument("--unshare-net", action="store_true")
    parser.add_argument("--pid-namespace", action="store_true")
    args = parser.parse_args()

    # Keep the control channel away from fds 0-2, which the children redirect.
    control_in = os.dup(0)
    control_out = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    sys.stdout = sys.stderr
    reader = os.fdopen(control_in, "r", encoding="utf-8")
    writer = os.fdopen(control_out, "w", encoding="utf-8")

    import torch

    torch.set_num_threads(1)
    # What students' notebooks commonly import, once, here: a submission then pays nothing
    # for it, and still has it when (outside bubblewrap) it runs as a user that cannot read
    # the Python install.
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    from safetensors.torch import load as load_bytes
    from safetensors.torch import save_file

    checks = _load_course_checks(args.checks)
    # The guard's first use imports torch's compiler stack (seconds): pay it once, here,
    # rather than in every forked submission.
    checks.warm_up()
    setup = {
        "checks": checks,
        "snapshot": _snapshot(checks),
        "save_file": save_file,
        "load_bytes": load_bytes,
        "run_student": checks.run_student,
        "export_outputs": checks.export_outputs,
        "case_from_json": checks.Case.from_json,
        "forbidden_error": checks.ForbiddenKernelError,
        "guard_class": checks.ForbiddenKernelGuard,
        "pid_namespace": args.pid_namespace,
        "drop_uid": args.drop_uid,
        "unshare_net": args.unshare_net,
    }
    gc.collect()
    gc.freeze()  # fewer copy-on-write page faults in the forked children
    # Children cannot open our /proc entries (our control pipe) when we are not dumpable,
    # and orphans of a job are re-parented to us so that we can sweep them.
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)

    writer.write(json.dumps({"ready": True}) + "\n")
    writer.flush()
    fds = {"control_in": control_in, "control_out": control_out}
    for line in reader:
        job = json.loads(line)
        status, stray = _run_job(job, args.jobs_dir, setup, fds, writer)
        _sweep(args.pid_namespace)
        writer.write(json.dumps({"job": job["job"], "ended": status, "stray": stray}) + "\n")
        writer.flush()


if __name__ == "__main__":
    main()
