#!/usr/bin/env bash
# Install a Debian package unless the command it provides is on PATH already.
# Usage: install-debian-package.sh PACKAGE COMMAND
# (chromium, firefox-esr: the interop tests drive them headless; redis-server: the pub/sub tests
# start it.)
set -euo pipefail

package="$1"
command="$2"
say() { echo "[install $package] $*" >&2; }

if command -v "$command" >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "$command is not on PATH and there is no apt-get to install it; install $package by hand"
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        say "$command is not on PATH; installing $package needs root (or sudo)"
        exit 1
    fi
    sudo=(sudo)
fi

say "installing Debian's $package package"
"${sudo[@]}" apt-get update >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$package" >&2

if ! command -v "$command" >/dev/null 2>&1; then
    say "apt-get installed $package but $command is still not on PATH"
    exit 1
fi
say "installed $("$command" --version 2>/dev/null || echo "$package")"
