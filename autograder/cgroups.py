"""Limits for a submission's whole process tree: a cgroup per job (v2, or v1's controllers).

The trusted grader (root) makes one cgroup per job, puts the submission's process in it
before any student code runs, and removes it afterwards. Memory (tmpfs pages included) and
the number of tasks (threads count: the seccomp filter lets a submission start no process)
are then limited per submission, not per process. Where neither hierarchy can be written
(not root, a container without delegation), ``available()`` says why and the report says
that only rlimits held.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _version() -> tuple[str | None, str]:
    """``"v2"``, ``"v1"`` or None, and why not."""
    if os.geteuid() != 0:
        return None, "the grader is not root, so it cannot make cgroups"
    if (ROOT / "cgroup.controllers").is_file():
        controllers = (ROOT / "cgroup.controllers").read_text().split()
        if {"memory", "pids"} <= set(controllers):
            return "v2", ""
        return None, f"cgroup v2 without the memory and pids controllers ({controllers})"
    if (ROOT / "memory" / "tasks").is_file() and (ROOT / "pids" / "tasks").is_file():
        return "v1", ""
    return None, "no cgroup hierarchy with the memory and pids controllers is mounted"


class JobCgroup:
    """One job's cgroup (a folder per controller in v1, one folder in v2)."""

    def __init__(self, memory_bytes: int, tasks: int):
        self.version, self.problem = _version()
        self.folders: list[Path] = []
        if self.version is None:
            return
        name = f"autograder-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            if self.version == "v2":
                self._make_v2(name, memory_bytes, tasks)
            else:
                self._make_v1(name, memory_bytes, tasks)
        except OSError as error:
            self.remove()
            self.version, self.problem = None, f"cgroups could not be set up ({error})"

    def _make_v2(self, name: str, memory_bytes: int, tasks: int) -> None:
        parent = ROOT / "autograder"
        # The root cgroup may hold processes and still delegate; ours holds none.
        with contextlib.suppress(OSError):
            _write(ROOT / "cgroup.subtree_control", "+memory +pids")
        parent.mkdir(exist_ok=True)
        _write(parent / "cgroup.subtree_control", "+memory +pids")
        folder = parent / name
        folder.mkdir()
        self.folders = [folder]
        _write(folder / "memory.max", str(memory_bytes))
        with contextlib.suppress(OSError):  # no swap accounting: nothing to limit
            _write(folder / "memory.swap.max", "0")
        _write(folder / "pids.max", str(tasks))

    def _make_v1(self, name: str, memory_bytes: int, tasks: int) -> None:
        memory, pids = ROOT / "memory" / name, ROOT / "pids" / name
        memory.mkdir()
        self.folders.append(memory)
        pids.mkdir()
        self.folders.append(pids)
        _write(memory / "memory.limit_in_bytes", str(memory_bytes))
        with contextlib.suppress(OSError):
            _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        _write(pids / "pids.max", str(tasks))

    @property
    def active(self) -> bool:
        return self.version is not None

    def describe(self) -> str:
        if not self.active:
            return f"no cgroup ({self.problem}): memory is limited per process only"
        return f"cgroup {self.version}: memory and tasks limited for the whole submission"

    def add(self, pid: int) -> None:
        for folder in self.folders:
            _write(folder / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for folder in self.folders:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(line) for line in (folder / "cgroup.procs").read_text().split())
        return sorted(found)

    def memory_exceeded(self) -> bool:
        """Whether the kernel refused the submission memory (or killed it for that)."""
        for folder in self.folders:
            with contextlib.suppress(OSError, ValueError):
                if self.version == "v2":
                    events = dict(
                        line.split() for line in (folder / "memory.events").read_text().splitlines()
                    )
                    return int(events.get("max", 0)) > 0 or int(events.get("oom_kill", 0)) > 0
                if (folder / "memory.failcnt").is_file():
                    return int((folder / "memory.failcnt").read_text()) > 0
        return False

    def remove(self) -> None:
        """Kill whatever is left in it, then remove it."""
        for _ in range(100):
            left = self.pids()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        for folder in self.folders:
            for _ in range(100):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        self.folders = []


def available() -> tuple[bool, str]:
    version, problem = _version()
    return version is not None, problem
