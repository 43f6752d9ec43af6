"""The sandbox: long-lived workers (``runner.py`` zygotes) in bubblewrap, or without it.

The trusted grader owns one ``Worker`` per job slot. A worker is a ``python -I`` process
that has imported torch once and forks a child per submission (see ``runner.py``). With
bubblewrap it sees a read-only filesystem holding only the system, the Python install and
a folder with ``runner.py`` and a copy of ``course_checks.py``; its own ``/tmp``; one
read-write folder for the current job; no network; its own PID namespace (killing the
sandbox kills everything in it). Without bubblewrap the same worker runs with the same
limits, a private temporary directory, no network when the kernel allows it, and as
``nobody`` when the grader is root and the Python install is readable by ``nobody``.

The outer process enforces the wall-clock timeout: on timeout it kills the worker's whole
process group (and the child's), and the next job starts a fresh worker.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("runner.py")
NOBODY = 65534
SANDBOX_HOME = "/grader"
SANDBOX_JOBS = "/jobs"


@dataclass(frozen=True)
class Limits:
    """Per-submission limits (the defaults let a plain-loop answer finish comfortably)."""

    timeout: float = 120.0  # wall clock, whole submission
    memory_bytes: int = 4 << 30  # address space on top of the worker's own
    file_bytes: int = 64 << 20  # largest file the submission may write
    processes: int = 64  # RLIMIT_NPROC (enforced by the kernel for non-root uids)

    def for_job(self) -> dict:
        return {
            "cpu_seconds": int(self.timeout) + 5,
            "memory_bytes": self.memory_bytes,
            "file_bytes": self.file_bytes,
            "processes": self.processes,
        }


@dataclass
class JobOutcome:
    """How a job ended, as the trusted side saw it (never what the child claims)."""

    finished: bool  # the child ended (normally or not) before the timeout
    timed_out: bool
    wait_status: int | None
    seconds: float
    worker_error: str | None = None
    stray_processes: int = 0  # left running by the cells, killed before the graded calls


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


def bwrap_command(grader_dir: str, jobs_dir: str, user_namespace: bool = True) -> list[str]:
    """The bubblewrap command line that starts a worker (read-only binds of the essentials)."""
    command = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    if user_namespace:
        command += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
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
        "/sys/devices/system/cpu",
    ):
        command += ["--ro-bind-try", etc, etc]
    # No /proc: a submission then cannot reach the worker's control pipe through
    # /proc/<pid>/fd (same uid in the sandbox), nor see any process. torch only misses
    # /proc/cpuinfo (bound alone, read-only) for its CPU detection.
    command += ["--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/proc"]
    command += ["--ro-bind-try", "/proc/cpuinfo", "/proc/cpuinfo"]
    command += ["--ro-bind-try", "/etc/fonts", "/etc/fonts"]
    for path in _python_paths():
        command += ["--ro-bind", path, path]
    command += ["--ro-bind", grader_dir, SANDBOX_HOME, "--bind", jobs_dir, SANDBOX_JOBS]
    command += ["--chdir", SANDBOX_JOBS, "--"]
    return command


def _runner_args(home: str, jobs: str) -> list[str]:
    return [
        sys.executable,
        "-I",
        "-B",
        f"{home}/runner.py",
        "--checks",
        f"{home}/course_checks.py",
        "--jobs-dir",
        jobs,
    ]


_probe_cache: dict[str, tuple[bool, str]] = {}


def probe_bwrap() -> tuple[bool, str]:
    """Whether bubblewrap can start this Python here (and why not)."""
    if "bwrap" in _probe_cache:
        return _probe_cache["bwrap"]
    if shutil.which("bwrap") is None:
        result = (False, "bubblewrap (bwrap) is not installed")
    else:
        with tempfile.TemporaryDirectory(prefix="autograder-probe-") as scratch:
            command = bwrap_command(scratch, scratch) + [sys.executable, "-I", "-c", "import os"]
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=60, env=_sandbox_env()
                )
                ok = done.returncode == 0
                reason = "" if ok else f"bwrap failed: {done.stderr.strip()[:300]}"
            except (OSError, subprocess.TimeoutExpired) as error:
                ok, reason = False, f"bwrap failed: {error}"
        result = (ok, reason)
    _probe_cache["bwrap"] = result
    return result


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


def choose_sandbox(requested: str) -> tuple[str, str]:
    """Resolve ``--sandbox auto|bwrap|none`` to ``bwrap`` or ``none``, with a note why."""
    if requested == "none":
        return "none", "bubblewrap not used (--sandbox none)"
    ok, reason = probe_bwrap()
    if ok:
        return "bwrap", ""
    if requested == "bwrap":
        raise RuntimeError(f"--sandbox bwrap requested but {reason}")
    return "none", reason


def describe_sandbox(mode: str, note: str = "") -> str:
    """What isolation is actually active, for results.json and the summary."""
    if mode == "bwrap":
        return (
            "bubblewrap: read-only view of /usr and the Python install only (no course "
            "repository, no hidden cases, no solutions, no output folder, no other "
            "submission, no /proc), private /tmp and job folder, no network, own PID namespace, "
            f"uid {NOBODY} in a user namespace, no capabilities; rlimits on CPU time, "
            "address space, processes and file size; wall-clock timeout kills the sandbox"
        )
    if fallback_drop_uid() is not None:
        who = f"as uid {NOBODY} (nobody)"
    elif os.getuid() == 0:
        who = (
            "as root (uid 0), since nobody cannot read the Python install here: the "
            "submission can read and write what the grader can"
        )
    else:
        who = f"as uid {os.getuid()} (the grader's own user: it can write what the grader can)"
    text = (
        "no bubblewrap: rlimits on CPU time, address space, processes and file size, own "
        "process group, private temporary directory, no network when the kernel allows "
        f"it, {who}; the filesystem is NOT hidden; wall-clock timeout kills the process group"
    )
    return f"{text} ({note})" if note else text


def fallback_drop_uid() -> int | None:
    """The uid the fallback children drop to: ``nobody`` when the grader runs as root and
    ``nobody`` can read the Python install. Otherwise none: torch imports modules lazily
    (``cProfile``...), and a correct answer must not fail for a permission."""
    if os.getuid() != 0 or not _install_readable_by_nobody():
        return None
    return NOBODY


def _install_readable_by_nobody() -> bool:
    needed = [sys.base_prefix, sys.prefix, os.path.realpath(sys.executable)]
    return all(_readable_by_nobody(path) for path in needed)


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


class Worker:
    """One job slot: a zygote in the sandbox, restarted after a timeout or a crash."""

    def __init__(self, mode: str, grader_dir: str, work_root: str, startup_timeout: float = 300):
        self.mode = mode
        self.grader_dir = grader_dir
        self.startup_timeout = startup_timeout
        self.jobs_dir = tempfile.mkdtemp(prefix="slot-", dir=work_root)
        os.chmod(self.jobs_dir, 0o711)  # nobody may enter its own job folder, not list others
        self.process: subprocess.Popen | None = None
        self.base_bytes: int | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log = open(os.path.join(work_root, os.path.basename(self.jobs_dir) + ".log"), "ab")

    def _command(self) -> list[str]:
        if self.mode == "bwrap":
            return (
                bwrap_command(self.grader_dir, self.jobs_dir)
                + _runner_args(SANDBOX_HOME, SANDBOX_JOBS)
                + ["--pid-namespace"]
            )
        command = _runner_args(self.grader_dir, self.jobs_dir) + ["--unshare-net"]
        drop = fallback_drop_uid()
        if drop is not None:
            command += ["--drop-uid", str(drop)]
        return command

    def start(self) -> None:
        self.lines = queue.Queue()
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=self.jobs_dir,
            env=_sandbox_env(),
            start_new_session=True,
        )
        reader = threading.Thread(target=self._read, args=(self.process, self.lines), daemon=True)
        reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            message = self._next(deadline)
            if message is None:
                self.kill()
                raise RuntimeError(f"the sandbox worker did not start ({self.log.name})")
            if message.get("ready"):
                self.base_bytes = self._worker_address_space()
                return

    def _worker_address_space(self) -> int | None:
        """The zygote's virtual size, read from the host's /proc (the sandbox has none):
        the children's address-space limit is this plus ``Limits.memory_bytes``."""
        try:
            # The python running runner.py (bwrap's own command line names it too).
            for pid in [self.process.pid] + _host_descendants(self.process.pid):
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    arguments = handle.read().split(b"\0")
                if b"python" not in os.path.basename(arguments[0]) or not any(
                    argument.endswith(b"runner.py") for argument in arguments
                ):
                    continue
                with open(f"/proc/{pid}/statm") as handle:
                    return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
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
                return None
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                return message

    def new_job_dir(self, name: str) -> str:
        path = os.path.join(self.jobs_dir, name)
        os.mkdir(path, 0o700)
        return path

    def sandbox_job_path(self, name: str) -> str:
        return name

    def run(self, name: str, limits: Limits) -> JobOutcome:
        """Run the job prepared in ``jobs_dir/name``; wait at most ``limits.timeout``."""
        start = time.monotonic()
        if self.process is None or self.process.poll() is not None:
            try:
                self.start()
            except (OSError, RuntimeError) as error:
                return JobOutcome(False, False, None, time.monotonic() - start, str(error))
        request = dict(limits.for_job(), job=name, base_bytes=self.base_bytes)
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except OSError as error:
            self.kill()
            return JobOutcome(False, False, None, time.monotonic() - start, str(error))
        begun = time.monotonic()
        deadline = begun + limits.timeout
        child_pid = None
        while True:
            message = self._next(deadline)
            if message is None:
                timed_out = time.monotonic() >= deadline
                self.kill(child_pid)
                return JobOutcome(
                    False,
                    timed_out,
                    None,
                    time.monotonic() - begun,
                    None if timed_out else "the sandbox worker died",
                )
            if message.get("job") != name:
                continue
            if "pid" in message and isinstance(message["pid"], int):
                child_pid = message["pid"]
            if "ended" in message:
                status = message["ended"] if isinstance(message["ended"], int) else None
                stray = message.get("stray") if isinstance(message.get("stray"), int) else 0
                return JobOutcome(True, False, status, time.monotonic() - begun, None, stray)

    def kill(self, child_pid: int | None = None) -> None:
        """Kill the whole sandbox: the worker's process group, and the child's outside bwrap."""
        if self.process is None:
            return
        if self.mode != "bwrap" and child_pid is not None and child_pid > 1:
            try:
                os.killpg(child_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
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
        shutil.rmtree(self.jobs_dir, ignore_errors=True)
