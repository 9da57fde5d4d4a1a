#!/usr/bin/env bash
# The whole test suite: lint, formatting, types, then pytest (unit, loopback and browser
# interop tests) on .venv's Python (the oldest supported, 3.11, where it is the system's), then
# the core, client and session tests again on the newest supported Python (3.13, from pyenv or
# PATH; see scripts/python-version-venv.sh). Extra arguments go to both pytest runs. Every check runs even when an earlier one fails;
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

# The newest supported Python: the tests that need no browser or peer and run quickly.
newest=3.13
newest_tests=(
    tests/protocol tests/messaging tests/client
    tests/test_session.py tests/test_stream.py tests/test_udp.py tests/test_stats.py
    tests/test_config.py tests/test_public_api.py tests/test_events.py
)
if python_newest="$(bash scripts/python-version-venv.sh "$newest")"; then
    echo "==> pytest on Python $newest: ${newest_tests[*]} $*" >&2
    newest_status=0
    "$python_newest" -m pytest "${newest_tests[@]}" "$@" || newest_status=$?
    # A filter given on the command line may leave nothing to run on this subset: not a failure.
    if [ "$newest_status" -ne 0 ] && ! { [ "$newest_status" -eq 5 ] && [ $# -gt 0 ]; }; then
        failed+=("pytest on Python $newest (exit $newest_status)")
    fi
else
    failed+=("Python $newest virtualenv")
fi

if [ "${#failed[@]}" -ne 0 ]; then
    printf '==> FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "==> all checks passed" >&2
