"""Run every program under examples/ as a subprocess on loopback and check what it prints."""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
READY = re.compile(r"^READY (https://127\.0\.0\.1:(\d+)/\S*) ([0-9a-f]{64})$")


class Program:
    """A running example; its output lines are collected by a thread as they come."""

    def __init__(self, script: str, *args: str) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._seen = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(EXAMPLES / script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first line, not matched before, that matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.lines):
                line = self.lines[self._seen]
                self._seen += 1
                if match := regex.search(line):
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r}; output: {self.lines}")
            try:
                line_or_end = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line_or_end is None:
                raise AssertionError(f"exited before {pattern!r}; output: {self.lines}")
            self.lines.append(line_or_end)

    def ready(self) -> tuple[str, int, str]:
        match = self.expect(READY.pattern, timeout=15.0)
        return match.group(1), int(match.group(2)), match.group(3)

    def finish(self, timeout: float = 10.0) -> int:
        """Wait for the exit and collect the remaining output."""
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10.0)


@pytest.fixture
def programs() -> Iterator[list[Program]]:
    started: list[Program] = []
    yield started
    for program in started:
        program.kill()


def test_file_upload(programs: list[Program], tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()

    server = Program("file_upload/upload_server.py", "--host", "127.0.0.1", "--port", "0")
    programs.append(server)
    url, _, cert_hash = server.ready()
    client = Program("file_upload/upload.py", str(path), "--url", url, "--cert-hash", cert_hash)
    programs.append(client)
    assert client.finish(timeout=20.0) == 0, client.lines
    progress = [line for line in client.lines if line.startswith("PROGRESS ")]
    assert len(progress) >= 5
    assert progress[-1].startswith(f"PROGRESS {len(data)}/{len(data)} ")
    assert f"OK {expected}" in client.lines
    server.expect(rf"^RECEIVED payload\.bin {len(data)} {expected}$")
    assert server.stop() == 0
    assert "STOPPED" in server.lines


def test_game_state(programs: list[Program]) -> None:
    server = Program("game_state/game_server.py", "--host", "127.0.0.1", "--port", "0")
    programs.append(server)
    url, _, cert_hash = server.ready()
    client = Program(
        "game_state/game_client.py", "--url", url, "--cert-hash", cert_hash, "--seconds", "1"
    )
    programs.append(client)
    assert client.finish(timeout=15.0) == 0, client.lines
    ticks = [int(m.group(1)) for line in client.lines if (m := re.match(r"STATE tick=(\d+)", line))]
    assert len(set(ticks)) >= 20, client.lines
    assert all(a < b for a, b in itertools.pairwise(ticks))
    assert any(line.startswith("DONE ") for line in client.lines)
    applied = [
        int(m.group(1)) for line in client.lines if (m := re.search(r"inputs_applied=(\d+)", line))
    ]
    assert max(applied) > 0  # the state the client saw reflects its own inputs
    server.expect(r"^JOIN player=1$")
    leave = server.expect(r"^LEAVE player=1 inputs=(\d+) ", timeout=10.0)
    assert int(leave.group(1)) >= 10
    assert server.stop() == 0


def test_reconnecting_client(programs: list[Program], tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    first = Program(
        "reconnecting/counter_server.py",
        *("--host", "127.0.0.1", "--port", "0", "--state-dir", state, "--reuse-port"),
    )
    programs.append(first)
    url, port, cert_hash = first.ready()
    client = Program(
        "reconnecting/counter_client.py",
        *("--url", url, "--cert-hash", cert_hash, "--count", "40", "--interval", "0.05"),
    )
    programs.append(client)
    client.expect(r"^CONNECTED$")
    client.expect(r"^ACK 5$")
    first.kill()  # no goodbye: the client finds out from the restarted server

    second = Program(
        "reconnecting/counter_server.py",
        *("--host", "127.0.0.1", "--port", str(port), "--state-dir", state, "--reuse-port"),
    )
    programs.append(second)
    assert second.ready() == (url, port, cert_hash)
    client.expect(r"^CONNECTED$", timeout=15.0)
    assert client.finish(timeout=20.0) == 0, client.lines
    acks = [int(line.split()[1]) for line in client.lines if line.startswith("ACK ")]
    assert acks == list(range(1, 41)), client.lines  # every value once, in order
    assert "DONE 40" in client.lines
    assert second.stop() == 0
    got = [int(line.split()[1]) for line in second.lines if line.startswith("GOT ")]
    assert got and got[-1] == 40 and got[0] > 5  # the restarted server saw the count resume
