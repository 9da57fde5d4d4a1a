"""The three benchmark workloads on the upstream PyPI release ``pywebtransport==0.21.1``.

0.21.1 is a different stack from this tree: a Rust core on quinn behind an asyncio API, draft-15
WebTransport only, Python >= 3.12. It therefore runs from a virtualenv of its own, which this
module creates once (``setup``, or on first use from ``run.py --baseline-021``)::

    .venv/bin/python benchmarks/baseline_021.py setup [--python312 PYTHON]   # prints its python
    .venv/bin/python benchmarks/baseline_021.py [--json]       # re-runs itself in that virtualenv

The virtualenv lives in ``~/.cache/pywebtransport-benchmarks/pwt021-venv`` (``$XDG_CACHE_HOME``
is honoured; ``--venv DIR`` or ``$PWT021_VENV`` override it), outside the repository, and holds
``pywebtransport==0.21.1`` and ``cryptography`` (for the shared certificate helper). The
interpreter is ``--python312`` (or ``$PYTHON312``), else a 3.12 that pyenv knows, else
``python3.12`` on ``PATH``.

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
import shutil
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
REQUIREMENTS = (f"pywebtransport=={VERSION}", "cryptography")
MIN_PYTHON = (3, 12)
SETUP_TIMEOUT = 600.0
"""Upper bound on creating the virtualenv and installing into it."""


# ---------------------------------------------------------------------------------------------
# The virtualenv (runs under any Python, e.g. this project's .venv)
# ---------------------------------------------------------------------------------------------


class SetupError(RuntimeError):
    """The 0.21.1 virtualenv could not be found or created (the message says why)."""


def default_venv() -> Path:
    """Return where the 0.21.1 virtualenv is cached (outside the repository)."""
    if override := os.environ.get("PWT021_VENV"):
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "pywebtransport-benchmarks" / "pwt021-venv"


def _python_version(python: str) -> tuple[int, int] | None:
    """Return ``(major, minor)`` of an interpreter, or ``None`` when it does not run."""
    try:
        completed = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = completed.stdout.split()
    if completed.returncode != 0 or len(words) != 2:
        return None
    return int(words[0]), int(words[1])


def _pyenv_candidates() -> list[str]:
    """Return the Python 3.12 interpreters pyenv knows, newest first."""
    found: list[str] = []
    pyenv = shutil.which("pyenv") or str(Path.home() / ".pyenv" / "bin" / "pyenv")
    if Path(pyenv).is_file():
        try:
            versions = subprocess.run(
                [pyenv, "versions", "--bare"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            versions = []
        for version in sorted((v for v in versions if v.startswith("3.12")), reverse=True):
            env = dict(os.environ, PYENV_VERSION=version)
            try:
                completed = subprocess.run(
                    [pyenv, "which", "python3.12"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
            if completed.returncode == 0 and completed.stdout.strip():
                found.append(completed.stdout.strip())
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found += [str(p) for p in sorted(root.glob("versions/3.12*/bin/python3.12"), reverse=True)]
    return found


def find_python312(explicit: str | None = None) -> str:
    """Return a Python >= 3.12 to build the virtualenv with, or raise :class:`SetupError`.

    Args:
        explicit: ``--python312``; when given it is the only candidate (``$PYTHON312`` likewise).
    """
    explicit = explicit or os.environ.get("PYTHON312")
    if explicit:
        candidates = [shutil.which(explicit) or explicit]
    else:
        candidates = _pyenv_candidates()
        if on_path := shutil.which("python3.12"):
            candidates.append(on_path)
    for candidate in candidates:
        version = _python_version(candidate)
        if version is not None and version >= MIN_PYTHON:
            return candidate
    if explicit:
        raise SetupError(
            f"--python312 {explicit}: not a runnable Python >= 3.12 "
            f"(pywebtransport {VERSION} needs Python >= 3.12)"
        )
    raise SetupError(
        f"no Python 3.12 found for the pywebtransport {VERSION} baseline (it needs Python >= "
        "3.12): looked in pyenv (`pyenv versions`, ~/.pyenv/versions/3.12*) and for python3.12 "
        "on PATH; install one (e.g. `pyenv install 3.12`) or pass --python312 /path/to/python3.12"
    )


def _venv_ready(python: Path) -> bool:
    """Return True when ``python`` runs and imports 0.21.1 and cryptography."""
    if not python.is_file():
        return False
    probe = (
        "import cryptography, pywebtransport, sys; "
        f"sys.exit(pywebtransport.__version__ != {VERSION!r})"
    )
    try:
        completed = subprocess.run(
            [str(python), "-c", probe], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0


def ensure_venv(python312: str | None = None, venv: Path | None = None) -> str:
    """Return the Python of the 0.21.1 virtualenv, creating it first when needed.

    Args:
        python312: The interpreter to create it with (default: :func:`find_python312`).
        venv: Its directory (default: :func:`default_venv`).

    Raises:
        SetupError: No Python >= 3.12, or ``venv``/``pip install`` failed (with pip's output).
    """
    venv = venv or default_venv()
    python = venv / "bin" / "python"
    if _venv_ready(python):
        return str(python)
    base = find_python312(python312)
    venv.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.write(f"creating the pywebtransport {VERSION} virtualenv {venv} with {base}\n")
    steps = (
        [base, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
    )
    for step in steps:
        try:
            completed = subprocess.run(
                step, capture_output=True, text=True, timeout=SETUP_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SetupError(f"{' '.join(step)}: no result within {SETUP_TIMEOUT:.0f} s") from exc
        if completed.returncode != 0:
            tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-15:])
            raise SetupError(f"{' '.join(step)} failed (exit {completed.returncode}):\n{tail}")
    if not _venv_ready(python):
        raise SetupError(f"{venv}: pywebtransport {VERSION} does not import after installation")
    return str(python)


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
    parser.add_argument("--python312", metavar="PYTHON", help="Python >= 3.12 for the virtualenv")
    parser.add_argument("--venv", metavar="DIR", type=Path, help="the virtualenv's directory")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("setup", help="create the 0.21.1 virtualenv if needed, print its python")
    server = commands.add_parser("server", help=f"run the {VERSION} echo server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if args.command == "setup" or not _is_baseline_python():
        try:
            python = ensure_venv(args.python312, args.venv)
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
