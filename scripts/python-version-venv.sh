#!/usr/bin/env bash
# Make .venv/py<version> ready: a virtualenv with the given Python minor version (e.g. 3.13)
# holding this project and its dev extra (pip install -e '.[dev]'), so that the tests can run on
# more than one supported Python. Prints the venv's python on stdout; messages go to stderr.
#
#   python-version-venv.sh 3.13
#
# The interpreter is found by scripts/lib/find-python.sh ($PYTHON313, pyenv, python3.13 on PATH);
# without one this exits non-zero and says so. Idempotent and quick when nothing changed.
set -euo pipefail

version="${1:?usage: python-version-venv.sh MAJOR.MINOR}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv/py$version"
stamp="$venv/.pywebtransport-install-stamp"

say() { echo "[python-$version] $*" >&2; }

# shellcheck source=lib/find-python.sh
source "$root/scripts/lib/find-python.sh"

fingerprint="$(cksum <pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] \
    && is_python_version "$venv/bin/python" "$version"; then
    echo "$venv/bin/python"
    exit 0
fi

if ! python="$(find_python_version "$version")"; then
    say "no Python $version found. Looked at \$PYTHON${version//./}, pyenv (pyenv versions),"
    say "~/.pyenv/versions/$version.*/bin and python$version on PATH. Install one, e.g."
    say "'pyenv install $version', or set PYTHON${version//./}=/path/to/python$version."
    exit 1
fi
say "creating $venv with $python"
rm -rf "$venv"
"$python" -m venv "$venv" >&2
say "installing the project with its dev extra"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -e '.[dev]' >&2
echo "$fingerprint" >"$stamp"
echo "$venv/bin/python"
