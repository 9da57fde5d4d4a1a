#!/usr/bin/env bash
# Make .venv/peers ready: a Python 3.12 virtualenv holding the independent WebTransport stacks
# the interop tests run as peers (they need Python >= 3.12, this project's .venv may be 3.11):
#   web-transport-quinn 0.1.0 (draft-07), aiopquic 0.6.1 (draft-13), pywebtransport 0.21.1
#   (draft-15), and cryptography for the peer scripts' certificate handling.
# The interpreter is $PYTHON312, else a 3.12 that pyenv knows, else python3.12 on PATH
# (scripts/lib/find-python.sh). Without
# one this exits non-zero with a message that says so (the interop tests then fail, not skip).
# Idempotent and quick when nothing changed. Messages go to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv/peers"
stamp="$venv/.peers-install-stamp"
requirements=(
    "web-transport-quinn==0.1.0"
    "aiopquic==0.6.1"
    "pywebtransport==0.21.1"
    "cryptography"
)

say() { echo "[peers-venv] $*" >&2; }

# shellcheck source=lib/find-python.sh
source "$root/scripts/lib/find-python.sh"

fingerprint="$(printf '%s\n' "${requirements[@]}" | cksum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && is_python_version "$venv/bin/python" 3.12; then
    exit 0
fi

if ! python312="$(find_python_version 3.12)"; then
    say "no Python 3.12 found: the interop peers (web-transport-quinn, aiopquic, pywebtransport"
    say "0.21.1) need Python >= 3.12. Looked at \$PYTHON312, pyenv (pyenv versions), "
    say "~/.pyenv/versions/3.12*/bin/python3.12 and python3.12 on PATH. Install one, e.g."
    say "'pyenv install 3.12', or set PYTHON312=/path/to/python3.12."
    exit 1
fi
say "creating $venv with $python312"
rm -rf "$venv"
"$python312" -m venv "$venv" >&2
say "installing ${requirements[*]}"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet "${requirements[@]}" >&2
echo "$fingerprint" >"$stamp"
