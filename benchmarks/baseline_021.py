"""The three benchmark workloads on the upstream PyPI release ``pywebtransport==0.21.1``.

0.21.1 is a different stack from this tree: a Rust core on quinn behind an asyncio API, draft-15
WebTransport only, Python >= 3.12. It therefore runs from the peers' virtualenv, ``.venv/peers``,
which ``scripts/peers-venv.sh`` makes (the interop tests use it too; it holds
``pywebtransport==0.21.1`` and ``cryptography``, for the shared certificate helper)::

    .venv/bin/python benchmarks/baseline_021.py setup [--python312 PYTHON]   # prints its python
    .venv/bin/python benchmarks/baseline_021.py [--json]       # re-runs itself in that virtualenv

The interpreter it is made with is ``--python312`` (or ``$PYTHON312``), else a 3.12 that pyenv
knows, else ``python3.12`` on ``PATH``.

Both ends are 0.21.1: the server is ``WebTransportServer`` + ``incoming_connections()`` +
``incoming_sessions()`` (0.21.1 has no ``ServerApp``; ``/echo`` is accepted, anything else is
rejected with 404) and echoes bidirectional streams and datagrams; the client is 0.21.1's
``WebTransportClient``. The workloads and the measurement are those of ``floor_aioquic.py``
(whose standard-library helpers it imports). Both ends use 0.21.1's default configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from floor_aioquic import (
    CHUNK,
    CONNECTS,
    STEP_TIMEOUT,
    STREAM_BYTES,
    Result,
    announce_ready,
    emit,
    make_certificate,
    median_ms,
    run_datagram_echo,
    spawn_server,
    wait_for_termination,
)

VERSION = "0.21.1"
MIN_PYTHON = (3, 12)
SETUP_TIMEOUT = 600.0
"""Upper bound on creating the virtualenv and installing into it."""
ROOT = Path(__file__).resolve().parent.parent
PEERS_VENV_SCRIPT = ROOT / "scripts" / "peers-venv.sh"
PEERS_PYTHON = ROOT / ".venv" / "peers" / "bin" / "python"


# ---------------------------------------------------------------------------------------------
# The virtualenv (runs under any Python, e.g. this project's .venv)
# ---------------------------------------------------------------------------------------------


class SetupError(RuntimeError):
    """The 0.21.1 virtualenv could not be found or created (the message says why)."""


def ensure_venv(python312: str | None = None) -> str:
    """Return the Python of the peers' virtualenv (``.venv/peers``), creating it when needed.

    ``scripts/peers-venv.sh`` makes it (the interop tests use the same one): Python 3.12 with
    pywebtransport 0.21.1 and cryptography among the peers it holds.

    Args:
        python312: The interpreter to create it with (``$PYTHON312`` for the script; default:
            the script's search: pyenv, then ``python3.12`` on ``PATH``).

    Raises:
        SetupError: The script failed (its messages are in the error).
    """
    env = dict(os.environ)
    if python312:
        env["PYTHON312"] = python312
    try:
        completed = subprocess.run(
            ["bash", str(PEERS_VENV_SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"{PEERS_VENV_SCRIPT}: no result within {SETUP_TIMEOUT:.0f} s") from exc
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise SetupError(f"{PEERS_VENV_SCRIPT} failed (exit {completed.returncode}):\n{tail}")
    return str(PEERS_PYTHON)


def _is_baseline_python() -> bool:
    """Return True when this interpreter has pywebtransport 0.21.1 (and not this tree's)."""
    if sys.version_info < MIN_PYTHON:
        return False
    try:
        module = importlib.import_module("pywebtransport")
    except ImportError:
        return False
    return getattr(module, "__version__", None) == VERSION


# ---------------------------------------------------------------------------------------------
# The workloads (run by the virtualenv's Python)
# ---------------------------------------------------------------------------------------------


def _pwt() -> Any:
    """Import pywebtransport 0.21.1 (typed as ``Any``: its API is not this tree's)."""
    module = importlib.import_module("pywebtransport")
    version = getattr(module, "__version__", "?")
    if version != VERSION:
        raise SystemExit(f"baseline_021.py needs pywebtransport {VERSION}, found {version}")
    return module


def _free_udp_port(host: str) -> int:
    """Return a UDP port that is free right now (0.21.1's ServerConfig rejects port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _echo_stream(stream: Any) -> None:
    """Echo one bidirectional stream chunk by chunk, then FIN (not ``close()``: STOP_SENDING)."""
    with contextlib.suppress(Exception):
        while data := await stream.read(max_size=CHUNK):
            await stream.write(data=data)
        await stream.write(data=b"", end_stream=True)


async def _echo_datagrams(session: Any) -> None:
    """Echo datagrams until the session ends."""
    with contextlib.suppress(Exception):
        while True:
            data = await session.read_datagram()
            await session.send_datagram(data=data)


async def _echo_session(session: Any) -> None:
    """Echo every bidirectional stream and every datagram of one accepted session."""
    tasks = {asyncio.create_task(_echo_datagrams(session))}
    try:
        async for stream in session.incoming_bidirectional_streams():
            tasks.add(asyncio.create_task(_echo_stream(stream)))
    except Exception:  # the session ended under the iterator
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _serve_connection(connection: Any, tasks: set[asyncio.Task[None]]) -> None:
    """Accept the ``/echo`` sessions of one connection (404 for any other path)."""
    with contextlib.suppress(Exception):
        async for session in connection.incoming_sessions():
            if session.path != "/echo":
                await session.reject(status_code=404)
                continue
            await session.accept()
            task = asyncio.create_task(_echo_session(session))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def serve_021(host: str, certfile: str, keyfile: str) -> None:
    """Run the 0.21.1 echo server until SIGINT/SIGTERM, after printing ``READY <port>``."""
    pwt = _pwt()
    port = _free_udp_port(host)
    config = pwt.ServerConfig(certfile=certfile, keyfile=keyfile, bind_host=host, bind_port=port)
    tasks: set[asyncio.Task[None]] = set()

    async def accept_connections() -> None:
        async for connection in server.incoming_connections():
            task = asyncio.create_task(_serve_connection(connection, tasks))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async with pwt.WebTransportServer(config=config) as server:
        await server.listen()
        accepting = asyncio.create_task(accept_connections())
        try:
            announce_ready(int(server.local_addresses[0][1]))
            await wait_for_termination()
        finally:
            accepting.cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(accepting, *tasks, return_exceptions=True)


async def workloads_021(host: str, port: int, cafile: str) -> Result:
    """Run the three workloads with the 0.21.1 client (a fresh client per connect)."""
    pwt = _pwt()
    url = f"https://{host}:{port}/echo"
    config = pwt.ClientConfig(ca_certs=cafile, connect_timeout=STEP_TIMEOUT)
    samples: list[float] = []
    cpu: list[float] = []
    for _ in range(CONNECTS):
        async with asyncio.timeout(STEP_TIMEOUT), pwt.WebTransportClient(config=config) as client:
            start, start_cpu = time.perf_counter(), time.process_time()
            session = await client.connect(url=url)
            samples.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            await session.close()

    async with asyncio.timeout(STEP_TIMEOUT), pwt.WebTransportClient(config=config) as client:
        session = await client.connect(url=url)
        chunk = b"\x5a" * CHUNK
        start = time.perf_counter()
        stream = await session.create_bidirectional_stream()

        async def writer() -> None:
            for _ in range(STREAM_BYTES // CHUNK):
                await stream.write(data=chunk)
            await stream.write(data=b"", end_stream=True)

        async def reader() -> int:
            total = 0
            while data := await stream.read(max_size=CHUNK):
                total += len(data)
            return total

        _, echoed = await asyncio.gather(writer(), reader())
        elapsed = time.perf_counter() - start
        if echoed != STREAM_BYTES:
            raise RuntimeError(f"echoed {echoed} bytes instead of {STREAM_BYTES}")
        await session.close()

    async with asyncio.timeout(STEP_TIMEOUT), pwt.WebTransportClient(config=config) as client:
        session = await client.connect(url=url)
        received, dg_elapsed, stalls = await run_datagram_echo(
            lambda data: session.send_datagram(data=data), session.read_datagram
        )
        await session.close()

    return Result(
        connect_ms=median_ms(samples),
        connect_cpu_ms=median_ms(cpu),
        stream_mib_s=(STREAM_BYTES / (1 << 20)) / elapsed,
        datagrams_per_s=received / dg_elapsed,
        datagrams_received=received,
        datagram_stalls=stalls,
    )


async def bench(host: str, as_json: bool) -> Result:
    """Spawn a 0.21.1 server process, run the workloads against it, print and return them."""
    with tempfile.TemporaryDirectory(prefix="pwt021-bench-") as tmp:
        cert = make_certificate(Path(tmp))
        argv = [sys.executable, __file__, "server", "--host", host]
        argv += ["--cert", cert.certfile, "--key", cert.keyfile]
        async with spawn_server(argv) as port:
            result = await workloads_021(host, port, cert.certfile)
    emit(result, f"pywebtransport {VERSION}", as_json)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``[--json]`` (bench), ``setup`` or ``server --cert C --key K``."""
    parser = argparse.ArgumentParser(description=f"Benchmark workloads on pywebtransport {VERSION}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--python312", metavar="PYTHON", help="Python 3.12 for the virtualenv")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("setup", help="create the 0.21.1 virtualenv if needed, print its python")
    server = commands.add_parser("server", help=f"run the {VERSION} echo server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if args.command == "setup" or not _is_baseline_python():
        try:
            python = ensure_venv(args.python312)
        except SetupError as exc:
            sys.stderr.write(f"baseline_021.py: {exc}\n")
            return 2
        if args.command == "setup":
            sys.stdout.write(python + "\n")
            return 0
        # Not 0.21.1's interpreter: run the same command line again in the virtualenv.
        os.execv(python, [python, __file__, *(sys.argv[1:] if argv is None else argv)])
    if args.command == "server":
        asyncio.run(serve_021(args.host, args.cert, args.key))
    else:
        asyncio.run(bench(args.host, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
