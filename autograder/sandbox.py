"""The sandbox, seen from the trusted side: long-lived workers (``runner.py`` zygotes).

The trusted grader owns one ``Worker`` per job slot. A worker is a ``python -I`` process
that imported torch once and forks a process per submission (see ``runner.py``). With
bubblewrap it sees a read-only filesystem holding only the system, the Python install and
the grader's folder (``runner.py``, ``protocol.py``, ``course_checks.py``); one folder for
the current job, made anew for every job (also its ``/tmp``; ``/dev/shm`` is read-only);
no network, no ``/proc``; its own PID namespace. It runs as a real unprivileged uid
(``nobody``): when the grader is root, bubblewrap starts it as root without a user
namespace and it drops to ``nobody`` before reading anything, so no file of the host is
its own.

For every job the grader puts the submission's process into a cgroup of its own (memory and
task limits for the whole submission), watches the stages from the host's ``/proc`` and
sends the cases only when the cells' threads are gone (``protocol.py``). The wall-clock
timeout kills the whole sandbox; a dead worker is restarted for the next job.

Without bubblewrap nothing is graded, unless ``--sandbox none`` says the class is trusted:
then the same worker runs without bubblewrap's filesystem view (Landlock still narrows it
where the kernel has it), and every result says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder import cgroups, kernel_watch, protocol

RUNNER = Path(__file__).with_name("runner.py")
PROTOCOL = Path(__file__).with_name("protocol.py")
NOBODY = 65534
SANDBOX_HOME = "/grader"
SANDBOX_JOBS = "/jobs"
JOB_FOLDER = "job"  # the one job folder of a slot, made anew for each job
MAX_CASES_BYTES = 1 << 30
#: How long the cell thread may take to end after it says "cells-done" (it ends at once).
CELL_THREAD_GRACE = 2.0


class SandboxUnavailable(RuntimeError):
    """The sandbox the grader was asked for cannot be had here (the message says why)."""


@dataclass(frozen=True)
class Limits:
    """Per-submission limits (the defaults let a plain-loop answer finish comfortably)."""

    timeout: float = 120.0  # wall clock, whole submission
    memory_bytes: int = 4 << 30  # the whole submission (cgroup), and each process's growth
    file_bytes: int = 64 << 20  # largest file the submission may write
    processes: int = 64  # tasks (threads) in the cgroup; RLIMIT_NPROC is per uid, wider

    def for_job(self) -> dict:
        return {
            "cpu_seconds": int(self.timeout) + 5,
            "memory_bytes": self.memory_bytes,
            "file_bytes": self.file_bytes,
            "processes": self.processes * 4,
        }


@dataclass
class JobOutcome:
    """How a job ended, as the trusted side saw it (never what the submission claims)."""

    finished: bool  # the submission's process ended (normally or not) before the timeout
    timed_out: bool
    wait_status: int | None
    seconds: float
    worker_error: str | None = None  # the grader's fault: grade again on a fresh worker
    protections: list[str] = field(default_factory=list)  # what held while student code ran
    refused: str | None = None  # why the cases were not sent (the cells left threads...)
    memory_exceeded: bool = False
    unprotected: bool = False  # the process ended before its protections were in place
    kernel_hits: list[str] = field(default_factory=list)  # seen from outside the sandbox
    said_twice: bool = False  # "cells-done" came twice: a cell may have played the runner
    cases_delivered: bool = False  # the cases went into the job's pipe: its files count


def _sandbox_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


def _python_paths() -> list[str]:
    """The folders the interpreter needs: the base install and the virtual environment."""
    paths = []
    for path in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))):
        real = os.path.realpath(path)
        if real.startswith(("/usr/", "/bin", "/lib")) or real == "/usr":
            continue
        if not any(real == p or real.startswith(p + "/") for p in paths):
            paths.append(real)
    return paths


def bwrap_command(grader_dir: str, jobs_dir: str) -> list[str]:
    """The bubblewrap command line that starts a worker (read-only binds of the essentials).

    As root: no user namespace (whose only uid would map to root outside), capabilities
    dropped but the two the worker needs to drop to ``nobody`` at once. Otherwise: a user
    namespace, whose uid is the grader's own (nothing of the host is bound writable)."""
    command = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session"]
    command += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    command += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
    if os.geteuid() == 0:
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        command += ["--unshare-user"]
    command += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    for etc in (
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/localtime",
        "/etc/alternatives",
        "/etc/passwd",
        "/etc/group",
        "/etc/fonts",
        "/sys/devices/system/cpu",
    ):
        command += ["--ro-bind-try", etc, etc]
    # No /proc: a submission then sees no process. torch only misses /proc/cpuinfo (bound
    # alone, read-only) for its CPU detection.
    command += ["--dev", "/dev", "--dir", "/proc"]
    command += ["--ro-bind-try", "/proc/cpuinfo", "/proc/cpuinfo"]
    if python_under_tmp():
        # /tmp must then hold the Python install: a tmpfs of the worker's, which Landlock
        # (then required) keeps a submission from writing.
        command += ["--perms", "1777", "--tmpfs", "/tmp"]
    made: set[str] = {"/tmp"} if python_under_tmp() else set()
    for path in _python_paths():
        # Folders bubblewrap makes for a bind are root's 0700 otherwise: nobody could not
        # pass them (/root/.pyenv, /work/...).
        for parent in reversed(Path(path).parents[:-1]):
            if str(parent) not in made:
                made.add(str(parent))
                command += ["--perms", "0755", "--dir", str(parent)]
        command += ["--ro-bind", path, path]
    command += ["--ro-bind", grader_dir, SANDBOX_HOME, "--bind", jobs_dir, SANDBOX_JOBS]
    # /tmp is the current job's working folder (new for every job); /dev/shm is read-only.
    work = f"{SANDBOX_JOBS}/{JOB_FOLDER}/{protocol.WORK_FOLDER}"
    if not python_under_tmp():
        command += ["--symlink", work, "/tmp"]
    command += ["--tmpfs", "/dev/shm", "--remount-ro", "/dev/shm"]
    command += ["--chdir", SANDBOX_JOBS, "--"]
    return command


def python_under_tmp() -> bool:
    """Whether the Python install or the venv lies under /tmp (a CI clone there)."""
    return any(path == "/tmp" or path.startswith("/tmp/") for path in _python_paths())


def _runner_args(home: str, jobs: str, fd: int) -> list[str]:
    return [
        sys.executable,
        "-I",
        "-B",
        f"{home}/runner.py",
        "--grader-dir",
        home,
        "--jobs-dir",
        jobs,
        "--fd-socket",
        str(fd),
    ]


_probe_cache: dict[str, tuple[bool, str]] = {}

_PROBE = """
import os, sys
sys.path[:0] = [sys.argv[1]]
import protocol, runner
pyseccomp = runner._import_pyseccomp()
if sys.argv[2] == "landlock":
    outside = os.path.join(sys.argv[3], "outside")
    open(outside, "w").write("x")
    runner._landlock([sys.base_prefix, sys.prefix, sys.argv[1]], [os.devnull])
    try:
        open(outside).read()
        sys.exit("Landlock did not hide a file")
    except PermissionError:
        pass
runner._seccomp(pyseccomp, protocol)
sys.exit(0 if runner._process_refused() else 3)
"""


def _probe(mode: str) -> tuple[bool, str]:
    """Whether a worker can start here in ``mode`` and refuse a fork (and why not)."""
    if mode in _probe_cache:
        return _probe_cache[mode]
    if mode == "bwrap" and shutil.which("bwrap") is None:
        _probe_cache[mode] = (False, "bubblewrap (bwrap) is not installed (not on PATH)")
        return _probe_cache[mode]
    with tempfile.TemporaryDirectory(prefix="autograder-probe-") as scratch:
        os.chmod(scratch, 0o755)
        for source in (RUNNER, PROTOCOL):
            shutil.copy(source, scratch)
        home = SANDBOX_HOME if mode == "bwrap" else scratch
        tail = [sys.executable, "-I", "-c", _PROBE, home, mode, tempfile.gettempdir()]
        command = bwrap_command(scratch, scratch) + tail if mode == "bwrap" else tail
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=120, env=_sandbox_env()
            )
            ok = done.returncode == 0
            reason = "" if ok else (done.stderr.strip()[-400:] or f"exit status {done.returncode}")
        except (OSError, subprocess.TimeoutExpired) as error:
            ok, reason = False, str(error)
    if not ok:
        reason = (
            f"the {'bubblewrap ' if mode == 'bwrap' else ''}sandbox with seccomp failed: {reason}"
        )
    _probe_cache[mode] = (ok, reason)
    return ok, reason


def probe_bwrap() -> tuple[bool, str]:
    return _probe("bwrap")


def _readable_by_nobody(path: str) -> bool:
    """Whether every folder up to ``path`` lets others in (so ``nobody`` can import from it)."""
    current = os.path.realpath(path)
    while True:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if not mode & 0o001:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; the Quick start's first "
    "line does it), or pass --sandbox none to grade a trusted class without a sandbox"
)


def choose_sandbox(requested: str) -> tuple[str, str]:
    """Resolve ``--sandbox bwrap|none`` (``auto`` is ``bwrap``): fail closed, never fall back."""
    if requested == "none":
        ok, reason = _probe("none")
        if not ok:
            raise SandboxUnavailable(f"--sandbox none: {reason}")
        return "none", "--sandbox none: no sandbox, for a trusted class"
    if requested == "landlock":
        if os.geteuid() == 0 and fallback_drop_uid() is None:
            raise SandboxUnavailable(
                "--sandbox landlock, so nothing was graded: the grader is root and nobody "
                "cannot read the Python install, so a submission would run as root"
            )
        ok, reason = _probe("landlock")
        if not ok:
            raise SandboxUnavailable(f"--sandbox landlock, so nothing was graded: {reason}")
        return "landlock", ""
    ok, reason = probe_bwrap()
    if not ok:
        raise SandboxUnavailable(f"no sandbox, so nothing was graded: {reason}; {INSTALL_HINT}")
    return "bwrap", ""


def describe_sandbox(mode: str, note: str = "") -> str:
    """The worker's isolation, for results.json and the summary (each job adds its own)."""
    if mode == "bwrap":
        who = f"as uid {NOBODY}" if os.geteuid() == 0 else f"as the grader's uid {os.geteuid()}"
        return (
            "bubblewrap: read-only view of /usr and the Python install only (no course "
            "repository, no hidden cases, no solutions, no output folder, no other "
            "submission, no /proc), a new job folder and /tmp for every submission, no "
            f"network, own PID namespace, {who}, no capabilities; "
            "wall-clock timeout kills the sandbox"
        )
    who = fallback_drop_uid()
    who = f"as uid {who}" if who is not None else f"as the grader's uid {os.geteuid()}"
    if mode == "landlock":
        return (
            "Landlock without bubblewrap (--sandbox landlock, where namespaces are refused): "
            "the submission reads only the system, Python and the grader's folder, writes "
            f"only its job folder, no TCP, {who}, seccomp as with bubblewrap; it shares the "
            "host's PID and network namespaces"
        )
    text = (
        "NO SANDBOX (--sandbox none, for a trusted class): the filesystem is not hidden "
        f"but where Landlock narrows it, {who}, own process group; "
        "wall-clock timeout kills the process group"
    )
    return f"{text} ({note})" if note else text


def fallback_drop_uid() -> int | None:
    """The uid the workers without bubblewrap drop to: ``nobody`` when the grader runs as root
    and ``nobody`` can read the Python install. Otherwise none: torch imports modules lazily
    (``cProfile``...), and a correct answer must not fail for a permission."""
    if os.geteuid() != 0 or not _install_readable_by_nobody():
        return None
    return NOBODY


def _install_readable_by_nobody() -> bool:
    needed = [sys.base_prefix, sys.prefix, os.path.realpath(sys.executable)]
    return all(_readable_by_nobody(path) for path in needed)


def _read_paths(grader_dir: str) -> list[str]:
    """What a submission may read under Landlock: the system, Python, the grader's folder."""
    system = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/dev", "/proc/cpuinfo"]
    system += ["/sys/devices/system/cpu"]
    return [p for p in system if os.path.exists(p)] + _python_paths() + [grader_dir]


# --------------------------------------------------------------------------- the host's view


def _parent_and_nspid(pid: int) -> tuple[int, int] | None:
    """A host process's parent and its PID in its innermost PID namespace."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        return int(fields["PPid"]), int(fields["NSpid"].split()[-1])
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _host_descendants(root: int) -> list[int]:
    """The processes below ``root`` (breadth first), from the host's /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    ppid = int(handle.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, frontier = [], [root]
    while frontier:
        children = parents.get(frontier.pop(0), [])
        found += children
        frontier += children
    return found


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


#: ``read`` by architecture: the syscall the main thread waits in for the cases.
READ_SYSCALL = {"x86_64": 0, "aarch64": 63}.get(os.uname().machine)
#: The runner's frames while its main thread waits for the cases, outermost first: each
#: (function, the call it is in), found in runner.py's source by ``expected_wait_stack``.
WAIT_CHAIN = (
    ("<module>", "main"),
    ("main", "_run_job"),
    ("_run_job", "_child"),
    ("_child", "_receive_cases"),
    ("_receive_cases", "read"),
)


class StackUnreadable(RuntimeError):
    """The grader cannot read a sandboxed process's Python stack from outside."""


def stack_reader() -> str | None:
    """py-spy (it reads a process's Python frames from outside, as a debugger would)."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def expected_wait_stack(runner_path: str, source: str) -> list[tuple[str, str, int]]:
    """(function, file, line) of every frame of the runner's main thread while it waits for
    the cases, innermost first, from runner.py's source (``runner_path`` as the sandbox
    names it). Each call of ``WAIT_CHAIN`` must appear once in its function."""
    import ast

    tree = ast.parse(source)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    frames = []
    for caller, callee in WAIT_CHAIN:
        if caller == "<module>":  # the module's own statements, not its functions'
            scope = [node for node in tree.body if not isinstance(node, ast.FunctionDef)]
        else:
            scope = [functions[caller]]
        lines = {
            node.lineno
            for statement in scope
            for node in ast.walk(statement)
            if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == callee
        }
        if len(lines) != 1:
            raise ValueError(f"runner.py: {caller} must call {callee} exactly once")
        frames.append((caller, runner_path, lines.pop()))
    return frames[::-1]


def python_stacks(pid: int, timeout: float = 20.0) -> list[dict]:
    """Every thread of ``pid`` with its Python frames, read from outside (py-spy pauses the
    process for the few milliseconds it takes). Raises ``StackUnreadable``."""
    reader = stack_reader()
    if reader is None:
        raise StackUnreadable("py-spy is not installed (it is in requirements.txt)")
    command = [reader, "dump", "--pid", str(pid), "--json", "--full-filenames"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        threads = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError) as error:
        raise StackUnreadable(f"py-spy: {error}") from error
    if not isinstance(threads, list):
        raise StackUnreadable(f"py-spy: {done.stderr.strip()[-300:] or done.returncode}")
    return threads


def waiting_on_pipe(pid: int, pipe_inode: int) -> bool:
    """Whether ``pid``'s main thread is blocked now in ``read`` on the pipe ``pipe_inode``
    (the host's /proc: the syscall, its first argument, and what that descriptor is)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/syscall") as handle:
            fields = handle.read().split()
        if not fields or not fields[0].isdigit() or int(fields[0]) != READ_SYSCALL:
            return False
        target = os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}")
    except (OSError, IndexError, ValueError):
        return False
    return target == f"pipe:[{pipe_inode}]"


def wait_stack_problem(pid: int, expected: list[tuple[str, str, int]]) -> str | None:
    """Why ``pid`` is not the runner's main thread waiting for the cases (None: it is)."""
    threads = python_stacks(pid)
    # One OS thread was counted in the host's /proc (py-spy names it by its TID inside the
    # sandbox's PID namespace): that one Python thread is all there may be.
    if len(threads) != 1:
        return f"{len(threads)} Python threads were found where only the main thread may be"
    seen = [
        (frame.get("name"), frame.get("filename"), frame.get("line"))
        for frame in threads[0].get("frames", [])
    ]
    if seen != expected:
        foreign = [
            f"{name} ({file}:{line})"
            for name, file, line in seen
            if (name, file, line) not in expected
        ]
        return (
            "the main thread was not the runner's own wait for the cases: code of the "
            f"submission was on its stack ({'; '.join(foreign[:3]) or 'frames out of order'})"
        )
    return None


#: The families of forbidden kernels a graded call must never reach natively. Not
#: "convolution backward": autograd runs it for an honest F.conv1d when the grader takes
#: gradients (the in-process guard tells the two apart); not "interpolation (area)",
#: which is adaptive average pooling, allowed.
WATCHED_FAMILIES = frozenset({"transposed convolution", "upsampling", "grid sampling"})
#: Of those, the functions every route runs through: the CPU kernels behind the dispatch
#: stubs (every upsampling mode, forward and backward), the quantized ones, and the
#: transposed convolutions' and grid samplers' native entries. Each probe costs a kernel
#: synchronisation to remove (~50 ms here), so the grader watches these choke points only.
CHOKE_POINT = re.compile(
    r"_kernel_impl|quantized|qupsample|slow_conv_transpose\w*(?:template|impl|_cpu)"
    r"|mkldnn_convolution_transpose|grid_sampler_[23]d_cpu$|_grid_sampler_2d_cpu_"
    r"|grid_sampler_[23]d_backward_cpu$|affine_grid_generator$|conv_transpose[123]d_symint"
)


def _watched(function: kernel_watch.WatchedFunction) -> bool:
    return function.family in WATCHED_FAMILIES and bool(CHOKE_POINT.search(function.name))


class SharedKernelWatch:
    """One uprobe watch for the whole batch, shared by the workers (its reads are locked)."""

    def __init__(self, watch: kernel_watch.KernelWatch):
        self.watch = watch
        self.lock = threading.Lock()
        self.family = {f.name: f.family for f in watch.functions}
        watched = len(watch.functions)
        self.description = (
            f"kernel watch: uprobes on {watched} native forbidden kernels of libtorch, set "
            "from outside the sandbox"
        )

    @classmethod
    def start(cls) -> tuple[SharedKernelWatch | None, str]:
        """The watch, or None and why there is none on this machine."""
        ok, why = kernel_watch.probe()
        if not ok:
            return None, f"no kernel watch from outside the sandbox ({why})"
        watch = kernel_watch.KernelWatch(select=_watched)
        try:
            watch.start()
        except (kernel_watch.KernelWatchError, OSError) as error:
            watch.close()
            return None, f"no kernel watch from outside the sandbox ({error})"
        shared = cls(watch)
        return shared, shared.description

    def forbidden_hits(self, pid: int) -> tuple[list[str], list[str]]:
        """The watched kernels ``pid`` reached since the last call, and the trace's problems."""
        with self.lock:
            reached = self.watch.hits([pid])
            problems = self.watch.take_problems()
        return [name for name in reached if self.family.get(name) in WATCHED_FAMILIES], problems

    def close(self) -> None:
        with self.lock:
            self.watch.close(detach=True)  # its probes go in the background (seconds)


class Worker:
    """One job slot: a zygote in the sandbox, restarted after a timeout or a crash."""

    def __init__(
        self,
        mode: str,
        grader_dir: str,
        work_root: str,
        startup_timeout: float = 300,
        watch: SharedKernelWatch | None = None,
    ):
        self.mode = mode
        self.watch = watch
        self.grader_dir = grader_dir
        self.startup_timeout = startup_timeout
        home = SANDBOX_HOME if mode == "bwrap" else grader_dir
        runner_source = Path(grader_dir, "runner.py").read_text(encoding="utf-8")
        self.wait_stack = expected_wait_stack(f"{home}/runner.py", runner_source)
        self.slot_dir = tempfile.mkdtemp(prefix="slot-", dir=work_root)
        self.disk = _own_disk(self.slot_dir)
        os.chmod(self.slot_dir, 0o755)  # root's: a submission cannot make a file in it
        self.process: subprocess.Popen | None = None
        self.zygote_pid: int | None = None  # on the host
        self.base_bytes: int | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.fd_socket: socket.socket | None = None
        self.log = open(os.path.join(work_root, os.path.basename(self.slot_dir) + ".log"), "ab")
        self._starting = threading.Lock()  # a warm-up thread and the first job: one start

    @property
    def job_dir(self) -> Path:
        return Path(self.slot_dir) / JOB_FOLDER

    def _command(self, fd: int) -> list[str]:
        if self.mode == "bwrap":
            command = bwrap_command(self.grader_dir, self.slot_dir)
            command += _runner_args(SANDBOX_HOME, SANDBOX_JOBS, fd) + ["--pid-namespace"]
            if os.geteuid() == 0:
                command += ["--drop-uid", str(NOBODY)]
            if python_under_tmp():
                command += ["--require-landlock"]
        else:
            command = _runner_args(self.grader_dir, self.slot_dir, fd) + ["--unshare-net"]
            drop = fallback_drop_uid()
            if drop is not None:
                command += ["--drop-uid", str(drop)]
            if self.mode == "landlock":
                command += ["--require-landlock"]
        home = self.grader_dir if self.mode != "bwrap" else SANDBOX_HOME
        for path in _read_paths(home):
            command += ["--read-path", path]
        return command

    def start(self) -> None:
        self.lines = queue.Queue()
        self.new_job_dir()  # /tmp points into it from the start
        self.fd_socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                self._command(theirs.fileno()),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                cwd=self.slot_dir,
                env=_sandbox_env(),
                start_new_session=True,
                pass_fds=[theirs.fileno()],
            )
        finally:
            theirs.close()
        reader = threading.Thread(target=self._read, args=(self.process, self.lines), daemon=True)
        reader.start()
        message = self._next(time.monotonic() + self.startup_timeout)
        if message is None or not message.get("ready"):
            self.kill()
            raise RuntimeError(f"the sandbox worker did not start ({self.log.name})")
        self.zygote_pid = self._find_zygote()
        self.base_bytes = self._address_space(self.zygote_pid)
        try:  # the cases go only where the grader can see, from outside, who waits for them
            python_stacks(self.zygote_pid or -1)
        except StackUnreadable as error:
            self.kill()
            raise RuntimeError(
                f"the grader cannot read the sandbox's Python stack from outside ({error}): "
                "it needs ptrace permission (root with CAP_SYS_PTRACE; in Docker, "
                "--cap-add SYS_PTRACE), and grades nothing without it"
            ) from error

    def _find_zygote(self) -> int | None:
        """The python running runner.py, on the host (bubblewrap's own processes are above)."""
        for pid in [self.process.pid] + _host_descendants(self.process.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    arguments = handle.read().split(b"\0")
            except OSError:
                continue
            if b"python" in os.path.basename(arguments[0]) and any(
                argument.endswith(b"runner.py") for argument in arguments
            ):
                return pid
        return None

    @staticmethod
    def _address_space(pid: int | None) -> int | None:
        """The zygote's virtual size: each submission's address-space limit is this plus
        ``Limits.memory_bytes`` (the cgroup, where there is one, counts what it adds)."""
        try:
            with open(f"/proc/{pid}/statm") as handle:
                return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def _read(process: subprocess.Popen, lines: queue.Queue) -> None:
        for raw in process.stdout:
            lines.put(raw.decode("utf-8", errors="replace")[:10000])
        lines.put(None)

    def _next(self, deadline: float) -> dict | None:
        """The next well-formed message before ``deadline`` (None: timeout or worker gone)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                self.lines.put(None)  # stays gone
                return None
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                return message

    def _say(self, **message) -> None:
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def new_job_dir(self) -> Path:
        """A new, empty job folder (the last job's is removed whole, by root)."""
        self.clear_job()
        path = self.job_dir
        path.mkdir(mode=0o700)
        (path / protocol.WORK_FOLDER).mkdir(mode=0o700)
        if os.geteuid() == 0 and (self.mode == "bwrap" or fallback_drop_uid() is not None):
            for folder in (path, path / protocol.WORK_FOLDER):
                os.chown(folder, NOBODY, NOBODY)
        return path

    def clear_job(self) -> None:
        shutil.rmtree(self.job_dir, ignore_errors=True)
        if self.job_dir.exists():
            raise RuntimeError(f"the job folder {self.job_dir} could not be removed")

    def _host_pid(self, nspid: int) -> int | None:
        """The host PID of the zygote's child ``nspid`` (found from the host's /proc)."""
        if self.mode != "bwrap":
            return nspid
        for pid in _host_descendants(self.zygote_pid or -1):
            seen = _parent_and_nspid(pid)
            if seen is not None and seen == (self.zygote_pid, nspid):
                return pid
        return None

    def _sandbox_processes(self) -> list[int]:
        """Every process in the sandbox but bubblewrap's and the zygote."""
        found = _host_descendants(self.process.pid)
        return [pid for pid in found if pid != self.zygote_pid and pid not in self._bwrap_pids()]

    def _bwrap_pids(self) -> set[int]:
        pids = set()
        for pid in [self.process.pid] + _host_descendants(self.process.pid):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/comm") as handle:
                    if handle.read().strip() == "bwrap":
                        pids.add(pid)
        return pids

    def run(self, name: str, cells: list[dict], cases_blob: bytes, limits: Limits) -> JobOutcome:
        """Run one submission: its cells, then (if it earns them) the cases."""
        start = time.monotonic()
        try:
            with self._starting:
                fresh = self.process is None or self.process.poll() is not None
                if fresh:
                    self.start()
            if not fresh:
                self.new_job_dir()
            cells_path = self.job_dir / protocol.CELLS_FILE
            cells_path.write_text(json.dumps(cells))
            if os.geteuid() == 0 and (self.mode == "bwrap" or fallback_drop_uid() is not None):
                os.chown(cells_path, NOBODY, NOBODY)
        except (OSError, RuntimeError) as error:
            self.kill()
            return JobOutcome(False, False, None, time.monotonic() - start, str(error))
        cgroup = cgroups.JobCgroup(limits.memory_bytes, limits.processes)
        try:
            outcome = self._follow(name, cases_blob, limits, cgroup)
            outcome.memory_exceeded = cgroup.memory_exceeded()
            return outcome
        finally:
            cgroup.remove()

    def _follow(self, name, cases_blob, limits, cgroup) -> JobOutcome:
        begun = time.monotonic()
        deadline = begun + limits.timeout
        outcome = JobOutcome(False, False, None, 0.0)
        outcome.protections = [cgroup.describe()]
        if self.disk:
            outcome.protections.append(self.disk)
        # The cases' pipe, made for this job: the submission inherits its read end when the
        # zygote forks it, and nothing is written into it until the cells are over.
        read_end, write_end = os.pipe()
        pipe_inode = os.fstat(read_end).st_ino
        try:
            self._say(**limits.for_job(), job=name, base_bytes=self.base_bytes)
            socket.send_fds(self.fd_socket, [b"c"], [read_end])
        except OSError as error:
            os.close(write_end)
            self.kill()
            outcome.worker_error = f"the sandbox worker is gone ({error})"
            return outcome
        finally:
            os.close(read_end)
        try:
            pipe = (pipe_inode, write_end)
            return self._stages(name, cases_blob, outcome, cgroup, (begun, deadline), pipe)
        finally:
            if not outcome.cases_delivered:
                os.close(write_end)

    def _stages(self, name, cases_blob, outcome, cgroup, times, pipe) -> JobOutcome:
        """The job's stages as the zygote reports them, and the cases sent once the cells
        are over: ``times`` is (begun, deadline), ``pipe`` (its inode, its write end)."""
        (begun, deadline), (pipe_inode, write_end) = times, pipe
        host_pid = None
        protected = cases_sent = False
        while True:
            message = self._next(deadline)
            if message is None:
                outcome.timed_out = time.monotonic() >= deadline
                if not outcome.timed_out:
                    outcome.worker_error = "the sandbox worker died"
                self.kill()
                break
            if message.get("job") != name:
                continue
            if "forked" in message:
                host_pid = self._host_pid(int(message["forked"]))
                if host_pid is None:
                    outcome.worker_error = "the submission's process was not found on the host"
                    self.kill()
                    break
                if cgroup.active:
                    cgroup.add(host_pid)
                self._say(job=name, start=True)
            elif "protections" in message and not protected:
                protected = True  # said before any student code ran: trusted
                outcome.protections += [str(p) for p in message["protections"]][:10]
            elif message.get("cells_done") and cases_sent:
                # Only the runner should say it, once: a second means a cell said the
                # first and may have taken the cases (the outside watch is the defence).
                outcome.said_twice = True
            elif message.get("cells_done") and host_pid is not None and not cases_sent:
                cases_sent = True  # once: whoever says it again, the cases went once
                try:
                    refused = self._stage_b_refusal(host_pid, deadline, pipe_inode)
                except StackUnreadable as error:
                    outcome.worker_error = f"the submission's stack could not be read ({error})"
                    self.kill()
                    break
                if refused:
                    outcome.refused = refused
                    self._say(job=name, abort=refused)
                else:
                    if self.watch is not None:  # what the cells reached is theirs to use
                        self.watch.forbidden_hits(host_pid)
                    self._clear_results()
                    outcome.cases_delivered = True
                    self._send_cases(write_end, cases_blob)
            elif "ended" in message:
                outcome.finished = True
                status = message["ended"]
                outcome.wait_status = status if isinstance(status, int) else None
                break
        outcome.seconds = time.monotonic() - begun
        outcome.unprotected = not protected
        if self.watch is not None and host_pid is not None:
            outcome.kernel_hits, problems = self.watch.forbidden_hits(host_pid)
            if problems:
                outcome.protections.append(f"the kernel watch was incomplete: {problems[0]}")
        return outcome

    def _stage_b_refusal(self, host_pid: int, deadline: float, pipe_inode: int) -> str | None:
        """Why the cases may not be sent now (None: they may). "cells-done" is only a hint:
        the submission must be one process with one thread, seen from the host, and that
        thread the runner's main thread, blocked in its wait for the cases under the
        runner's own frames, read from outside. The cell thread gets a moment to end."""
        settle = min(time.monotonic() + CELL_THREAD_GRACE, deadline)
        while time.monotonic() < settle and not (
            thread_count(host_pid) == 1 and waiting_on_pipe(host_pid, pipe_inode)
        ):
            time.sleep(0.005)
        others = [pid for pid in self._sandbox_processes() if pid != host_pid]
        if others:
            return f"{len(others)} other process(es) were running in the sandbox"
        threads = thread_count(host_pid)
        if threads != 1:
            return (
                f"the cells left {threads - 1} thread(s) running; the graded calls run only "
                "in a process with no thread of the cells left"
            )
        if not waiting_on_pipe(host_pid, pipe_inode):
            return "the main thread was not waiting on the grader's pipe for the cases"
        return wait_stack_problem(host_pid, self.wait_stack)

    def _clear_results(self) -> None:
        """Remove whatever the cells left under the names of the graded stage's files (a
        forged case log, outputs, a link or a folder in their place): from now on only the
        main thread writes them, under the eyes of the guard."""
        with os.scandir(self.job_dir) as entries:
            for entry in entries:
                if entry.name == protocol.CASES_LOG or entry.name.startswith("outputs_"):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)

    @staticmethod
    def _send_cases(write_end: int, blob: bytes) -> None:
        """Write the cases into the job's pipe (in a thread: the pipe holds 64 KiB until the
        submission reads it), then close it."""

        def write() -> None:
            with contextlib.suppress(OSError), open(write_end, "wb") as stream:
                stream.write(blob)

        threading.Thread(target=write, daemon=True).start()

    def warm(self) -> None:
        """Start the worker now (in a thread of the grader's), so that importing torch in
        the sandbox overlaps with the grader's own work; a failure is the first job's."""
        with self._starting, contextlib.suppress(OSError, RuntimeError):
            if self.process is None:
                self.start()

    def kill(self) -> None:
        """Kill the whole sandbox: the worker's process group, and anything left below it."""
        if self.process is None:
            return
        below = _host_descendants(self.process.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in below:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        if self.fd_socket is not None:
            self.fd_socket.close()
            self.fd_socket = None
        self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        self.log.close()
        if self.disk:
            subprocess.run(["umount", "-l", self.slot_dir], capture_output=True)
        shutil.rmtree(self.slot_dir, ignore_errors=True)


#: The size of each job slot's own filesystem (where the grader is root and can mount one):
#: a submission that fills its disk fills this, never the disk the other slots write to.
SLOT_BYTES = 1 << 30


def _own_disk(slot_dir: str) -> str:
    """Mount a tmpfs of ``SLOT_BYTES`` on ``slot_dir`` (root only): what holds, for the
    report ("" when the slot shares the host's disk). Its pages count against the memory
    of the job's cgroup, like the rest of what the submission holds."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return ""
    size = f"size={SLOT_BYTES},mode=0755,nosuid,nodev"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", slot_dir], capture_output=True)  # fmt: skip
    return (
        f"its job folder on a {SLOT_BYTES >> 20} MiB disk of its own"
        if done.returncode == 0
        else ""
    )


def cases_blob(cases_json: bytes, inputs: bytes) -> bytes:
    """The cases and their inputs as one message (the runner's ``_receive_cases``)."""
    return len(cases_json).to_bytes(8, "big") + cases_json + inputs
