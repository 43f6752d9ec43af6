"""A watch from outside the sandbox on libtorch's forbidden kernels (Linux uprobes).

In-process Python can undo in-process Python: student code can pop the grader's dispatch
mode or destroy its ``torch.library`` kernels, call torch's own transposed convolution and
restore everything before it returns. This watch cannot be undone from inside: the trusted
grader (root, outside the sandbox) sets uprobes on the native entry points of the forbidden
kernels in ``libtorch_cpu.so``. A uprobe belongs to the library's file inode, so it fires in
every process that runs that code, the sandbox's too (own PID and user namespace), and the
trace records the host's thread and process ids.

Use (the grader, as root; start the watch before it starts the processes it asks about)::

    ok, why = probe()                      # can uprobes be set here? (and why not)
    with KernelWatch() as watch:           # own tracefs instance, own event group
        ...start the sandbox (host PID p: the bwrap process), let it run, wait...
        reached = watch.hits([p])          # forbidden functions reached by p, its threads
                                           # and every process/thread p started since
        problems = watch.take_problems()   # non-empty: events lost or records garbled in
                                           # that period; its results are incomplete

``hits`` attributes a hit to the thread, its process (tgid, from ``record-tgid``) and every
ancestor whose fork the trace showed (``sched_process_fork`` in the same instance), so the
host PID of ``bwrap`` covers everything in that sandbox, whatever its PID namespace says.
Setup: resolving the symbols once (seconds, then cached under ``~/.cache/autograder``),
then ~0.1 s to define and enable ~200 probes. Cost: nothing on code that no probe sits on
(honest answers); about a microsecond per probe reached (a trap into the kernel).

What it cannot see: a copy of ``libtorch_cpu.so`` (another inode, so no probes) or any
other native code (``ctypes``, a compiled extension) that computes the same thing; and
the forbidden functions' Python decompositions (``torch._decomp``), which run ordinary ops.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

TRACEFS_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
PREFIX = "autograder"
CACHE_FORMAT = 1

# Forbidden families, each a regex over a function's qualified name with every
# "(anonymous namespace)::" removed ("at::native::upsample_nearest1d_kernel_impl").
# Chosen: at::native entry points and the CPU kernels behind the DispatchStubs (called
# through pointers, so never inlined), plus the dispatcher's wrapper_* entries; not the
# shared helpers (shape checks, output-size computation) and nothing honest code reaches.
_WRAPPER = r"at::wrapper_(?:CPU|CompositeExplicitAutograd\w*|MkldnnCPU|QuantizedCPU)_\w*"
FORBIDDEN_FAMILIES: dict[str, str] = {
    "transposed convolution": (
        r"at::native::structured_slow_conv_transpose2d_structured_cpu::impl"
        r"|at::native::slow_conv_transpose3d(?:_out)?_cpu"
        r"|at::native::slow_conv_transpose[23]d_out_cpu_template"
        r"|at::native::_?mkldnn_convolution_transpose(?:_pointwise)?"
        r"|at::native::conv_transpose[123]d(?:_symint)?"
        rf"|{_WRAPPER}slow_conv_transpose[23]d\w*"
    ),
    "convolution backward": (
        r"at::native::convolution_backward(?:_overrideable)?(?:_out_symint)?"
        r"|at::native::_convolution_(?:backward_nogroup_backend|double_backward)"
        r"|at::native::slow_conv(?:2d|3d|_dilated[23]d|_transpose[23]d)_backward_(?:out_)?cpu"
        r"|at::native::slow_conv(?:2d|3d|_transpose[23]d)_backward_out_cpu_template"
        r"|at::native::_slow_conv2d_backward_output_mask_out_symint"
        r"|at::native::mkldnn_convolution(?:_transpose)?_backward(?:_weights)?"
        r"|at::native::conv_tbc_backward"
        rf"|{_WRAPPER}(?:convolution_backward|slow_conv\w*_backward|conv_tbc_backward)\w*"
    ),
    "upsampling": (
        r"at::native::structured__?upsample_\w+_cpu::impl"
        r"|at::native::_?upsample_(?:nearest|linear|bilinear|bicubic|trilinear|lanczos)"
        r"(?!\w*_common_check)\w*(?:<.*>)?"
        r"|at::native::qupsample_bilinear2d_nhwc_kernel"
        rf"|{_WRAPPER}_?upsample_\w*"
    ),
    # F.interpolate(mode="area") is adaptive average pooling, an upsampling when it enlarges.
    "interpolation (area)": (
        r"at::native::_?adaptive_avg_pool[123]d(?:_backward)?(?:_out)?(?:_cpu|_symint)?"
        r"|at::native::adaptive_avg_pool[23]d_(?:backward_)?kernel_impl"
        r"|at::native::mkldnn_adaptive_avg_pool2d\w*"
        r"|at::native::q?adaptive_avg_pool[23]d\w*quantized\w*|at::native::qadaptive_avg_pool\w+"
        rf"|{_WRAPPER}_?adaptive_avg_pool\w*"
    ),
    "grid sampling": (
        r"at::native::grid_sampler(?:_[23]d(?:_backward)?(?:_cpu|_out))?"
        r"|at::native::_grid_sampler_2d_cpu_(?:fallback(?:_backward)?|quantized)"
        r"|at::native::grid_sampler_[23]d_(?:backward_)?cpu_(?:kernel_)?impl(?:<\w+>)?"
        r"|at::native::affine_grid_generator(?:_backward)?(?:_out_symint)?"
        rf"|{_WRAPPER}_?(?:grid_sampler|affine_grid)\w*"
    ),
}
# Every family's names hold one of these words: a cheap first pass over 500k symbols.
_CANDIDATE = re.compile(r"conv|upsample|grid_sampl|affine_grid|adaptive_avg")
_FAMILY_PATTERNS = {
    family: re.compile(rf"(?:{regex})") for family, regex in FORBIDDEN_FAMILIES.items()
}

# One trace_pipe line: "<comm>-<tid> (<tgid>) [cpu] flags seconds: <event>: <payload>".
# Parsed from the right: a comm is at most 15 bytes, too short to hold a forged tail.
_HEADER = r"-(?P<tid>\d+)\s+\(\s*(?P<tgid>\d+|-+)\)\s+\[\d+\]\s+\S+\s+\d+\.\d+: "
_HIT_LINE = re.compile(rf".*{_HEADER}(?P<event>f\d+): \(0x[0-9a-f]+\)", re.S)
_FORK_LINE = re.compile(
    rf".*{_HEADER}sched_process_fork: comm=(?P<parent_comm>.{{0,15}}) pid=(?P<parent>\d+)"
    r" child_comm=(?P<child_comm>.{0,15}) child_pid=(?P<child>\d+)",
    re.S,
)
_LOST_LINE = re.compile(r"CPU:\d+ \[LOST (\d+) EVENTS\]")
_BENIGN_LINE = re.compile(r"##### CPU \d+ buffer started ####|")
_WRITE_CHUNK = 3500  # tracefs parses a write of dynamic events in 4 KiB pieces


class KernelWatchError(RuntimeError):
    """The watch could not be set up (or torn down) here; the message says what failed."""


@dataclass(frozen=True)
class WatchedFunction:
    """A forbidden native function: its qualified name, family and file offset in the library."""

    name: str
    family: str
    offset: int


# --------------------------------------------------------------------------------------
# Where tracing is, and whether uprobes can be set
# --------------------------------------------------------------------------------------


def tracefs_root(mount: bool = True) -> str | None:
    """The mounted tracefs holding ``uprobe_events`` (mounting it when root and allowed)."""
    for root in TRACEFS_MOUNTS:
        if os.path.exists(os.path.join(root, "uprobe_events")):
            return root
    if mount and os.geteuid() == 0 and shutil.which("mount"):
        subprocess.run(
            ["mount", "-t", "tracefs", "nodev", TRACEFS_MOUNTS[0]],
            capture_output=True,
            check=False,
        )
        if os.path.exists(os.path.join(TRACEFS_MOUNTS[0], "uprobe_events")):
            return TRACEFS_MOUNTS[0]
    return None


_probe_result: list[tuple[bool, str]] = []


def probe() -> tuple[bool, str]:
    """Whether uprobes can be set here (root, tracefs, ``uprobe_events`` writable), and why not.

    The answer is measured, not guessed: tracefs is mounted if it is not, and a probe on
    this Python's entry point is defined, enabled in a private instance and removed again.
    """
    if not _probe_result:
        _probe_result.append(_probe_uncached())
    return _probe_result[0]


def _probe_uncached() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"uprobes need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return False, f"uprobes need root (the grader runs as uid {os.geteuid()})"
    root = tracefs_root()
    if root is None:
        return False, "no tracefs with uprobe_events (not mounted, and mounting failed)"
    if not shutil.which("nm"):
        return False, "nm (binutils) is missing: cannot read libtorch's symbol table"
    executable = os.path.realpath(sys.executable)
    try:
        entry = _file_offset(_load_segments(executable), _elf_entry(executable))
        instance = _TraceInstance(root, f"{PREFIX}-{os.getpid()}-probe{secrets.token_hex(4)}")
        try:
            instance.define([f"p:{instance.group}/check {executable}:{entry:#x}"])
            instance.enable(instance.group)
        finally:
            instance.remove()
    except (OSError, KernelWatchError) as error:
        return False, f"uprobe_events refused a probe: {error}"
    return True, f"uprobes work ({root}/uprobe_events)"


# --------------------------------------------------------------------------------------
# The library's symbols: which native functions to watch
# --------------------------------------------------------------------------------------


def torch_library() -> str:
    """The path of the installed torch's ``libtorch_cpu.so`` (without importing torch)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise KernelWatchError("torch is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "lib" / "libtorch_cpu.so"
    if not path.exists():
        raise KernelWatchError(f"no {path}")
    return os.path.realpath(path)


def _elf_header(path: str) -> tuple[int, int, int, int]:
    """(entry, phoff, phentsize, phnum) of a 64-bit little-endian ELF file."""
    with open(path, "rb") as elf:
        header = elf.read(64)
    if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        raise KernelWatchError(f"{path}: not a 64-bit little-endian ELF file")
    entry, phoff = struct.unpack_from("<QQ", header, 24)
    phentsize, phnum = struct.unpack_from("<HH", header, 54)
    return entry, phoff, phentsize, phnum


def _elf_entry(path: str) -> int:
    return _elf_header(path)[0]


def _load_segments(path: str) -> list[tuple[int, int, int]]:
    """The executable PT_LOAD segments as (vaddr, size, file offset)."""
    _, phoff, phentsize, phnum = _elf_header(path)
    with open(path, "rb") as elf:
        elf.seek(phoff)
        table = elf.read(phentsize * phnum)
    segments = []
    for index in range(phnum):
        kind, flags, offset, vaddr, _, filesz = struct.unpack_from(
            "<IIQQQQ", table, index * phentsize
        )
        if kind == 1 and flags & 1:  # PT_LOAD, PF_X
            segments.append((vaddr, filesz, offset))
    return segments


def _file_offset(segments: list[tuple[int, int, int]], vaddr: int) -> int:
    """A uprobe is placed by file offset, not by virtual address."""
    for start, size, offset in segments:
        if start <= vaddr < start + size:
            return vaddr - start + offset
    raise KernelWatchError(f"address {vaddr:#x} is in no executable segment")


def qualified_name(demangled: str) -> str | None:
    """A function's name without parameters or anonymous namespaces; None for code that is
    not a function's entry (lambdas inside it, ``.cold`` split-off blocks)."""
    name = demangled.replace("(anonymous namespace)::", "")
    if name.endswith("[clone .cold]") or ".cold." in name:
        return None
    name = re.sub(r" \[clone [^\]]*\]$", "", name)  # .isra/.constprop/.part clones are entries
    depth = 0
    for index, char in enumerate(name):
        if char == "<":
            depth += 1
        elif char == ">":
            depth -= 1
        elif char == "(" and depth == 0:
            rest = name[index:]
            closing = _matching_paren(rest)
            if closing is None or rest[closing + 1 :].strip() not in ("", "const"):
                return None  # "f(...)::{lambda()#1}::operator()" and the like
            return name[:index]
    return name


def _matching_paren(text: str) -> int | None:
    depth = 0
    for index, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return index
    return None


def _family(name: str) -> str | None:
    for family, pattern in _FAMILY_PATTERNS.items():
        if pattern.fullmatch(name):
            return family
    return None


def _resolve(library: str) -> list[WatchedFunction]:
    """Read the library's symbol table (``nm``) and keep the forbidden functions' entries."""
    command = ["nm", "--defined-only", "-C", library]
    listing = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    if not listing.strip():  # stripped: only the dynamic symbols remain
        listing = subprocess.run(command[:1] + ["-D"] + command[1:], capture_output=True,
                                 text=True, check=False).stdout  # fmt: skip
    segments = _load_segments(library)
    chosen: dict[int, WatchedFunction] = {}
    for line in listing.splitlines():
        address, _, rest = line.partition(" ")
        kind, _, demangled = rest.partition(" ")
        if kind not in ("t", "T", "W") or not address or not _CANDIDATE.search(demangled):
            continue
        name = qualified_name(demangled)
        family = name and _family(name)
        if family:
            offset = _file_offset(segments, int(address, 16))
            chosen.setdefault(offset, WatchedFunction(name, family, offset))
    return sorted(chosen.values(), key=lambda function: function.offset)


def _cache_path(library: str) -> Path:
    status = os.stat(library)
    key = json.dumps([CACHE_FORMAT, library, status.st_size, status.st_mtime_ns, status.st_ino,
                      FORBIDDEN_FAMILIES])  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autograder" / f"kernel_watch-{digest}.json"


def forbidden_functions(library: str | None = None) -> list[WatchedFunction]:
    """The forbidden functions of ``library`` (default: torch's ``libtorch_cpu.so``), cached per
    library path, size, mtime and inode (reading the symbols of 400 MB takes seconds)."""
    library = os.path.realpath(library or torch_library())
    cache = _cache_path(library)
    with contextlib.suppress(OSError, ValueError, TypeError):
        return [WatchedFunction(*entry) for entry in json.loads(cache.read_text())]
    functions = _resolve(library)
    if not functions:
        raise KernelWatchError(f"{library}: no forbidden function found in its symbol table")
    with contextlib.suppress(OSError):  # no cache (read-only home): resolve again next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps([[f.name, f.family, f.offset] for f in functions]))
        temporary.replace(cache)
    return functions


# --------------------------------------------------------------------------------------
# A private tracefs instance and event group
# --------------------------------------------------------------------------------------


def _write(path: str, text: str) -> None:
    """Write to a tracefs control file; O_APPEND, never O_TRUNC (which clears every probe)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)


class _TraceInstance:
    """``instances/<name>`` with its uprobe group ``<name>`` (dashes as underscores)."""

    def __init__(self, root: str, name: str) -> None:
        self.root, self.name = root, name
        self.group = name.replace("-", "_")
        self.path = os.path.join(root, "instances", name)
        os.mkdir(self.path)
        self.defined: list[str] = []

    def define(self, definitions: list[str]) -> list[str]:
        """Define uprobes (``p:group/event path:offset``); returns the ones refused."""
        refused: list[str] = []
        for batch in _batches(definitions):
            try:
                _write(os.path.join(self.root, "uprobe_events"), "".join(d + "\n" for d in batch))
                self.defined += [d.split()[0].split(":", 1)[1] for d in batch]
                continue
            except OSError:
                pass
            for definition in batch:  # find which one the kernel refused
                event = definition.split()[0].split(":", 1)[1]
                try:
                    _write(os.path.join(self.root, "uprobe_events"), definition + "\n")
                    self.defined.append(event)
                except OSError as error:
                    if error.errno == errno.EEXIST:  # defined by the failed batch write
                        self.defined.append(event)
                    else:
                        refused.append(f"{definition}: {error.strerror}")
        if refused and not self.defined:
            raise KernelWatchError(refused[0])
        return refused

    def enable(self, *events: str) -> None:
        for event in events:
            _write(os.path.join(self.path, "events", event, "enable"), "1")

    def set_option(self, file: str, value: str) -> None:
        _write(os.path.join(self.path, file), value)

    def remove(self) -> list[str]:
        """Disable, remove the instance and then the probes; returns what could not be removed."""
        return _remove_instance(self.root, self.name, self.defined)


def _batches(lines: list[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    size = 0
    for line in lines:
        if batch and size + len(line) + 1 > _WRITE_CHUNK:
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield batch


def _remove_instance(root: str, name: str, events: list[str]) -> list[str]:
    failures = []
    path = os.path.join(root, "instances", name)
    if os.path.isdir(path):
        with contextlib.suppress(OSError):
            _write(os.path.join(path, "events", "enable"), "0")
        try:
            os.rmdir(path)
        except OSError as error:
            failures.append(f"instance {name}: {error.strerror}")
    for batch in _batches([f"-:{event}" for event in events]):
        try:
            _write(os.path.join(root, "uprobe_events"), "".join(line + "\n" for line in batch))
        except OSError:
            for line in batch:
                try:
                    _write(os.path.join(root, "uprobe_events"), line + "\n")
                except OSError as error:
                    failures.append(f"{line}: {error.strerror}")
    return failures


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _teardown_lock(name: str) -> str:
    """The lock a detached teardown holds while it removes instance ``name`` (beside the
    symbol cache, not in the temporary folder, which a grader's caller may check is empty)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "autograder"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{name.replace('_', '-')}.teardown-lock")


def _being_torn_down(name: str) -> bool:
    try:
        with open(_teardown_lock(name)) as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # held: its teardown is under way
    return False


def remove_stale(root: str | None = None) -> list[str]:
    """Remove the instances and probe groups of watches whose grader died (names carry its PID)."""
    root = root or tracefs_root()
    if root is None:
        return []
    owner = re.compile(rf"{PREFIX}[-_](\d+)[-_]")

    def stale(name: str) -> bool:
        found = owner.match(name)
        alive = bool(found) and _alive(int(found.group(1)))
        return bool(found) and not alive and not _being_torn_down(name)

    stale_events: dict[str, list[str]] = {}
    with open(os.path.join(root, "uprobe_events")) as definitions:
        for line in definitions:
            event = line.split()[0].split(":", 1)[-1] if line.strip() else ""
            if stale(event):
                stale_events.setdefault(event.split("/")[0].replace("_", "-"), []).append(event)
    names = {n for n in os.listdir(os.path.join(root, "instances")) if stale(n)}
    removed = []
    for name in sorted(names | set(stale_events)):
        failures = _remove_instance(root, name, stale_events.get(name, []))
        removed.append(f"{name}: " + ("; ".join(failures) if failures else "removed"))
    return removed


# --------------------------------------------------------------------------------------
# The watch
# --------------------------------------------------------------------------------------


@dataclass
class _Lineage:
    """What the trace said about tasks: who forked whom (in trace order), and the hits."""

    parent: dict[int, int] = field(default_factory=dict)
    pending: dict[int, set[str]] = field(default_factory=dict)

    def ancestors(self, tid: int, tgid: int | None) -> list[int]:
        chain: list[int] = []
        for start in (tid, tgid):
            task = start
            while task and task not in chain and len(chain) < 4096:
                chain.append(task)
                task = self.parent.get(task)
        return chain


class KernelWatch:
    """Uprobes on libtorch's forbidden kernels, in a tracefs instance of its own.

    ``hits(pids)`` returns the forbidden functions that the given host PIDs, their threads
    and their descendants reached since the last call for them. ``intact`` turns False when
    the trace lost events (a full buffer) or held lines it could not read (a thread named
    with a newline, to garble the record): nothing it says about that period is complete,
    and the problems cannot be pinned on one process. ``take_problems()`` returns and
    clears them. ``functions`` lists what is watched, ``refused`` the probes the kernel
    refused, ``setup_seconds`` the cost of each setup step.
    """

    def __init__(
        self,
        library: str | None = None,
        *,
        buffer_kb: int | None = None,
        drain_every: float | None = 0.25,
        select: Callable[[WatchedFunction], bool] | None = None,
    ) -> None:
        self.library = os.path.realpath(library or torch_library())
        self.select = select  # which forbidden functions get a probe (default: all)
        self.buffer_kb = buffer_kb or max(256, 16384 // (os.cpu_count() or 1))
        # A thread empties the buffer this often, so that other users of libtorch (the
        # grader's own references) cannot fill it between two calls of hits().
        self.drain_every = drain_every
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drainer: threading.Thread | None = None
        self.functions: list[WatchedFunction] = []
        self.refused: list[str] = []
        self.problems: list[str] = []
        self.setup_seconds: dict[str, float] = {}
        self._instance: _TraceInstance | None = None
        self._events: dict[str, WatchedFunction] = {}
        self._pipe: int | None = None
        self._leftover = b""
        self._lineage = _Lineage()

    @property
    def intact(self) -> bool:
        return not self.problems

    def __enter__(self) -> KernelWatch:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Remove stale watches, resolve the functions, define and enable the probes."""
        ok, why = probe()
        if not ok:
            raise KernelWatchError(why)
        root = tracefs_root()
        assert root is not None  # probe() found it
        began = time.perf_counter()
        remove_stale(root)
        self.functions = [f for f in forbidden_functions(self.library)
                          if self.select is None or self.select(f)]  # fmt: skip
        self.setup_seconds["symbols"] = time.perf_counter() - began
        self._instance = _TraceInstance(root, f"{PREFIX}-{os.getpid()}-{secrets.token_hex(4)}")
        atexit.register(self.close)
        try:
            self._arm(self._instance)
        except BaseException:
            self.close()
            raise

    def _arm(self, instance: _TraceInstance) -> None:
        began = time.perf_counter()
        self._events = {f"f{i}": function for i, function in enumerate(self.functions)}
        definitions = [f"p:{instance.group}/{event} {self.library}:{function.offset:#x}"
                       for event, function in self._events.items()]  # fmt: skip
        self.refused = instance.define(definitions)
        self.setup_seconds["define"] = time.perf_counter() - began
        began = time.perf_counter()
        instance.set_option("buffer_size_kb", str(self.buffer_kb))
        instance.set_option("options/record-tgid", "1")
        instance.enable("sched/sched_process_fork", instance.group)
        pipe = os.path.join(instance.path, "trace_pipe")
        self._pipe = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
        self.setup_seconds["enable"] = time.perf_counter() - began
        if self.drain_every:
            self._stop.clear()
            self._drainer = threading.Thread(target=self._drain_often, daemon=True)
            self._drainer.start()

    def _drain_often(self) -> None:
        while not self._stop.wait(self.drain_every):
            with self._lock:
                try:
                    if self._pipe is not None:
                        self._drain()
                except OSError as error:
                    self.problems.append(f"reading the trace failed: {error}")
                    return

    def close(self, *, detach: bool = False) -> list[str]:
        """Disable and remove everything this watch set up; returns what could not be removed.

        Removing a probe waits for the kernel to synchronise (~50 ms each here): with
        ``detach``, a process of its own does it after the grader has stopped reading, under
        a lock that keeps the next grader's ``remove_stale`` off it, and this returns at once.
        """
        self._stop.set()
        if self._drainer is not None and self._drainer is not threading.current_thread():
            self._drainer.join()
        with self._lock:
            if self._pipe is not None:
                os.close(self._pipe)
                self._pipe = None
        if self._instance is None:
            return []
        instance, self._instance = self._instance, None
        atexit.unregister(self.close)
        if detach:
            return _detach_removal(instance)
        return instance.remove()

    def hits(self, pids: Iterable[int]) -> list[str]:
        """The forbidden functions (qualified names) that these host PIDs, their threads and
        descendants reached since the last call for them, sorted."""
        reached: set[str] = set()
        with self._lock:
            self._drain()
            for pid in pids:
                reached |= self._lineage.pending.pop(int(pid), set())
        return sorted(reached)

    def take_problems(self) -> list[str]:
        """The trace's problems since the last call (lost events, lines it could not read),
        cleared. They name no process: every result of that period is incomplete."""
        with self._lock:
            self._drain()
            problems, self.problems = self.problems, []
        return problems

    def _drain(self) -> None:
        if self._pipe is None:
            raise KernelWatchError("the watch is not running")
        while True:
            try:
                chunk = os.read(self._pipe, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            lines = (self._leftover + chunk).split(b"\n")
            self._leftover = lines.pop()
            for line in lines:
                self._read_line(line.decode("latin-1"))

    def _read_line(self, line: str) -> None:
        if hit := _HIT_LINE.fullmatch(line):
            function = self._events.get(hit["event"])
            if function is None:
                self.problems.append(f"unknown event in the trace: {line!r}")
                return
            tid, tgid = int(hit["tid"]), _tgid(hit["tgid"], int(hit["tid"]))
            for task in self._lineage.ancestors(tid, tgid):
                self._lineage.pending.setdefault(task, set()).add(function.name)
        elif fork := _FORK_LINE.fullmatch(line):
            # A child starts with its parent's name, but for kthreadd's kernel threads.
            renamed = fork["parent_comm"] != fork["child_comm"] and fork["parent"] != "2"
            if fork["parent"] != fork["tid"] or renamed:
                self.problems.append(f"inconsistent fork record: {line!r}")
            self._lineage.parent[int(fork["child"])] = int(fork["tid"])
        elif lost := _LOST_LINE.fullmatch(line):
            self.problems.append(f"the trace lost {lost.group(1)} events")
        elif not _BENIGN_LINE.fullmatch(line):
            self.problems.append(f"unreadable trace line: {line!r}")


def _detach_removal(instance: _TraceInstance) -> list[str]:
    """Hand the instance's removal to a new process (holding the teardown lock)."""
    lock = open(_teardown_lock(instance.name), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        command = [sys.executable, "-I", __file__, "--remove", instance.root, instance.name]
        subprocess.Popen(
            command + instance.defined,
            pass_fds=[lock.fileno()],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as error:  # no process to hand it to: remove it here
        lock.close()
        return instance.remove() + [f"detached removal failed ({error})"]
    lock.close()  # the child's inherited descriptor keeps the lock until it is done
    return []


def _tgid(field_text: str, tid: int) -> int | None:
    """The process of a thread: the trace's record-tgid column, else /proc while it lives."""
    if field_text.isdigit():
        return int(field_text)
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{tid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    return None


if __name__ == "__main__":  # a detached teardown: --remove ROOT NAME EVENT...
    if len(sys.argv) >= 4 and sys.argv[1] == "--remove":
        _remove_instance(sys.argv[2], sys.argv[3], sys.argv[4:])
        with contextlib.suppress(OSError):
            os.unlink(_teardown_lock(sys.argv[3]))
