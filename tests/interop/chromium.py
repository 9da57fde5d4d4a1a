"""Headless Chromium as a WebTransport test peer.

Chromium runs as a plain subprocess (no automation package): it opens a page served by a
``PageServer`` on 127.0.0.1, the page runs its JavaScript ``WebTransport`` scenario and
``fetch()``-POSTs a JSON result to ``/report``; progress lines go to ``/log``. The harness waits for
the report with a deadline, and notices early when Chromium dies. Chromium's own output is written
to a log file whose tail goes into every failure message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pywebtransport.web import PageServer

__all__ = [
    "CHROMIUM_FLAGS",
    "PAGES_DIR",
    "BrowserPageError",
    "Chromium",
    "find_chromium",
    "load_page",
    "run_page",
]

logger = logging.getLogger(__name__)

PAGES_DIR = Path(__file__).parent / "pages"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""The flags from docs: no QUIC flag at all (``--disable-quic`` would break WebTransport)."""

_STOP_TIMEOUT = 5.0


class BrowserPageError(AssertionError):
    """The page did not report in time, or the browser exited; carries the logs for the reader."""


def find_chromium() -> str | None:
    """Return the Chromium executable (``$CHROMIUM`` wins over ``PATH``), or ``None``."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        return shutil.which(configured)
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def load_page(name: str) -> bytes:
    """Return the bytes of ``tests/interop/pages/<name>``."""
    return (PAGES_DIR / name).read_bytes()


class Chromium:
    """A headless Chromium process showing one URL, killed (with its children) on exit.

    Example:
        ```python
        async with Chromium(page_server.url) as browser:
            result = await browser.wait_for_post(page_server, "/report", timeout=30)
        ```
    """

    #: The browser's name in messages and file names.
    name = "chromium"

    def __init__(
        self,
        url: str,
        *,
        executable: str | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        """Prepare (not start) a browser for ``url``.

        Args:
            url: The page to open.
            executable: The browser binary; by default ``find_chromium()``.
            extra_args: More command-line flags.
            log_path: Where Chromium's stdout/stderr go (default: a temporary file removed on exit).
        """
        self.url = url
        self._executable = executable
        self._extra_args = tuple(extra_args)
        self._log_path = log_path
        self._temp_dir: Path | None = None
        self.process: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path | None:
        """The file holding Chromium's output (``None`` before start)."""
        return self._log_path

    def log_tail(self, max_lines: int = 40) -> str:
        """Return the last lines of the browser's output."""
        if self._log_path is None or not self._log_path.exists():
            return f"(no {self.name} log)"
        lines = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-max_lines:]) or f"({self.name} log is empty)"

    def find_executable(self) -> str | None:
        """The browser binary (``$CHROMIUM`` wins over ``PATH``)."""
        return find_chromium()

    def arguments(self, profile: Path) -> list[str]:
        """The command line (after the binary) that opens :attr:`url` with ``profile``."""
        return [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", *self._extra_args, self.url]

    async def __aenter__(self) -> Self:
        """Launch the browser with a fresh profile directory."""
        executable = self._executable or self.find_executable()
        if executable is None:
            raise FileNotFoundError(
                f"{self.name} is not installed (the test command installs it with apt-get)"
            )
        self._temp_dir = Path(tempfile.mkdtemp(prefix=f"pwt-{self.name}-"))
        if self._log_path is None:
            self._log_path = self._temp_dir / f"{self.name}.log"
        profile = self._temp_dir / "profile"
        profile.mkdir()
        args = self.arguments(profile)
        with self._log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                executable,
                *args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        logger.debug("%s pid %d opened %s", self.name, self.process.pid, self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop Chromium and every process it started, then remove the profile."""
        try:
            await self.stop()
        finally:
            if self._temp_dir is not None:
                if exc is not None and self._log_path is not None:
                    logger.warning("%s output:\n%s", self.name, self.log_tail())
                shutil.rmtree(self._temp_dir, ignore_errors=True)

    async def stop(self) -> None:
        """Terminate the browser's process group: SIGTERM, then SIGKILL after a bounded wait."""
        process = self.process
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)  # the group also holds the renderer/GPU/zygote children
            try:
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await process.wait()
                break
            except TimeoutError:
                continue
        else:
            raise RuntimeError(f"{self.name} pid {process.pid} did not exit after SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # leftovers of the group, if any

    async def wait_for_post(
        self,
        pages: PageServer,
        path: str = "/report",
        *,
        timeout: float,
        page_log: Sequence[str] = (),
    ) -> Any:
        """Return the next JSON value the page POSTs to ``path``.

        Raises:
            BrowserPageError: Nothing came within ``timeout`` or Chromium exited first; the message
                holds the page's log lines and the tail of Chromium's output.
        """
        assert self.process is not None, "use Chromium inside 'async with'"
        posted = asyncio.ensure_future(pages.next_post(path, timeout=timeout))
        exited = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait({posted, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            if not posted.done():
                posted.cancel()
        if posted.done() and not posted.cancelled() and posted.exception() is None:
            return posted.result()
        reason = (
            f"{self.name} exited with code {self.process.returncode}"
            if self.process.returncode is not None
            else f"the page posted nothing to {path} within {timeout} s"
        )
        raise BrowserPageError(
            f"{reason}\n--- page log ---\n"
            + "\n".join(page_log)
            + f"\n--- {self.name} output ({self.log_path}) ---\n{self.log_tail()}"
        )


async def run_page(
    html: bytes,
    config: dict[str, Any],
    *,
    timeout: float = 30.0,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
    posts: dict[str, Callable[[Any], Awaitable[None]]] | None = None,
    gets: dict[str, tuple[bytes, str]] | None = None,
    browser: type[Chromium] | None = None,
) -> Any:
    """Serve ``html`` (with ``config`` at ``/config.json``) to a fresh headless Chromium.

    The page reads ``/config.json``, may POST progress strings to ``/log`` and POSTs its result to
    ``/report``.

    Args:
        html: The page.
        config: JSON-serialisable settings for the page.
        timeout: Seconds to wait for the report.
        log_path: Where to keep Chromium's output.
        extra_args: More Chromium flags.
        posts: More POST routes; the page's ``fetch`` resolves when the callback returns, so a
            callback can make the page wait for the test.
        gets: More GET routes: path -> (body, content type), for example a script module.
        browser: The browser class (default :class:`Chromium`; ``tests.interop.firefox.Firefox``).

    Returns:
        The JSON value the page POSTed to ``/report``.
    """
    page_log: list[str] = []

    async def on_log(value: Any) -> None:
        line = value if isinstance(value, str) else json.dumps(value)
        page_log.append(line)
        logger.debug("page: %s", line)

    async with PageServer() as pages:
        pages.add_get("/", html)
        pages.add_get("/common.js", load_page("common.js"), content_type="text/javascript")
        pages.add_get("/config.json", json.dumps(config).encode(), content_type="application/json")
        pages.add_post("/report")
        pages.add_post("/log", on_log)
        for path, callback in (posts or {}).items():
            pages.add_post(path, callback)
        for path, (body, content_type) in (gets or {}).items():
            pages.add_get(path, body, content_type=content_type)
        kind = browser or Chromium
        async with kind(pages.url, log_path=log_path, extra_args=extra_args) as running:
            return await running.wait_for_post(pages, "/report", timeout=timeout, page_log=page_log)
