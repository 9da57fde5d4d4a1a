#!/usr/bin/env bash
# Make .venv at the repository root ready: create it with Python >= 3.11 when it is missing or
# broken, and install the project into it whenever pyproject.toml changed since the last install.
#
#   bootstrap.sh runtime   the package and its dependencies (pip install -e .): what serve needs
#   bootstrap.sh [dev]     the package with its dev extra (pip install -e '.[dev]'): the tests
#
# The stamp records the mode of the last install: a dev install also satisfies runtime, a runtime
# install does not satisfy dev. Idempotent and quick when nothing changed. Messages go to stderr,
# so that callers can `exec` a program after it and keep that program's stdout clean.
set -euo pipefail

mode="${1:-dev}"
case "$mode" in
    runtime) spec="." ;;
    dev) spec=".[dev]" ;;
    *) echo "usage: bootstrap.sh [runtime|dev]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.pywebtransport-install-stamp"

say() { echo "[bootstrap] $*" >&2; }

# One bootstrap at a time per checkout: two concurrent pip installs would corrupt the venv.
if command -v flock >/dev/null 2>&1; then
    lock="${TMPDIR:-/tmp}/pywebtransport-bootstrap-$(printf '%s' "$root" | cksum | cut -d' ' -f1).lock"
    exec 9>"$lock"
    flock 9
fi

# True when $1 is a Python interpreter of version 3.11 or newer.
is_usable_python() {
    [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3.14 python3; do
        if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
            && is_usable_python "$(command -v "$candidate")"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# Debian splits venv/ensurepip into a package of its own; install it when venv creation fails.
install_venv_support() {
    local python="$1" version
    version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    command -v apt-get >/dev/null 2>&1 || return 1
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || return 1
        sudo="sudo"
    fi
    say "installing python${version}-venv"
    $sudo apt-get update >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "python${version}-venv" >&2 \
        || $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2
}

create_venv() {
    local python
    if ! python="$(find_python)"; then
        say "no Python 3.11 or newer found (set PYTHON=/path/to/python3.11)"
        exit 1
    fi
    say "creating .venv with $python ($("$python" --version 2>&1))"
    if ! "$python" -m venv --clear "$venv" >&2; then
        install_venv_support "$python" || { say "cannot create a virtualenv"; exit 1; }
        "$python" -m venv --clear "$venv" >&2
    fi
    rm -f "$stamp"
}

# The fingerprint of what the install depends on: the project file and the interpreter.
install_fingerprint() {
    "$venv/bin/python" - <<'EOF'
import hashlib
import sys

digest = hashlib.sha256(open("pyproject.toml", "rb").read())
digest.update(sys.version.encode())
print(digest.hexdigest())
EOF
}

# True when the last install was of mode $1 (or dev, which covers runtime) with fingerprint $2
# and the package is there. The stamp holds "<mode> <fingerprint>".
installed() {
    local recorded
    [ -f "$stamp" ] || return 1
    recorded="$(cat "$stamp")"
    { [ "$recorded" = "$1 $2" ] || [ "$recorded" = "dev $2" ]; } \
        && "$venv/bin/python" -c 'import importlib.metadata as m; m.version("pywebtransport")' \
            >/dev/null 2>&1
}

if ! is_usable_python "$venv/bin/python"; then
    create_venv
fi

fingerprint="$(install_fingerprint)"
if ! installed "$mode" "$fingerprint"; then
    say "installing the project ($mode) into .venv (pip install -e '$spec')"
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -e "$spec" >&2
    echo "$mode $fingerprint" >"$stamp"
fi
