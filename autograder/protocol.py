"""What the two sides of the sandbox say to each other: one definition for both.

The trusted grader (``sandbox.py``, ``grading.py``) imports this as ``autograder.protocol``;
the worker in the sandbox (``runner.py``) loads the same file by path, since the sandbox
holds no ``autograder`` package. Nothing here runs student code, and nothing the student's
side writes is trusted: the grader reads its files back with size limits and safe loaders.

The control channel is the worker's stdin/stdout, one JSON object a line; each job's file
descriptor (the read end of the pipe that will carry its cases) travels over a Unix socket
beside it, from the grader to the zygote only. A job, as the worker and the grader see it::

    grader -> worker   {"job": NAME, ...limits}          the job folder holds the cells;
                       + the read end of the job's cases' pipe, which the submission's
                       process inherits when it is forked (the zygote keeps no copy)
    worker -> grader   {"job": NAME, "forked": NSPID}    the submission's process, held
    grader -> worker   {"job": NAME, "start": true}      it now sits in its cgroup
    worker -> grader   {"job": NAME, "cells_done": true} said by the submission: a hint
    grader -> worker   {"job": NAME, "abort": WHY}       kill it, no case is sent; or the
                       grader writes the cases into the pipe, once the host saw one thread
                       left, the main thread, blocked reading that pipe under the runner's
                       own frames (sandbox.wait_stack_problem)
    worker -> grader   {"job": NAME, "ended": STATUS}    the process is gone
"""

from __future__ import annotations

#: Files in a job folder. Written by the grader before the job starts:
CELLS_FILE = "cells.json"
#: Written by the submission's process (untrusted):
CELL_REPORT_FILE = "cells_report.json"
TAMPER_FILE = "tamper.json"
STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
WORK_FOLDER = "work"  # the submission's working directory, /tmp and $HOME


#: One JSON line per case event, appended as it happens: {"case": i, "state": "started"},
#: then {"case": i, "state": "finished", ...}; the last line of a case is its status.
CASES_LOG = "cases.jsonl"


def outputs_file(group: int) -> str:
    """The outputs of one test's cases (written when its last case ends), keys "<i>/<name>"."""
    return f"outputs_{group}.safetensors"


#: What the submission's process says on its status pipe before any student code runs
#: (trusted: written by the runner after the job started and before the first cell).
PROTECTIONS_PREFIX = "protections "
#: What its cell thread says after the cells (a hint only: student code can say it too).
CELLS_DONE = "cells-done"

#: Exit status of a submission's process whose protections could not be installed.
EXIT_NO_PROTECTION = 97

#: The syscalls a submission may not make, and the errno it gets. ``clone`` is refused
#: only without CLONE_THREAD (threads are allowed); ``clone3``'s flags sit in memory a
#: filter cannot read, so it is refused with ENOSYS, and glibc then falls back to
#: ``clone``. ``kill``/``tgkill`` are allowed only towards the process itself.
REFUSED_SYSCALLS = (
    "fork",
    "vfork",
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "keyctl",
    "add_key",
    "request_key",
    "tkill",
    # Kernel objects that outlive the process, shared by every job of a worker (its IPC
    # namespace is the worker's): System V shared memory, queues and semaphores, POSIX
    # message queues. One job would leave the next the cases it saw.
    "shmget",
    "shmat",
    "shmctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "ipc",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    # What root could still do (a grader that cannot drop to nobody): never a submission's.
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "swapon",
    "swapoff",
    "settimeofday",
    "clock_settime",
    "sethostname",
    "setdomainname",
    "acct",
    "iopl",
    "ioperm",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "syslog",
    "vhangup",
)
CLONE_THREAD = 0x00010000
