"""Every snippet of docs/tutorial-chat.md runs, and does what the tutorial says.

How the tutorial is read: each code block is preceded by a comment ``<!-- file: NAME -->``
naming the file it belongs to; the blocks of one file are joined in order and written into a
temporary directory. Every ``console`` block is a transcript: one ``$ python FILE ARGS`` command
and lines the program prints. In transcripts, a 64-hex-digit hash and the port after
``127.0.0.1:`` stand for the values of the run.

How it runs: the servers and clients are started as the tutorial says (``python FILE ...``, with
``PORT=0`` so that the servers pick free ports), on loopback with the certificate the server
makes. The tests talk to the clients through their standard input and read what they print;
every wait has a deadline. After a run, every transcript of the programs involved must match one
of the runs (its command, and its lines in order among what that program printed). The page runs
in headless Chromium against the tutorial's server, with a small driver script added that plays
the user: it sends a line through the page's form and answers what it sees in the page's list,
and a Python client in the room checks both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from pywebtransport.web import messaging_module
from tests.interop.chromium import Chromium

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial-chat.md"
FILES = {"chat_server.py", "chat_client.py", "chat.html", "rpc_server.py", "rpc_client.py"}
LINE_TIMEOUT = 20.0  # seconds for one expected line (a process start imports aioquic)
EXIT_TIMEOUT = 20.0

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_FILE_MARK = re.compile(r"<!-- file: (?P<name>[\w.-]+) -->")
_PLACEHOLDER = re.compile(r"[0-9a-f]{64}|(?<=127\.0\.0\.1:)\d+")

R = TypeVar("R")


# --------------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class Transcript:
    """A console block: the command as typed and the lines it shows."""

    command: str
    output: tuple[str, ...]

    @property
    def program(self) -> str:
        return self.command.split()[1]


@dataclass
class Tutorial:
    files: dict[str, str] = field(default_factory=dict)
    transcripts: list[Transcript] = field(default_factory=list)
    unmarked: list[str] = field(default_factory=list)  # blocks that are neither


def read_tutorial() -> Tutorial:
    text = TUTORIAL.read_text()
    tutorial = Tutorial()
    for block in _FENCE.finditer(text):
        before = text[: block.start()].rstrip().splitlines()
        mark = _FILE_MARK.fullmatch(before[-1].strip()) if before else None
        body = block.group("body")
        if mark is not None:
            name = mark.group("name")
            previous = tutorial.files.get(name)
            tutorial.files[name] = body if previous is None else f"{previous}\n\n{body}"
        elif block.group("lang") == "console":
            command, *output = body.rstrip("\n").splitlines()
            tutorial.transcripts.append(Transcript(command.removeprefix("$ "), tuple(output)))
            assert command.startswith("$ python "), f"a transcript starts with a command: {body}"
        else:
            tutorial.unmarked.append(body)
    return tutorial


def write_files(tutorial: Tutorial, directory: Path, *, page_driver: str | None = None) -> None:
    for name, body in tutorial.files.items():
        if name == "chat.html" and page_driver is not None:
            assert body.count("</body>") == 1
            body = body.replace("</body>", f"{page_driver}</body>")
        (directory / name).write_text(body)


def line_pattern(line: str) -> re.Pattern[str]:
    """A transcript line as a regex: the hash and the ports stand for any value."""
    parts: list[str] = []
    position = 0
    for found in _PLACEHOLDER.finditer(line):
        parts.append(re.escape(line[position : found.start()]))
        parts.append("[0-9a-f]{64}" if len(found.group()) == 64 else r"\d+")
        position = found.end()
    parts.append(re.escape(line[position:]))
    return re.compile("".join(parts))


# --------------------------------------------------------------------------------- processes


class Program:
    """One snippet running as ``python FILE ARGS`` in the tutorial's directory."""

    def __init__(self, process: asyncio.subprocess.Process, args: tuple[str, ...], errors: Path):
        self.process = process
        self.command = " ".join(("python", *args))
        self.lines: list[str] = []  # everything printed so far
        self._seen = 0  # lines already consumed by expect()
        self._errors = errors
        self._eof = False

    def report(self) -> str:
        printed = "\n".join(self.lines) or "(nothing)"
        errors = self._errors.read_text(errors="replace")[-3000:] if self._errors.exists() else ""
        return f"--- {self.command} printed ---\n{printed}\n--- and on stderr ---\n{errors}"

    async def _read_line(self) -> str | None:
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            self._eof = True
            return None
        line = raw.decode(errors="replace").rstrip("\n")
        self.lines.append(line)
        return line

    async def expect(self, wanted: str | re.Pattern[str]) -> re.Match[str]:
        """Wait for the next line that is ``wanted`` (text or regex); earlier lines are skipped."""
        pattern = wanted if isinstance(wanted, re.Pattern) else re.compile(re.escape(wanted))
        shown = wanted if isinstance(wanted, str) else wanted.pattern
        try:
            async with asyncio.timeout(LINE_TIMEOUT):
                while True:
                    while self._seen < len(self.lines):
                        found = pattern.fullmatch(self.lines[self._seen])
                        self._seen += 1
                        if found is not None:
                            return found
                    if self._eof or await self._read_line() is None:
                        break
        except TimeoutError:
            raise AssertionError(
                f"{shown!r} not printed within {LINE_TIMEOUT} s\n{self.report()}"
            ) from None
        raise AssertionError(f"{shown!r} never printed (output ended)\n{self.report()}")

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def finish(self, *, interrupt: bool = False) -> None:
        """End the input (or interrupt, like Ctrl-C), read the rest and expect exit status 0."""
        if interrupt:
            self.process.send_signal(signal.SIGINT)
        elif self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(EXIT_TIMEOUT):
                while not self._eof:
                    await self._read_line()
                status = await self.process.wait()
        except TimeoutError:
            raise AssertionError(f"did not exit within {EXIT_TIMEOUT} s\n{self.report()}") from None
        assert status == 0, f"exit status {status}\n{self.report()}"


class Runner:
    """Starts the snippets; whatever still runs at the end is killed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.programs: list[Program] = []

    async def start(self, *args: str) -> Program:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "PORT": "0"}
        errors = self.directory / f"stderr-{len(self.programs)}.txt"
        with errors.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                cwd=self.directory,
                env=environment,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        program = Program(process, args, errors)
        self.programs.append(program)
        return program

    async def close(self) -> None:
        for program in self.programs:
            if program.process.returncode is None:
                program.process.kill()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(EXIT_TIMEOUT):
                        await program.process.wait()


@contextlib.asynccontextmanager
async def running(directory: Path) -> AsyncIterator[Runner]:
    runner = Runner(directory)
    try:
        yield runner
    finally:
        await runner.close()


def check_transcripts(tutorial: Tutorial, runs: Iterable[Program], programs: set[str]) -> None:
    """Every transcript of ``programs`` matches a run: its command, and its lines in order."""
    runs = list(runs)
    for transcript in tutorial.transcripts:
        if transcript.program not in programs:
            continue
        command = line_pattern(transcript.command)
        matching = [run for run in runs if command.fullmatch(run.command)]
        assert matching, f"no run of {transcript.command!r} among {[r.command for r in runs]}"
        for run in matching:
            remaining = iter(run.lines)
            missing = [
                line
                for line in transcript.output
                if not any(line_pattern(line).fullmatch(printed) for printed in remaining)
            ]
            assert not missing, f"{transcript.command}: {missing} not printed\n{run.report()}"


async def start_chat_server(runner: Runner) -> tuple[Program, str, str, str]:
    """Start chat_server.py; its chat URL, certificate hash and page address."""
    server = await runner.start("chat_server.py")
    url = (await server.expect(re.compile(r"chat server: (https://127\.0\.0\.1:\d+/chat)")))[1]
    digest = (await server.expect(re.compile(r"certificate hash: ([0-9a-f]{64})")))[1]
    page = (await server.expect(re.compile(r"page: (http://127\.0\.0\.1:\d+/\?name=carol)")))[1]
    return server, url, digest, page


async def http_get(url: str) -> tuple[str, bytes]:
    """GET over HTTP/1.1 (the page server closes the connection after its answer)."""
    found = re.fullmatch(r"http://([\d.]+):(\d+)(/\S*)", url)
    assert found is not None, url
    async with asyncio.timeout(LINE_TIMEOUT):
        reader, writer = await asyncio.open_connection(found[1], int(found[2]))
        writer.write(f"GET {found[3]} HTTP/1.1\r\nHost: {found[1]}\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode("iso-8859-1"), body


# --------------------------------------------------------------------------------- tests


def test_every_block_belongs_to_a_file_or_is_a_transcript() -> None:
    tutorial = read_tutorial()
    assert not tutorial.unmarked, f"code blocks without a <!-- file: --> mark: {tutorial.unmarked}"
    assert set(tutorial.files) == FILES
    for name, body in tutorial.files.items():
        if name.endswith(".py"):
            compile(body, name, "exec")
    assert {t.program for t in tutorial.transcripts} <= FILES
    index = (ROOT / "docs" / "index.md").read_text()
    assert "(tutorial-chat.md)" in index


async def test_two_python_clients_chat(tmp_path: Path) -> None:
    tutorial = read_tutorial()
    write_files(tutorial, tmp_path)
    async with running(tmp_path) as runner:
        server, url, digest, page = await start_chat_server(runner)

        alice = await runner.start("chat_client.py", url, digest, "alice")
        await alice.expect("server: alice joined")
        bob = await runner.start("chat_client.py", url, digest, "bob")
        await bob.expect("server: bob joined")
        await alice.expect("server: bob joined")

        await alice.type("hello bob")
        await alice.expect("alice: hello bob")
        await bob.expect("alice: hello bob")
        await bob.type("hi alice")
        await bob.expect("bob: hi alice")
        await alice.expect("bob: hi alice")

        await bob.finish()  # Ctrl-D: bob leaves the room
        await alice.expect("server: bob left")
        await alice.finish()

        head, body = await http_get(page)
        assert " 200 " in head.splitlines()[0] and body == (tmp_path / "chat.html").read_bytes()
        head, body = await http_get(page.replace("/?name=carol", "/pywebtransport/messaging.js"))
        assert "text/javascript" in head and body == messaging_module()
        head, body = await http_get(page.replace("/?name=carol", "/settings.json"))
        assert json.loads(body) == {"url": url, "hash": digest}

        await server.finish(interrupt=True)  # Ctrl-C
    check_transcripts(tutorial, runner.programs, {"chat_server.py", "chat_client.py"})


async def test_rpc_client_and_server(tmp_path: Path) -> None:
    tutorial = read_tutorial()
    write_files(tutorial, tmp_path)
    async with running(tmp_path) as runner:
        server = await runner.start("rpc_server.py")
        url = (await server.expect(re.compile(r"rpc server: (https://127\.0\.0\.1:\d+/rpc)")))[1]
        digest = (await server.expect(re.compile(r"certificate hash: ([0-9a-f]{64})")))[1]

        client = await runner.start("rpc_client.py", url, digest)
        await client.finish()
        await server.expect("slow: the caller gave up")  # the timeout cancelled the method
        await server.finish(interrupt=True)
    (transcript,) = [t for t in tutorial.transcripts if t.program == "rpc_client.py"]
    assert tuple(client.lines) == transcript.output, client.report()
    check_transcripts(tutorial, runner.programs, {"rpc_server.py", "rpc_client.py"})


# The driver plays carol, the user of the page: it submits the page's form and watches the
# page's list. It only uses the page's elements, never its variables.
PAGE_DRIVER = """<script type="module">
  const list = document.getElementById("messages");
  const form = document.getElementById("form");
  const input = document.getElementById("text");
  const shown = (text) =>
    new Promise((resolve) => {
      const check = () => {
        if ([...list.children].some((item) => item.textContent === text)) {
          observer.disconnect();
          resolve();
        }
      };
      const observer = new MutationObserver(check);
      observer.observe(list, { childList: true });
      check();
    });
  const say = (text) => {
    input.value = text;
    form.requestSubmit();
  };
  await shown("server: carol joined");
  say("hello from the browser");
  await shown("alice: hello carol");
  say("the browser got: alice: hello carol");
  console.log("driver: done");
</script>
"""


async def alive(browser: Chromium, step: Awaitable[R]) -> R:
    """Await ``step``; fail at once, with the browser's output, if Chromium exits first."""
    assert browser.process is not None
    waiting = asyncio.ensure_future(step)
    exited = asyncio.ensure_future(browser.process.wait())
    try:
        await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        exited.cancel()
    if not waiting.done():
        waiting.cancel()
        raise AssertionError(f"chromium exited\n{browser_output(browser)}")
    try:
        return waiting.result()
    except AssertionError as error:
        raise AssertionError(f"{error}\n{browser_output(browser)}") from None


def browser_output(browser: Chromium) -> str:
    """The page's console lines (errors included), then the tail of Chromium's output."""
    log = browser.log_path
    text = log.read_text(errors="replace") if log is not None and log.exists() else ""
    console = [line for line in text.splitlines() if ":CONSOLE" in line]
    return (
        "--- page console ---\n"
        + ("\n".join(console) or "(nothing)")
        + f"\n--- chromium output ---\n{browser.log_tail()}"
    )


@pytest.mark.interop
async def test_the_page_chats_with_a_python_client(tmp_path: Path) -> None:
    tutorial = read_tutorial()
    write_files(tutorial, tmp_path, page_driver=PAGE_DRIVER)
    async with running(tmp_path) as runner:
        server, url, digest, page = await start_chat_server(runner)
        alice = await runner.start("chat_client.py", url, digest, "alice")
        await alice.expect("server: alice joined")

        async with Chromium(page, extra_args=["--enable-logging=stderr", "--v=0"]) as browser:
            await alive(browser, alice.expect("server: carol joined"))
            await alive(browser, alice.expect("carol: hello from the browser"))
            await alice.type("hello carol")
            await alive(browser, alice.expect("carol: the browser got: alice: hello carol"))

        await alice.finish()
        await server.finish(interrupt=True)
