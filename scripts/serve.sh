#!/usr/bin/env bash
# Run the demo server with its browser page: `pywebtransport serve`. Arguments are passed on
# (see `.venv/bin/pywebtransport serve --help`). It prints the page's link and the hash of the
# certificate it generated.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/bootstrap.sh runtime
exec "$root/.venv/bin/pywebtransport" serve "$@"
