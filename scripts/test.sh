#!/usr/bin/env bash
# The whole test suite: lint, formatting, types, then pytest (unit, loopback and Chromium
# interop tests). Extra arguments go to pytest. Every check runs even when an earlier one fails;
# the exit status is non-zero when any of them failed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/bootstrap.sh dev
bin="$root/.venv/bin"

failed=()

# Run one named check; record its name when it fails.
check() {
    local name="$1"
    shift
    echo "==> $name: $*" >&2
    if "$@"; then
        return 0
    fi
    failed+=("$name")
}

check "install chromium" bash scripts/install-debian-package.sh chromium chromium
check "install firefox-esr" bash scripts/install-debian-package.sh firefox-esr firefox-esr
check "install redis-server" bash scripts/install-debian-package.sh redis-server redis-server
check "peers virtualenv (Python 3.12)" bash scripts/peers-venv.sh
check "ruff check" "$bin/ruff" check .
check "ruff format" "$bin/ruff" format --check .
check "mypy" "$bin/mypy" --strict src tests examples

echo "==> pytest: $bin/pytest $*" >&2
pytest_status=0
"$bin/pytest" "$@" || pytest_status=$?
case "$pytest_status" in
    0) ;;
    5) echo "pytest collected no tests: that is a failure" >&2; failed+=("pytest (no tests)") ;;
    *) failed+=("pytest (exit $pytest_status)") ;;
esac

if [ "${#failed[@]}" -ne 0 ]; then
    printf '==> FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "==> all checks passed" >&2
