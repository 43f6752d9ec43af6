"""The Quick start's setup script, ``.ci/setup.sh``, on fake fresh machines.

The script runs for real (bash), with a PATH that holds only shims: ``apt-get``,
``apt-cache``, ``sudo``, ``id``, ``ldconfig`` and ``python3`` log what they were asked,
and ``apt-get install`` "installs" a package by putting its program on PATH. Nothing is
installed on this machine, and its own bubblewrap and chromium stay out of sight.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BASH = shutil.which("bash")
EVERY_PACKAGE = ["bubblewrap", "libseccomp2", "git", "python3-venv", "chromium"]
INSTALL = "apt-get install -y -qq --no-install-recommends"
# The real programs the script and the shims use; nothing else from this machine.
REAL_TOOLS = ["bash", "cat", "chmod", "dirname", "env", "grep", "mkdir", "touch"]

# Each shim appends "<uid> <name> <args>" to $FAKE_LOG; the uid is the one `id -u` gives.
SHIMS = {
    "id": 'echo "${FAKE_UID}"',
    "sudo": 'echo "$FAKE_UID sudo $*" >>"$FAKE_LOG"\nFAKE_UID=0 exec "$@"',
    "apt-get": """echo "$FAKE_UID apt-get $*" >>"$FAKE_LOG"
[ "$FAKE_UID" = 0 ] || { echo "E: are you root?" >&2; exit 100; }
[ "$1" = install ] || exit 0
for package in "$@"; do
  case "$package" in
    bubblewrap) program=bwrap ;;
    chromium|git) program=$package ;;
    libseccomp2|python3-venv) touch "$FAKE_STATE/$package"; continue ;;
    *) continue ;;
  esac
  printf '#!/bin/sh\\n' >"$FAKE_INSTALLED/$program"
  chmod +x "$FAKE_INSTALLED/$program"
done""",
    # A package has a candidate when it is named in $FAKE_APT_SOURCES.
    "apt-cache": """case " $FAKE_APT_SOURCES " in
  *" $2 "*) printf '%s:\\n  Installed: (none)\\n  Candidate: 1.0\\n' "$2" ;;
esac""",
    "ldconfig": """[ -e "$FAKE_STATE/libseccomp2" ] &&
  echo "	libseccomp.so.2 (libc6,x86-64) => /lib/x86_64-linux-gnu/libseccomp.so.2"
exit 0""",
    "python3": """echo "$FAKE_UID python3 $*" >>"$FAKE_LOG"
case "$*" in
  *ensurepip*) [ -e "$FAKE_STATE/python3-venv" ] ;;
  "-m venv .venv")
    mkdir -p .venv/bin
    printf '#!/bin/sh\\necho "$FAKE_UID pip $*" >>"$FAKE_LOG"\\n' >.venv/bin/pip
    printf '#!/bin/sh\\n' >.venv/bin/python
    chmod +x .venv/bin/pip .venv/bin/python ;;
esac""",
}


@dataclass
class Machine:
    """A fake machine: where the shims log, and what ``apt-get`` has installed."""

    root: Path
    env: dict[str, str]

    def run(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [BASH, str(self.root / "clone" / ".ci" / "setup.sh")],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def log(self) -> list[str]:
        """What the shims were asked, in order, without python3's ``-c`` probes."""
        log = self.root / "log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if " python3 -c " not in line]

    def has_venv(self) -> bool:
        return (self.root / "clone" / ".venv" / "bin" / "pip").exists()


def write_shim(folder: Path, name: str, body: str) -> None:
    shim = folder / name
    shim.write_text(f"#!{BASH}\n{body}\n")
    shim.chmod(0o755)


def fake_machine(
    tmp_path: Path,
    *,
    uid: int,
    shims: set[str],
    present: tuple[str, ...] = (),
    apt_sources: tuple[str, ...] = tuple(EVERY_PACKAGE),
    ci: bool = False,
) -> Machine:
    """A fresh clone (the script and requirements.txt) on a machine that lacks every
    package but ``present``; ``shims`` says which of apt-get, apt-cache and sudo exist."""
    clone, shim_bin, installed, state = (tmp_path / name for name in ("clone", "bin", "i", "s"))
    for folder in (clone / ".ci", shim_bin, installed, state):
        folder.mkdir(parents=True)
    shutil.copy(REPO_ROOT / ".ci" / "setup.sh", clone / ".ci" / "setup.sh")
    shutil.copy(REPO_ROOT / "requirements.txt", clone / "requirements.txt")
    for tool in REAL_TOOLS:
        (shim_bin / tool).symlink_to(shutil.which(tool))
    for name, body in SHIMS.items():
        if name in shims or name in {"id", "ldconfig", "python3"}:
            write_shim(shim_bin, name, body)
    env = {
        "PATH": f"{shim_bin}{os.pathsep}{installed}",
        "HOME": str(tmp_path),
        "FAKE_UID": str(uid),
        "FAKE_LOG": str(tmp_path / "log"),
        "FAKE_STATE": str(state),
        "FAKE_INSTALLED": str(installed),
        "FAKE_APT_SOURCES": " ".join(apt_sources),
    }
    if ci:
        env["CI"] = "true"
    machine = Machine(tmp_path, env)
    # Mark the packages already present: the apt-get shim, off PATH, "installs" them as root.
    if present:
        write_shim(tmp_path, "preinstall", SHIMS["apt-get"])
        subprocess.run(
            [str(tmp_path / "preinstall"), "install", *present],
            env={**env, "FAKE_UID": "0", "FAKE_LOG": os.devnull},
            check=True,
        )
    return machine


APT = {"apt-get", "apt-cache"}
VENV_AND_PIP = ["python3 -m venv .venv", "pip install -r requirements.txt"]


def test_the_shims_hide_this_machines_own_packages(tmp_path):
    """The fake machine starts without bwrap and chromium, even where this one has them."""
    machine = fake_machine(tmp_path, uid=1000, shims=APT | {"sudo"})
    path = machine.env["PATH"]
    assert shutil.which("bwrap", path=path) is None
    assert shutil.which("chromium", path=path) is None


def test_root_installs_every_missing_package_without_sudo(tmp_path):
    machine = fake_machine(tmp_path, uid=0, shims=APT | {"sudo"})
    result = machine.run()
    assert result.returncode == 0, result.stderr
    commands = [line.split(" ", 1) for line in machine.log()]
    assert commands[:2] == [
        ["0", "apt-get update -qq"],
        ["0", f"{INSTALL} {' '.join(EVERY_PACKAGE)}"],
    ]
    assert not [line for line in machine.log() if " sudo " in f" {line}"]
    assert [command for _, command in commands[-2:]] == VENV_AND_PIP
    assert machine.has_venv()


def test_a_user_with_sudo_installs_through_sudo(tmp_path):
    machine = fake_machine(tmp_path, uid=1000, shims=APT | {"sudo"}, present=("git",))
    result = machine.run()
    assert result.returncode == 0, result.stderr
    missing = "bubblewrap libseccomp2 python3-venv chromium"
    assert machine.log()[:4] == [
        "1000 sudo apt-get update -qq",
        "0 apt-get update -qq",
        f"1000 sudo env DEBIAN_FRONTEND=noninteractive {INSTALL} {missing}",
        f"0 apt-get install -y -qq --no-install-recommends {missing}",
    ]
    assert "(with sudo)" in result.stdout
    assert machine.has_venv()


def test_a_user_without_sudo_is_told_what_to_install_and_nothing_runs(tmp_path):
    machine = fake_machine(tmp_path, uid=1000, shims=APT, present=("git",))
    result = machine.run()
    assert result.returncode != 0
    assert not [line for line in machine.log() if "apt-get" in line]
    assert "not root and this machine has no sudo" in result.stderr
    assert "apt-get install bubblewrap libseccomp2 python3-venv chromium" in result.stderr
    for package in ("bubblewrap", "libseccomp2", "python3-venv", "chromium"):
        assert f"  {package}: " in result.stderr, package
    assert not machine.has_venv(), "a half set-up machine must not go on to the venv"


def test_a_machine_without_apt_get_names_what_to_install(tmp_path):
    machine = fake_machine(tmp_path, uid=0, shims={"sudo"}, present=("git", "python3-venv"))
    result = machine.run()
    assert result.returncode != 0
    assert "no apt-get" in result.stderr
    assert "apt-get install bubblewrap libseccomp2 chromium" in result.stderr
    assert not machine.has_venv()


def test_a_set_up_machine_installs_nothing(tmp_path):
    machine = fake_machine(tmp_path, uid=1000, shims=APT | {"sudo"}, present=tuple(EVERY_PACKAGE))
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert [line.split(" ", 1)[1] for line in machine.log()] == VENV_AND_PIP


def test_ubuntu_without_a_chromium_deb_warns_outside_ci_and_fails_in_ci(tmp_path):
    """Ubuntu ships Chromium only as a snap: the browser tests skip without it, except in CI."""
    sources = tuple(package for package in EVERY_PACKAGE if package != "chromium")
    local = fake_machine(tmp_path / "local", uid=0, shims=APT, apt_sources=sources)
    result = local.run()
    assert result.returncode == 0, result.stderr
    assert f"0 {INSTALL} bubblewrap libseccomp2 git python3-venv" in local.log()
    assert "chromium is not in this machine's apt sources" in result.stdout
    assert "warning: going on without chromium." in result.stderr
    assert local.has_venv()

    ci = fake_machine(tmp_path / "ci", uid=0, shims=APT, apt_sources=sources, ci=True)
    result = ci.run()
    assert result.returncode != 0
    assert "  chromium: the browser tests" in result.stderr
    assert not ci.has_venv()


def test_setup_stops_when_apt_get_fails(tmp_path):
    """A sudo that refuses (wrong password, not a sudoer) stops the setup with the packages named."""
    machine = fake_machine(tmp_path, uid=1000, shims=APT | {"sudo"})
    write_shim(tmp_path / "bin", "sudo", 'echo "$FAKE_UID sudo $*" >>"$FAKE_LOG"\nexit 1')
    result = machine.run()
    assert result.returncode != 0
    assert machine.log() == ["1000 sudo apt-get update -qq"]
    assert "apt-get failed to install" in result.stderr
    assert "apt-get install bubblewrap libseccomp2 git python3-venv chromium" in result.stderr
    assert not machine.has_venv()
