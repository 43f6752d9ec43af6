#!/usr/bin/env bash
# Set up a fresh Debian or Ubuntu machine for the course, as the README's Quick start does:
#   1. the Debian packages the grader and the tests need, installed when missing (with sudo
#      when not root); where they cannot be installed, say what to install by hand and stop;
#   2. the virtual environment .venv with the pinned requirements (the autograder included).
# The Quick start then builds the book. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# ldconfig lives in /sbin, which a non-root user's PATH often lacks.
PATH="$PATH:/usr/sbin:/sbin"

# Each Debian package the course needs, and why.
declare -A WHY=(
  [bubblewrap]="the grader's sandbox (bwrap)"
  [libseccomp2]="the grader's seccomp filter (pyseccomp loads libseccomp.so.2)"
  [git]="the tests list the repository's files with git"
  [python3-venv]="python3 -m venv (Debian splits ensurepip out of python3)"
  [chromium]="the browser tests (Debian's /usr/bin/chromium)"
)
PACKAGES=(bubblewrap libseccomp2 git python3-venv chromium)
# Outside CI the browser tests skip without chromium (tests/test_browser.py): a warning only.
OPTIONAL_OUTSIDE_CI=(chromium)

is_present() {
  case "$1" in
    bubblewrap) command -v bwrap >/dev/null 2>&1 ;;
    # Not grep -q: it would stop reading, and ldconfig's SIGPIPE fails the pipe (pipefail).
    libseccomp2) ldconfig -p 2>/dev/null | grep 'libseccomp\.so\.2 ' >/dev/null ;;
    git) command -v git >/dev/null 2>&1 ;;
    python3-venv) python3 -c 'import ensurepip' >/dev/null 2>&1 ;;
    chromium) command -v chromium >/dev/null 2>&1 ;;
  esac
}

missing_packages() {
  local package
  for package in "${PACKAGES[@]}"; do
    if [[ $package == python3-venv && -x .venv/bin/python ]]; then
      continue # the venv exists: ensurepip is no longer needed
    fi
    is_present "$package" || echo "$package"
  done
}

is_optional() {
  [[ -z ${CI:-} && " ${OPTIONAL_OUTSIDE_CI[*]} " == *" $1 "* ]]
}

# How this user runs apt-get: "" as root, "sudo" with sudo; says why not when neither works.
apt_prefix() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: this machine has no apt-get (not Debian or Ubuntu)." >&2
    return 1
  elif [[ $(id -u) == 0 ]]; then
    echo ""
  elif command -v sudo >/dev/null 2>&1; then
    echo "sudo"
  else
    echo "setup: you are not root and this machine has no sudo." >&2
    return 1
  fi
}

install_packages() {
  local prefix=$1
  shift
  echo "setup: installing Debian packages: $*${prefix:+ (with sudo)}"
  $prefix apt-get update -qq || return 1
  # Only the packages this machine's apt sources hold (Ubuntu has no chromium deb).
  local package installable=()
  for package in "$@"; do
    if LC_ALL=C apt-cache policy "$package" 2>/dev/null | grep 'Candidate: [^(]' >/dev/null; then
      installable+=("$package")
    else
      echo "setup: $package is not in this machine's apt sources"
    fi
  done
  ((${#installable[@]})) || return 0
  $prefix env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${installable[@]}" >/dev/null
}

# Says what is still missing and how to install it; fails when any of it is required.
report_missing() {
  local package required=()
  echo "setup: missing Debian packages:" >&2
  for package in "$@"; do
    if is_optional "$package"; then
      echo "  $package: ${WHY[$package]}; optional outside CI (those tests skip)" >&2
    else
      required+=("$package")
      echo "  $package: ${WHY[$package]}" >&2
    fi
  done
  cat >&2 <<EOF
setup: install them by hand, as root:  apt-get install $*
       Not Debian or Ubuntu: install bubblewrap, libseccomp, git, Python 3.11+ with venv and
       Chromium from your distribution. Ubuntu has Chromium only as a snap, and the browser
       tests need Debian's /usr/bin/chromium.
EOF
  if ((${#required[@]})); then
    echo "setup: stopped: ${required[*]} must be installed first; then run this line again." >&2
    return 1
  fi
  echo "setup: warning: going on without $*." >&2
}

setup_debian_packages() {
  local missing prefix
  mapfile -t missing < <(missing_packages)
  if ((${#missing[@]} == 0)); then
    echo "setup: Debian packages present: ${PACKAGES[*]}"
    return 0
  fi
  if ! prefix=$(apt_prefix); then
    echo "setup: cannot install ${missing[*]}." >&2
  elif ! install_packages "$prefix" "${missing[@]}"; then
    echo "setup: apt-get failed to install ${missing[*]}." >&2
  fi
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]} == 0)) || report_missing "${missing[@]}"
}

setup_venv() {
  if [[ ! -x .venv/bin/python ]]; then
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "setup: the course needs Python 3.11 or newer as python3; this one is" \
        "$(python3 --version 2>&1). Install a newer one, then run this line again." >&2
      return 1
    fi
    python3 -m venv .venv
  fi
  .venv/bin/pip install -r requirements.txt
}

setup_debian_packages
setup_venv
