"""Run a peer script under the peers' Python 3.12 interpreter and talk to it over stdout.

The peer scripts live in ``tests/interop/peers/``; each imports one independent WebTransport
stack (web-transport-quinn, aiopquic, pywebtransport 0.21.1) that only the peers' virtualenv
has, so they run as child processes and never import this project. Their protocol with the test
is line-based on stdout:

* ``READY <port>``: a server listens on 127.0.0.1:<port> (servers print it once);
* ``RESULT <json>``: a scenario's outcome (clients print one per scenario, servers one per
  session they saw end);
* anything else is kept for the failure message.

Failures show the peer's output, so that a test failing against a peer says what the peer saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.conftest import T

PEERS_DIR = Path(__file__).resolve().parent / "peers"
#: Upper bound on a peer's start-up (its interpreter, its runtime, binding its socket).
START_TIMEOUT = 6 * T


class PeerError(AssertionError):
    """A peer process failed, or did not say what was expected in time (its output attached)."""


#: Every peer process started, until :func:`forget_started` (the interop conftest attaches
#: their output to the report of a test that failed).
STARTED: list[PeerProcess] = []


def forget_started() -> None:
    """Clear :data:`STARTED` (before each test)."""
    STARTED.clear()


class PeerProcess:
    """One running peer script: its process and the lines it printed so far."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        STARTED.append(self)
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._results: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Future[Any] = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            if text.startswith("READY ") and not self._ready.done():
                self._ready.set_result(int(text.split()[1]))
            elif text.startswith("RESULT "):
                self._results.put_nowait(json.loads(text[len("RESULT ") :]))

    def output(self) -> str:
        """What the peer printed (stdout and stderr are one stream) so far."""
        return "\n".join(self.lines[-60:])

    def fail(self, message: str) -> PeerError:
        return PeerError(f"{self.name}: {message}\n--- peer output ---\n{self.output()}")

    async def ready(self, timeout: float = START_TIMEOUT) -> int:
        """Wait for ``READY <port>``; return the port."""
        waiters: set[asyncio.Future[Any]] = {self._ready, self._reader}
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._ready in done:
            return self._ready.result()
        raise self.fail("exited before it was ready" if done else f"not ready in {timeout} s")

    async def result(self, timeout: float = 4 * T) -> dict[str, Any]:
        """Wait for the next ``RESULT`` line; return its JSON object."""
        getter: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(self._results.get())
        waiters: set[asyncio.Future[Any]] = {getter, self._reader}
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self._reader in done and not self._results.empty():
            return self._results.get_nowait()
        raise self.fail("exited without a result" if done else f"no result in {timeout} s")

    async def stop(self) -> None:
        """Terminate the peer (if still running) and wait for it."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), T)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self._reader, T)


@contextlib.asynccontextmanager
async def peer(python: str, script: str, *args: str) -> AsyncIterator[PeerProcess]:
    """Run ``tests/interop/peers/<script>`` with ``args`` under ``python`` for the block.

    The child's working directory is the peers' directory and its environment has no
    ``PYTHONPATH``: it imports its own stack and the peers' shared modules, never this project
    (for pywebtransport 0.21.1 that would shadow the peer with this tree).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONUNBUFFERED"] = "1"
    process = await asyncio.create_subprocess_exec(
        python,
        "-B",
        "-E",
        "-s",
        str(PEERS_DIR / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(PEERS_DIR),
        env=env,
    )
    handle = PeerProcess(script, process)
    try:
        yield handle
    finally:
        await handle.stop()
