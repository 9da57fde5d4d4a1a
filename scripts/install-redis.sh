#!/usr/bin/env bash
# Install Debian's redis-server, which the pub/sub tests start on loopback ports, unless it is on PATH already.
set -euo pipefail

say() { echo "[install-redis] $*" >&2; }

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "redis-server is not on PATH and there is no apt-get to install it; install redis-server by hand"
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        say "redis-server is not on PATH; installing it needs root (or sudo)"
        exit 1
    fi
    sudo=(sudo)
fi

say "installing Debian's redis-server package"
"${sudo[@]}" apt-get update >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2

if ! command -v redis-server >/dev/null 2>&1; then
    say "apt-get installed redis-server but it is still not on PATH"
    exit 1
fi
say "installed $(redis-server --version 2>/dev/null || echo redis-server)"
