"""The untrusted side of the grader: a worker ("zygote") that runs submissions in the sandbox.

This file runs INSIDE the sandbox, as a script (``python -I -B runner.py``), next to copies
of ``course_checks.py`` and ``protocol.py``; it imports nothing from the ``autograder``
package, which the sandbox does not hold. The zygote imports torch and the checks once,
drops to an unprivileged uid, and never runs student code itself. For each job it forks
the submission's process, which:

1. waits until the grader has put it into the job's cgroup (memory, process count);
2. takes a fresh working folder (also its ``/tmp``), sets rlimits, restricts its own
   filesystem access with Landlock (read: the system and the Python install; write: the
   job folder), and installs a seccomp filter that refuses every new process and program
   (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``, ``clone3``, ``execve``,
   ``ptrace``...) and signals to any other process: from then on the submission can start
   threads, never a process. It says which of these protections hold on its status pipe,
   before any student code runs;
3. runs the student's cells (IPython's shell, one namespace) in a thread of their own, the
   cell thread, while its main thread waits for the cases in ``_receive_cases``: it has
   waited there since before the first cell, and runs no student code until they come;
4. when the cell thread has ended, the grader (outside the sandbox) checks from the host
   that the process has one thread left, that no other process exists, that the thread is
   blocked reading the job's cases pipe (made by the grader, inherited at fork: no socket
   carries it and the zygote keeps no copy) and, reading the process's Python stack from
   outside (py-spy), that it is the main thread in ``_receive_cases`` under the runner's own
   frames and no other. Only then does it write the cases and their inputs into the pipe.
   Before that moment no frame, file or memory of the submission held a case (the zygote
   never reads them either), and a cell that says it is done while it still runs, or that
   leaves code of its own on the main thread's stack, is refused the cases;
5. runs each case through ``course_checks.run_student`` and writes the outputs (safetensors)
   and a small JSON status per case.

Everything the submission writes is untrusted: the grader reads it back with safe loaders
and compares in its own process. The messages are in ``protocol.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import gc
import importlib.util
import json
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
import traceback

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000

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
    "IPython.core.interactiveshell",
    "matplotlib_inline.backend_inline",
)

#: Cell magics that start a program (they need a process, which the sandbox refuses).
PROGRAM_MAGICS = frozenset(
    {"bash", "sh", "script", "system", "sx", "perl", "ruby", "python2", "python3", "pypy"}
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _prctl(option: int, value: int) -> bool:
    return _libc.prctl(option, value, 0, 0, 0) == 0


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle)


def _load_module(path: str, name: str):
    """Import a file of the grader's folder as the top-level module ``name``.

    Isolated mode (``-I``) keeps the script's folder off ``sys.path``; registering the module
    by hand lets a student cell's ``from course_checks import check`` work as in Jupyter.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- tampering


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


# --------------------------------------------------------------------------- protections


class _LandlockRuleset(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


class _LandlockPathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446  # x86_64 and arm64
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 2, 1 << 3
#: Access rights by Landlock ABI version (each version adds to the one before).
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP, _NET_ABI = 1, 2, 4  # handled with no rule: no TCP at all


def _landlock(read_paths: list[str], write_paths: list[str]) -> str:
    """Restrict this process (and its threads to come) to reading ``read_paths`` and
    writing ``write_paths``; what was done, for the report ("" when it could not be)."""
    abi = _libc.syscall(_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return ""
    handled = _FS_RIGHTS_BY_ABI[max(v for v in _FS_RIGHTS_BY_ABI if v <= abi)]
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= _NET_ABI else 0
    attr = _LandlockRuleset(handled, net)
    size = ctypes.sizeof(attr) if net else 8  # older kernels know the first field only
    ruleset = _libc.syscall(_LANDLOCK_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        return ""
    read_only = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    try:
        for paths, rights in ((read_paths, read_only), (write_paths, handled)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    is_dir = os.path.isdir(path)
                    # A rule on a file may hold file rights only.
                    allowed = rights if is_dir else rights & ((1 << 2) | (1 << 1) | 1 | (1 << 14))
                    rule = _LandlockPathBeneath(allowed & handled, fd)
                    _libc.syscall(_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH,
                                  ctypes.byref(rule), 0)  # fmt: skip
                finally:
                    os.close(fd)
        if _libc.syscall(_LANDLOCK_RESTRICT, ruleset, 0) != 0:
            return ""
    finally:
        os.close(ruleset)
    return f"Landlock (ABI {abi}{', no TCP' if net else ''})"


def _seccomp(pyseccomp, protocol) -> None:
    """Refuse every new process and program, and signals to other processes (raises when
    the filter cannot be installed: the job then ends before any student code runs)."""
    own = os.getpid()
    refused = pyseccomp.ERRNO(errno.EPERM)
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in protocol.REFUSED_SYSCALLS:
        try:
            rules.add_rule(refused, name)
        except (OSError, ValueError, RuntimeError):
            pass  # a syscall this architecture does not have
    clone_thread = protocol.CLONE_THREAD
    rules.add_rule(refused, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, clone_thread, 0))
    rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    rules.add_rule(refused, "kill", pyseccomp.Arg(0, pyseccomp.NE, own))
    rules.add_rule(refused, "tgkill", pyseccomp.Arg(0, pyseccomp.NE, own))
    rules.add_rule(refused, "pidfd_open", pyseccomp.Arg(0, pyseccomp.NE, own))
    rules.load()


def _process_refused() -> bool:
    """The filter's own test: a fork must fail (and must not leave a child)."""
    try:
        pid = os.fork()
    except OSError:
        return True
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return False


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


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


# --------------------------------------------------------------------------- the cells


def _short_traceback(error: BaseException, limit_chars: int = 3000) -> str:
    """The traceback of a student's error, from the student's frames on."""
    frames = traceback.extract_tb(error.__traceback__)
    student = [frame for frame in frames if frame.filename.startswith("<")]
    lines = traceback.format_list(student[-6:]) if student else []
    lines += traceback.format_exception_only(type(error), error)
    text = "".join(lines)
    return text if len(text) <= limit_chars else "..." + text[-limit_chars:]


def _notebook_shell():
    """An IPython shell that runs cells as Jupyter's kernel does (``display``, magics, ``?``,
    the last expression's value), with what needs a process noted instead of attempted."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.text import SList
    from traitlets.config import Config

    class NotebookShell(InteractiveShell):
        not_run: list[str] = []

        def enable_gui(self, gui=None):  # %matplotlib inline: figures go to the output
            pass

        def system(self, cmd):
            self.not_run.append(f"!{cmd}")

        def getoutput(self, cmd, split=True, depth=0):
            self.not_run.append(f"!{cmd}")
            return SList([])

        def run_cell_magic(self, magic_name, line, cell):
            if magic_name in PROGRAM_MAGICS:
                self.not_run.append(f"%%{magic_name} {line}".strip())
                return None
            return super().run_cell_magic(magic_name, line, cell)

    config = Config()
    config.HistoryManager.enabled = False  # its thread and its SQLite file
    config.InteractiveShell.colors = "NoColor"
    config.InteractiveShell.autocall = 0
    return NotebookShell(config=config)


def _run_cells(cells: list[dict], shell, report_path: str) -> list[dict]:
    report = []
    for cell in cells:
        # Written before each cell: if a cell ends the process, the grader knows which.
        _write_json(report_path, report + [{"label": cell["label"], "running": True}])
        label = cell["label"]
        shell.compile.get_code_name = lambda raw, code, number, label=label: f"<{label}>"
        shell.not_run = []
        try:
            result = shell.run_cell(cell["source"], store_history=False)
            error = result.error_before_exec or result.error_in_exec
        except BaseException as raised:  # IPython catches nearly all; never lose the report
            error = raised
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        entry = {"label": label, "error": _short_traceback(error) if error else None}
        entry["unsupported"] = list(shell.not_run)[:20]
        report.append(entry)
    return report


# --------------------------------------------------------------------------- the cases


def _run_case(index: int, spec: dict, inputs_all: dict, namespace: dict, setup: dict):
    """One graded call: its status line, and its outputs (returned, saved per test)."""
    log = setup["cases_log"]
    log.write(json.dumps({"case": index, "state": "started"}) + "\n")
    log.flush()  # the grader then knows which case was running if the process dies
    case = setup["case_from_json"](spec)
    prefix = f"{index}/"
    inputs = {k[len(prefix) :]: v for k, v in inputs_all.items() if k.startswith(prefix)}
    status = {"case": index, "state": "finished", "error": None, "kernel": None, "others": {}}
    tensors = {}
    start = time.perf_counter()
    if case.target not in namespace:
        status.update(error=f"your notebook does not define `{case.target}`")
        status.update(error_type="NameError", missing=True)
    else:
        try:
            outputs = setup["run_student"](case, namespace[case.target], inputs)
            if type(outputs) is not dict:
                raise TypeError(f"run_student returned a {type(outputs).__name__}")
            # Exporting may run torch code the student patched: the stage guard's
            # process-wide layer is armed here too, and a forbidden kernel reached
            # outside a graded call grades no case at all.
            tensors, status["others"] = setup["export_outputs"](outputs)
        except setup["forbidden_error"] as error:
            status["kernel"] = str(getattr(error, "kernel", "?"))
            status["error"] = str(error)[:1000]
        except BaseException as error:  # the student's error is a result (see compare)
            status["error"] = str(error)[:2000]
            status["error_type"] = type(error).__name__
            status["traceback"] = _short_traceback(error)
    status["seconds"] = time.perf_counter() - start
    return status, {f"{prefix}{key}": value for key, value in tensors.items()}


def _run_cases(cases: list, inputs_all: dict, namespace: dict, setup: dict) -> None:
    """Every case, in order; a test's outputs are saved when its last case ends (a file per
    test rather than per case: creating files is most of the cost of a fast answer)."""
    protocol, job_dir = setup["protocol"], setup["job_dir"]
    with open(os.path.join(job_dir, protocol.CASES_LOG), "a", encoding="utf-8") as log:
        setup["cases_log"] = log
        tensors, statuses, group = {}, [], 0
        for index, spec in enumerate(cases):
            status, outputs = _run_case(index, spec, inputs_all, namespace, setup)
            tensors.update(outputs)
            statuses.append(status)
            following = cases[index + 1]["grade_id"] if index + 1 < len(cases) else None
            if following != spec["grade_id"]:  # the test's last case
                if tensors:
                    path = os.path.join(job_dir, protocol.outputs_file(group))
                    setup["save_file"](tensors, path)
                    group += 1
                # A case counts as finished only once its outputs are on disk.
                log.write("".join(json.dumps(status) + "\n" for status in statuses))
                log.flush()
                tensors, statuses = {}, []


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


#: Taken when this file is imported, before any student code runs: the main thread's wait
#: for the cases calls nothing that a cell could have replaced since (a module attribute,
#: a builtin).
_READ = os.read


def _receive_cases(cases_fd: int, read=_READ) -> bytes:
    """The first bytes the grader writes into the cases' pipe (``b""``: it wrote none).

    The grader reads this thread's stack from outside while it waits here: the frames must
    be exactly ``<module> > main > _run_job > _child > _receive_cases`` at the lines that
    ``sandbox.expected_wait_stack`` finds in this file, so keep each of those calls on one
    line."""
    return read(cases_fd, 1 << 20)  # the wait the grader checks


def _decode_cases(cases_fd: int, first: bytes, load_bytes) -> tuple[list, dict]:
    """The cases and inputs written by the grader into the pipe ``cases_fd``."""
    if not first:
        raise EOFError("no cases were sent")
    blob = first + _read_all(cases_fd)
    os.close(cases_fd)
    size = int.from_bytes(blob[:8], "big")
    return json.loads(blob[8 : 8 + size]), load_bytes(blob[8 + size :])


def _wait_for_cell_threads(seconds: float = 2.0) -> None:
    """Give the threads the cells started a moment to end, as Python would at exit (the
    main thread, waiting for the cases, and the cell thread itself stay)."""
    deadline = time.monotonic() + seconds
    while threading.active_count() > 2 and time.monotonic() < deadline:
        time.sleep(0.02)


# --------------------------------------------------------------------------- a job


def _enter_job_folder(job_dir: str, protocol) -> str:
    os.setpgid(0, 0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, name in ((1, protocol.STDOUT_FILE), (2, protocol.STDERR_FILE)):
        out = os.open(os.path.join(job_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    work = os.path.join(job_dir, protocol.WORK_FOLDER)
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    for name in ("TMPDIR", "HOME", "MPLCONFIGDIR"):
        os.environ[name] = work
    import tempfile

    tempfile.tempdir = work
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    return work


def _protect(job: dict, job_dir: str, setup: dict) -> list[str]:
    """Install the submission's protections (before any student code); what holds."""
    held = list(setup["worker_protections"])
    if os.getuid() != 0:
        held.append(f"uid {os.getuid()}")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _set_limits(job)
    # Its own /proc entry only: never another process's (the grader's memory, outside bwrap).
    readable = setup["read_paths"] + [f"/proc/{os.getpid()}"]
    landlock = _landlock(readable, [job_dir, os.devnull])
    if landlock:
        held.append(f"{landlock}: reads the system and Python only, writes its job folder only")
    elif setup["require_landlock"]:
        raise RuntimeError("Landlock is required here (--sandbox landlock) and could not be set")
    _seccomp(setup["pyseccomp"], setup["protocol"])
    if not _process_refused():
        raise RuntimeError("the seccomp filter let a fork through")
    held.append("seccomp: no process, no program, no signal to another process")
    return held


def _child(job_dir: str, job: dict, pipes: dict[str, int], setup: dict) -> None:
    """The submission's process: never returns (``os._exit``)."""
    protocol = setup["protocol"]
    code = 3
    try:
        _enter_job_folder(job_dir, protocol)
        if not os.read(pipes["go"], 1):  # the grader placed us in the job's cgroup
            os._exit(code)
        os.close(pipes["go"])
        status = pipes["status"]
        try:
            held = _protect(job, job_dir, setup)
        except BaseException:
            traceback.print_exc()
            os._exit(protocol.EXIT_NO_PROTECTION)
        os.write(status, (protocol.PROTECTIONS_PREFIX + json.dumps(held) + "\n").encode())
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error past the file-size limit
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

        cells_path = os.path.join(job_dir, protocol.CELLS_FILE)
        with open(cells_path, encoding="utf-8") as handle:
            cells = json.load(handle)
        shell = _notebook_shell()
        namespace = shell.user_ns
        checks, before = setup["checks"], setup["snapshot"]
        # Everything the main thread uses from the wait to the guard, bound now, as locals of
        # this frame: the cells (in their thread) can rebind this module's globals, the
        # setup dict or ``gc`` (a hostile reviewer's attack: ``gc.disable`` read the cases
        # before the guard was armed), never a running frame's locals.
        cases_fd, disable_gc, decode = pipes["cases"], gc.disable, _decode_cases
        stage_guard, forbidden, load_bytes = (
            setup["stage_guard"],
            setup["forbidden_error"],
            setup["load_bytes"],
        )
        cell_thread = threading.Thread(
            target=_cell_stage, args=(cells, shell, job_dir, status, setup), name="cells"
        )
        cell_thread.start()
        first = _receive_cases(cases_fd)  # waits here through the whole cell stage
        disable_gc()  # no finaliser of the student's objects runs while the inputs are here
        outside = []
        try:
            with stage_guard():
                cases, inputs_all = decode(cases_fd, first, load_bytes)
                _run_cases(cases, inputs_all, namespace, setup)
        except forbidden as error:  # reached between graded calls, or disarmed
            outside = [f"the kernel guard, between graded calls: {error}"]
        tampered = _tampered(checks, before) + outside  # a graded call may have patched them
        if tampered:
            _write_json(os.path.join(job_dir, protocol.TAMPER_FILE), tampered)
        code = 0
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    os._exit(code)


def _cell_stage(cells: list[dict], shell, job_dir: str, status: int, setup: dict) -> None:
    """The cell thread: every cell, the cell report, then ``cells-done`` (a hint: the grader
    trusts only what it sees from the host once this thread has ended)."""
    protocol = setup["protocol"]
    try:
        report_path = os.path.join(job_dir, protocol.CELL_REPORT_FILE)
        _write_json(report_path, _run_cells(cells, shell, report_path))
        checks, before = setup["checks"], setup["snapshot"]
        _write_json(os.path.join(job_dir, protocol.TAMPER_FILE), _tampered(checks, before))
        _wait_for_cell_threads()
    finally:
        os.write(status, (protocol.CELLS_DONE + "\n").encode())


class _Control:
    """The zygote's control channel: JSON lines in and out, file descriptors beside them
    (the grader hands each job its cases' pipe there, with the job)."""

    def __init__(self, reader, writer, fd_socket: socket.socket):
        self.reader, self.writer, self.fd_socket = reader, writer, fd_socket

    def say(self, **message) -> None:
        self.writer.write(json.dumps(message) + "\n")
        self.writer.flush()

    def hear(self) -> dict:
        # Unbuffered, a byte at a time: what select() sees is all there is to read.
        line = self.reader.readline(1 << 20)
        if not line:
            raise EOFError("the grader closed the control channel")
        return json.loads(line)


def _lines(fd: int, buffer: bytearray) -> list[str]:
    """The complete lines now readable on ``fd`` (empty list: nothing yet; None: EOF)."""
    chunk = os.read(fd, 65536)
    if not chunk:
        return None
    buffer += chunk[:65536]
    lines = []
    while b"\n" in buffer and len(lines) < 100:
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        lines.append(line.decode("utf-8", errors="replace")[:2000])
    del buffer[1 << 16 :]  # a submission cannot make the zygote hold more than this
    return lines


def _keep_only(kept: set[int]) -> None:
    """Close every file descriptor but ``kept`` (and 0-2): nothing of the zygote's, nor of
    an earlier job's, reaches the submission. (By ranges: the sandbox has no /proc.)"""
    start = 3
    for fd in sorted(kept) + [resource.getrlimit(resource.RLIMIT_NOFILE)[0]]:
        if fd > start:
            os.closerange(start, fd)
        start = max(start, fd + 1)


def _run_job(job: dict, cases_fd: int, control: _Control, setup: dict) -> int:
    """Fork the submission's process and see it through the stages; its wait status.
    ``cases_fd`` is the read end of the cases' pipe, made by the grader for this job: the
    submission inherits it, and the grader writes into it once the cells are over. It is
    never read here, and never passed on a socket (a per-user count of descriptors in
    flight that a submission can exhaust would refuse it)."""
    name = job["job"]
    job_dir = os.path.join(setup["jobs_dir"], "job")
    go_r, go_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            _keep_only({go_r, status_w, cases_fd})
            pipes = {"go": go_r, "status": status_w, "cases": cases_fd}
            _child(job_dir, job, pipes, dict(setup, job_dir=job_dir))
    finally:  # the zygote keeps none of the job's: the cases' pipe above all
        for fd in (go_r, status_w, cases_fd):
            os.close(fd)
    control.say(job=name, forked=pid)
    try:
        started = control.hear()
        if started.get("start"):
            os.write(go_w, b"g")
            _follow(name, pid, status_r, control, setup)
    except (OSError, EOFError, ValueError):
        pass
    finally:
        os.close(go_w)
        os.close(status_r)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return status


def _follow(name: str, pid: int, status_r: int, control, setup) -> None:
    """Relay the submission's stages to the grader until its process ends (its status pipe
    closes), or the grader says to stop it."""
    protocol = setup["protocol"]
    buffer = bytearray()
    first = True
    while True:
        ready, _, _ = select.select([status_r, control.reader], [], [])
        if control.reader in ready:
            message = control.hear()
            if message.get("abort"):
                os.kill(pid, signal.SIGKILL)
                return
        if status_r in ready:
            lines = _lines(status_r, buffer)
            if lines is None:
                return
            for line in lines:
                if first and line.startswith(protocol.PROTECTIONS_PREFIX):
                    held = json.loads(line[len(protocol.PROTECTIONS_PREFIX) :])
                    control.say(job=name, protections=held)
                elif line == protocol.CELLS_DONE:
                    control.say(job=name, cells_done=True)
                first = False


def _sweep(in_pid_namespace: bool) -> None:
    """Kill every process the last job could have left, and reap them (we are their
    subreaper). The seccomp filter lets a submission start none; this is the belt."""
    for _ in range(50):
        if in_pid_namespace:  # everything in the sandbox but us and its init
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(-1, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        time.sleep(0.01)


def _import_pyseccomp():
    """pyseccomp finds libseccomp with ``ctypes.util.find_library``, which runs ``ldconfig``
    and fails in the sandbox: name the library, which the dynamic loader finds itself."""
    import ctypes.util

    find = ctypes.util.find_library
    ctypes.util.find_library = lambda name: "libseccomp.so.2" if name == "seccomp" else find(name)
    try:
        import pyseccomp
    finally:
        ctypes.util.find_library = find
    return pyseccomp


def _setup(args, checks, protocol) -> dict:
    pyseccomp = _import_pyseccomp()
    from safetensors.torch import load as load_bytes
    from safetensors.torch import save_file

    return {
        "checks": checks,
        "protocol": protocol,
        "pyseccomp": pyseccomp,
        "snapshot": _snapshot(checks),
        "save_file": save_file,
        "load_bytes": load_bytes,
        "run_student": checks.run_student,
        "export_outputs": checks.export_outputs,
        "case_from_json": checks.Case.from_json,
        "forbidden_error": checks.ForbiddenKernelError,
        "guard_class": checks.ForbiddenKernelGuard,
        "stage_guard": checks.stage_guard,  # no guard, no grading: never a silent fallback
        "jobs_dir": args.jobs_dir,
        "read_paths": args.read_path,
        "require_landlock": args.require_landlock,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grader-dir", required=True, help="runner.py's folder")
    parser.add_argument("--jobs-dir", required=True)
    parser.add_argument("--fd-socket", type=int, required=True)
    parser.add_argument("--drop-uid", type=int, default=None)
    parser.add_argument("--unshare-net", action="store_true")
    parser.add_argument("--pid-namespace", action="store_true")
    parser.add_argument("--read-path", action="append", default=[])
    parser.add_argument("--require-landlock", action="store_true")
    args = parser.parse_args()
    worker_protections = []
    if args.unshare_net and _libc.unshare(CLONE_NEWNET) == 0:  # outside bubblewrap, as root
        worker_protections.append("no network (own network namespace)")
    if args.drop_uid is not None and os.getuid() == 0:
        _drop_privileges(args.drop_uid)  # before anything is read, for good

    # Keep the control channel away from fds 0-2, which the children redirect.
    control_in, control_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    sys.stdout = sys.stderr
    fd_socket = socket.socket(fileno=args.fd_socket)
    control = _Control(
        os.fdopen(control_in, "rb", buffering=0),
        os.fdopen(control_out, "w", encoding="utf-8"),
        fd_socket,
    )

    import torch

    torch.set_num_threads(1)
    # What students' notebooks commonly import, once, here: a submission then pays nothing
    # for it, and still has it after Landlock hides everything else.
    for module_name in PRELOAD:
        try:
            importlib.import_module(module_name)
        except Exception:
            pass
    protocol = _load_module(os.path.join(args.grader_dir, "protocol.py"), "_grader_protocol")
    checks = _load_module(os.path.join(args.grader_dir, "course_checks.py"), "course_checks")
    # The guard's first use imports torch's compiler stack (seconds): pay it once, here,
    # rather than in every forked submission.
    checks.warm_up()
    setup = _setup(args, checks, protocol)
    setup.update(control_in=control_in, control_out=control_out)
    setup["worker_protections"] = worker_protections
    gc.collect()
    gc.freeze()  # fewer copy-on-write page faults in the forked children
    # Children cannot open our /proc entries when we are not dumpable, and orphans of a
    # job are re-parented to us so that we can sweep them.
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)

    control.say(ready=True, pid=os.getpid(), threads=threading.active_count())
    while True:
        try:
            job = control.hear()
        except EOFError:
            return
        if "job" not in job:
            continue
        _, fds, _, _ = socket.recv_fds(control.fd_socket, 16, 4)
        try:
            if len(fds) != 1:
                control.say(job=job["job"], ended=None)
                continue
            status = _run_job(job, fds[0], control, setup)
        finally:
            for fd in fds[1:]:  # one was sent; the job closed its own
                with contextlib.suppress(OSError):
                    os.close(fd)
        _sweep(args.pid_namespace)
        control.say(job=job["job"], ended=status)


if __name__ == "__main__":
    main()
