#!/usr/bin/env bash
# Install Debian's Chromium, which the interop tests drive headless, unless it is on PATH already.
set -euo pipefail

say() { echo "[install-chromium] $*" >&2; }

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "chromium is not on PATH and there is no apt-get to install it; install Chromium by hand"
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        say "chromium is not on PATH; installing it needs root (or sudo)"
        exit 1
    fi
    sudo=(sudo)
fi

say "installing Debian's chromium package"
"${sudo[@]}" apt-get update >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >&2

if ! command -v chromium >/dev/null 2>&1; then
    say "apt-get installed chromium but it is still not on PATH"
    exit 1
fi
say "installed $(chromium --version 2>/dev/null || echo chromium)"
