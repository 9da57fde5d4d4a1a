# Sourced by the scripts that make a virtualenv for one Python minor version.
#
#   find_python_version 3.13    prints the path of a Python 3.13 interpreter and returns 0, or
#                               returns 1 when none is found
#
# Where it looks, in order: $PYTHON<major><minor> (e.g. PYTHON313), the versions pyenv knows
# (newest patch release first), ~/.pyenv/versions/<version>*/bin, then python<version> on PATH.

# True when $1 runs and is Python $2 (major.minor).
is_python_version() {
    [ -n "$1" ] && "$1" -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$2')" \
        >/dev/null 2>&1
}

find_python_version() {
    local version="$1" variable candidate pyenv release
    variable="PYTHON${version//./}"
    if [ -n "${!variable:-}" ]; then
        is_python_version "${!variable}" "$version" && { echo "${!variable}"; return 0; }
        echo "$variable=${!variable} is not a runnable Python $version" >&2
        return 1
    fi
    pyenv="$(command -v pyenv || echo "${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv")"
    if [ -x "$pyenv" ]; then
        for release in $("$pyenv" versions --bare 2>/dev/null | grep "^${version//./\\.}\\." | sort -rV); do
            candidate="$(PYENV_VERSION="$release" "$pyenv" which "python$version" 2>/dev/null || true)"
            is_python_version "$candidate" "$version" && { echo "$candidate"; return 0; }
        done
    fi
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version"; do
        is_python_version "$candidate" "$version" && { echo "$candidate"; return 0; }
    done
    candidate="$(command -v "python$version" || true)"
    is_python_version "$candidate" "$version" && { echo "$candidate"; return 0; }
    return 1
}
