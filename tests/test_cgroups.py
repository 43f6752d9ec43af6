"""The per-job cgroup on both hierarchies, against a folder laid out as the kernel's.

This machine mounts cgroup v1's controllers, GitHub's runners cgroup v2: the sandbox tests
exercise the one this machine has; here both are driven against a stand-in for
/sys/fs/cgroup with the files the kernel's documentation names (Documentation/admin-guide/
cgroup-v2.rst: cgroup.controllers, cgroup.subtree_control, memory.max, pids.max,
cgroup.procs; cgroup-v1/memory.rst: memory.limit_in_bytes), so that the v2 path writes
what the kernel reads.
"""

from __future__ import annotations

import pytest

from autograder import cgroups


@pytest.fixture
def as_root(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroups.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cgroups, "ROOT", tmp_path)
    return tmp_path


def test_v2_limits_the_job_in_a_cgroup_of_its_own(as_root):
    (as_root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    (as_root / "cgroup.subtree_control").write_text("")
    job = cgroups.JobCgroup(512 << 20, 64)
    assert job.active and job.describe().startswith("cgroup v2:")
    (folder,) = job.folders
    assert folder.parent == as_root / "autograder"
    assert (folder / "memory.max").read_text() == str(512 << 20)
    assert (folder / "pids.max").read_text() == "64"
    assert (folder.parent / "cgroup.subtree_control").read_text() == "+memory +pids"
    job.add(4242)
    assert (folder / "cgroup.procs").read_text() == "4242"
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n")
    assert job.memory_exceeded()


def test_v2_without_the_controllers_says_so(as_root):
    (as_root / "cgroup.controllers").write_text("cpu io\n")
    job = cgroups.JobCgroup(1 << 20, 8)
    assert not job.active and "memory and pids" in job.describe()


def test_v1_uses_one_folder_per_controller(as_root):
    for controller in ("memory", "pids"):
        (as_root / controller).mkdir()
        (as_root / controller / "tasks").write_text("")
    job = cgroups.JobCgroup(256 << 20, 32)
    assert job.describe().startswith("cgroup v1:")
    memory, pids = job.folders
    assert (memory / "memory.limit_in_bytes").read_text() == str(256 << 20)
    assert (pids / "pids.max").read_text() == "32"


def test_not_root_is_no_cgroup(monkeypatch):
    monkeypatch.setattr(cgroups.os, "geteuid", lambda: 1000)
    job = cgroups.JobCgroup(1 << 20, 8)
    assert not job.active and "not root" in job.describe()
