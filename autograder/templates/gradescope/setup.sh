#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image; the zip is
# unpacked in $AUTOGRADER_ROOT/source. Assumed image: Gradescope's Ubuntu 22.04 base (its
# python3 is 3.10; universe has python3.11, which pyproject.toml's ">=3.11" needs); on a
# newer Ubuntu whose python3 is 3.11 or later, that one is used.
#   1. the sandbox's Debian packages: bubblewrap, and libseccomp2 (the seccomp filter);
#   2. $AUTOGRADER_ROOT/venv with the pinned requirements.txt, as the README's Quick start;
#   3. permissions: the venv readable by nobody (the uid the submission runs as), the source
#      (hidden cases, the term's seeds) root's alone.
set -euo pipefail
AUTOGRADER_ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$AUTOGRADER_ROOT/source"
VENV="$AUTOGRADER_ROOT/venv"

packages=(bubblewrap libseccomp2)
if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  python=python3
  packages+=(python3-venv)
else
  python=python3.11
  packages+=(python3.11 python3.11-venv)
fi
echo "setup: installing ${packages[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"

# Outside the source folder: the sandbox shows the submission the venv, never the source.
"$python" -m venv "$VENV"
cd "$SOURCE"
"$VENV/bin/python" -m pip install --no-cache-dir --quiet -r requirements.txt

chmod 755 "$AUTOGRADER_ROOT"
chmod -R a+rX "$VENV"
chmod -R go-rwx "$SOURCE"
echo "setup: done ($("$VENV/bin/python" -V), venv $VENV)"
