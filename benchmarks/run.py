"""Run the benchmark workloads on the floor, on pywebtransport, and optionally on PyPI releases.

Each round runs, one after the other, the floor (``floor_aioquic.py``: raw aioquic), this
project's implementation (when ``pywebtransport`` imports), with ``--baseline-071`` the PyPI
release 0.7.1 from another virtualenv, and with ``--baseline-021`` the upstream PyPI release
0.21.1 (Rust core, Python 3.12) from the peers' virtualenv ``.venv/peers`` (made by
``scripts/peers-venv.sh`` when missing). Every run is a separate client process that spawns its
own server process, so client and server never share a core and no state survives between runs.
Then the medians over the rounds are printed with ratios to the floor (ratio > 1 means better than
the floor; for connect time the ratio is floor / implementation), and ours against each PyPI
release.

Usage::

    python benchmarks/run.py [--rounds 5] [--baseline-071 /tmp/pwt071-venv/bin/python]
                             [--baseline-021 [--python312 PYTHON]]
                             [--skip-ours] [--engines aioquic,qh3] [--json results.json]

``--engines`` runs pywebtransport once per QUIC engine named (client and server alike):
column ``ours`` is aioquic, ``ours-qh3`` is qh3.

Hidden sub-commands used by the rounds (pywebtransport's side of the workloads)::

    python benchmarks/run.py ours [--json] [--engine E]    # spawn an ours-server, run the workloads
    python benchmarks/run.py ours-server --cert C --key K [--engine E]    # prints READY <port>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
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

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
RUN_TIMEOUT = 600.0
"""Upper bound on one implementation's run (all three workloads, server start included)."""
METRICS = (
    ("connect_ms", "connect, median (ms)", "lower"),
    ("connect_cpu_ms", "connect client CPU (ms)", "lower"),
    ("stream_mib_s", "20 MiB echo (MiB/s)", "higher"),
    ("datagrams_per_s", "datagrams echoed (/s)", "higher"),
)


# ---------------------------------------------------------------------------------------------
# pywebtransport's side of the workloads (the public API of docs/contract-draft.md)
# ---------------------------------------------------------------------------------------------


def _echo_route() -> Any:
    """Return the library's echo handler, or a local one written on the public API."""
    try:
        from pywebtransport.server.echo import echo_handler
    except ImportError:
        return _local_echo
    return echo_handler


async def _local_echo(session: Any) -> None:
    """Echo bidirectional streams and datagrams (used when the library has no echo handler)."""
    from pywebtransport import WebTransportStream
    from pywebtransport.exceptions import WebTransportError

    async def stream_echo(stream: Any) -> None:
        try:
            while chunk := await stream.read(CHUNK):
                await stream.write(chunk)
            await stream.close()
        except WebTransportError:
            pass

    async def datagram_echo() -> None:
        try:
            while True:
                await session.datagrams.send(await session.datagrams.receive())
        except WebTransportError:
            pass

    tasks = {asyncio.create_task(datagram_echo())}
    try:
        async for stream in session.incoming_streams():
            if isinstance(stream, WebTransportStream):
                tasks.add(asyncio.create_task(stream_echo(stream)))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve_ours(host: str, certfile: str, keyfile: str, engine: str = "aioquic") -> None:
    """Run pywebtransport's echo server (route ``/echo``) until SIGINT/SIGTERM."""
    from pywebtransport import ServerApp, ServerConfig, WebTransportServer

    config = ServerConfig(certfile=certfile, keyfile=keyfile, host=host, port=0, engine=engine)
    app = ServerApp(config=config)
    app.route("/echo")(_echo_route())
    server = WebTransportServer(config=config, app=app)
    await server.listen(host=host, port=0)
    try:
        announce_ready(int(server.local_address[1]))
        await wait_for_termination()
    finally:
        await server.close()


async def workloads_ours(host: str, port: int, cafile: str, engine: str = "aioquic") -> Result:
    """Run the three workloads with pywebtransport's ``WebTransportClient``."""
    from pywebtransport import ClientConfig, WebTransportClient

    url = f"https://{host}:{port}/echo"
    config = ClientConfig(ca_certs=cafile, connect_timeout=STEP_TIMEOUT, engine=engine)
    samples: list[float] = []
    cpu: list[float] = []
    for _ in range(CONNECTS):
        async with asyncio.timeout(STEP_TIMEOUT), WebTransportClient(config=config) as client:
            start, start_cpu = time.perf_counter(), time.process_time()
            session = await client.connect(url=url)
            samples.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            await session.close()

    async with asyncio.timeout(STEP_TIMEOUT), WebTransportClient(config=config) as client:
        session = await client.connect(url=url)
        chunk = b"\x5a" * CHUNK
        start = time.perf_counter()
        stream = await session.create_bidirectional_stream()

        async def writer() -> None:
            for _ in range(STREAM_BYTES // CHUNK):
                await stream.write(chunk)
            await stream.close()

        async def reader() -> int:
            total = 0
            while data := await stream.read(CHUNK):
                total += len(data)
            return total

        _, echoed = await asyncio.gather(writer(), reader())
        elapsed = time.perf_counter() - start
        if echoed != STREAM_BYTES:
            raise RuntimeError(f"echoed {echoed} bytes instead of {STREAM_BYTES}")
        await session.close()

    async with asyncio.timeout(STEP_TIMEOUT), WebTransportClient(config=config) as client:
        session = await client.connect(url=url)
        datagrams = session.datagrams
        received, dg_elapsed, stalls = await run_datagram_echo(
            lambda data: datagrams.send(data), datagrams.receive
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


async def bench_ours(host: str, as_json: bool, engine: str = "aioquic") -> Result:
    """Spawn pywebtransport's server process and run the workloads against it.

    ``engine`` is the QUIC engine of both (``ClientConfig.engine``, ``ServerConfig.engine``).
    """
    with tempfile.TemporaryDirectory(prefix="ours-bench-") as tmp:
        cert = make_certificate(Path(tmp))
        argv = [sys.executable, __file__, "ours-server", "--host", host, "--engine", engine]
        argv += ["--cert", cert.certfile, "--key", cert.keyfile]
        async with spawn_server(argv) as port:
            result = await workloads_ours(host, port, cert.certfile, engine)
    emit(result, "pywebtransport", as_json)
    return result


# ---------------------------------------------------------------------------------------------
# The rounds and the table
# ---------------------------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    """Return the environment of pywebtransport's processes: ``src`` first on PYTHONPATH."""
    env = dict(os.environ)
    parts = [str(SRC), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env


def ours_available() -> str | None:
    """Return ``None`` when pywebtransport's public API imports, else the reason it does not."""
    probe = (
        "from pywebtransport import ClientConfig, ServerApp, ServerConfig, "
        "WebTransportClient, WebTransportServer"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if completed.returncode == 0:
        return None
    lines = completed.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {completed.returncode}"


def run_one(label: str, argv: list[str], env: dict[str, str] | None) -> Result | None:
    """Run one implementation's bench process and parse its JSON line; ``None`` on failure."""
    try:
        completed = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        sys.stdout.write(f"  {label}: no result within {RUN_TIMEOUT:.0f} s\n")
        return None
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith("{"):
            result = Result(**json.loads(line))
            sys.stdout.write(
                f"  {label:<14} connect {result.connect_ms:6.2f} ms "
                f"(cpu {result.connect_cpu_ms:5.2f})   "
                f"stream {result.stream_mib_s:6.1f} MiB/s   "
                f"datagrams {result.datagrams_per_s:7.0f}/s "
                f"({result.datagrams_received} echoed, {result.datagram_stalls} stalls)\n"
            )
            sys.stdout.flush()
            return result
    tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
    sys.stdout.write(f"  {label}: FAILED (exit {completed.returncode})\n{tail}\n")
    return None


def _median(results: list[Result | None], metric: str) -> float | None:
    values = [getattr(r, metric) for r in results if r is not None]
    return statistics.median(values) if values else None


def _ratio(value: float | None, floor: float | None, better: str) -> str:
    if value is None or floor is None or value == 0 or floor == 0:
        return "-"
    ratio = floor / value if better == "lower" else value / floor
    return f"{ratio:.2f}"


def print_table(runs: dict[str, list[Result | None]]) -> dict[str, dict[str, float | None]]:
    """Print medians and ratios to the floor; return the medians."""
    medians = {name: {m: _median(rs, m) for m, _, _ in METRICS} for name, rs in runs.items()}
    others = [name for name in runs if name != "floor"]
    width = {name: max(10, len(name) + 2) for name in others}
    header = f"{'workload':<26}{'floor':>10}"
    for name in others:
        header += f"{name:>{width[name]}}{name + '/floor':>{width[name] + 8}}"
    lines = [header, "-" * len(header)]
    for metric, title, better in METRICS:
        floor = medians["floor"][metric]
        row = f"{title:<26}{_fmt(floor):>10}"
        for name in others:
            value = medians[name][metric]
            row += f"{_fmt(value):>{width[name]}}"
            row += f"{_ratio(value, floor, better):>{width[name] + 8}}"
        lines.append(row)
    rounds = {name: sum(r is not None for r in rs) for name, rs in runs.items()}
    lines.append(
        "medians over rounds "
        + ", ".join(f"{name}: {count}/{len(runs[name])}" for name, count in rounds.items())
        + "; ratio > 1 = better than the floor (connect: floor/impl, others: impl/floor)"
    )
    sys.stdout.write("\n" + "\n".join(lines) + "\n")
    return medians


def print_versus(runs: dict[str, list[Result | None]], baselines: list[str]) -> None:
    """Print each of our columns (``ours``, ``ours-<engine>``) against each PyPI baseline.

    Ratio > 1: ours is better (connect times: baseline / ours, the others: ours / baseline).
    """
    mine = [name for name in runs if name == "ours" or name.startswith("ours-")]
    if not mine or not baselines:
        return
    medians = {name: {m: _median(rs, m) for m, _, _ in METRICS} for name, rs in runs.items()}
    for ours in mine:
        width = max(10, len(ours) + 2)
        header = f"{'workload':<26}{ours:>{width}}"
        for name in baselines:
            header += f"{name:>10}{ours + '/' + name:>{width + 8}}"
        lines = [header, "-" * len(header)]
        for metric, title, better in METRICS:
            value = medians[ours][metric]
            row = f"{title:<26}{_fmt(value):>{width}}"
            for name in baselines:
                reference = medians[name][metric]
                row += f"{_fmt(reference):>10}{_ratio(value, reference, better):>{width + 8}}"
            lines.append(row)
        lines.append(
            f"ratio > 1 = {ours} better (connect: baseline/{ours}, others: {ours}/baseline)"
        )
        sys.stdout.write("\n" + "\n".join(lines) + "\n")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def run_rounds(args: argparse.Namespace) -> int:
    """Run the interleaved rounds and print the summary table."""
    # The 0.7.1 process must not see ``src`` (it would import this tree instead of 0.7.1).
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "floor": ([sys.executable, str(HERE / "floor_aioquic.py"), "--json"], None),
    }
    if args.floor_asyncio:
        floor_asyncio = [sys.executable, str(HERE / "floor_aioquic.py"), "--io", "asyncio"]
        commands["floor-asyncio"] = ([*floor_asyncio, "--json"], None)
    if not args.skip_ours:
        reason = ours_available()
        if reason is None:
            for engine in args.engines.split(","):
                name = "ours" if engine == "aioquic" else f"ours-{engine}"
                argv = [sys.executable, __file__, "ours", "--json", "--engine", engine]
                commands[name] = (argv, _environment())
        else:
            sys.stdout.write(f"pywebtransport not benchmarked (import failed: {reason})\n")
    if args.baseline_071:
        commands["0.7.1"] = ([args.baseline_071, str(HERE / "baseline_071.py"), "--json"], None)
    if args.baseline_021:
        from baseline_021 import SetupError, ensure_venv

        try:
            python021 = ensure_venv(args.python312)
        except SetupError as exc:
            sys.stderr.write(f"run.py --baseline-021: {exc}\n")
            return 2
        # Like 0.7.1, it must not see ``src`` (nor anything else on PYTHONPATH).
        env021 = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        argv021 = [python021, str(HERE / "baseline_021.py"), "--json"]
        commands["0.21.1"] = (argv021, env021)
    runs: dict[str, list[Result | None]] = {name: [] for name in commands}
    for round_no in range(1, args.rounds + 1):
        sys.stdout.write(f"round {round_no}/{args.rounds}\n")
        for name, (argv, env) in commands.items():
            runs[name].append(run_one(name, argv, env))
    medians = print_table(runs)
    print_versus(runs, [name for name in ("0.7.1", "0.21.1") if name in runs])
    if args.json:
        raw = {n: [None if r is None else r.__dict__ for r in rs] for n, rs in runs.items()}
        Path(args.json).write_text(json.dumps({"medians": medians, "runs": raw}, indent=2))
    return 0 if all(any(r is not None for r in rs) for rs in runs.values()) else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="WebTransport benchmarks: floor vs. ours")
    parser.add_argument("--rounds", type=int, default=5, help="rounds to run (default 5)")
    parser.add_argument(
        "--baseline-071",
        metavar="PYTHON",
        help="python of a virtualenv with pywebtransport==0.7.1 (runs baseline_071.py)",
    )
    parser.add_argument(
        "--baseline-021",
        action="store_true",
        help="also run upstream pywebtransport==0.21.1 (baseline_021.py, in the Python 3.12 "
        "virtualenv .venv/peers that scripts/peers-venv.sh makes)",
    )
    parser.add_argument(
        "--python312",
        metavar="PYTHON",
        help="Python >= 3.12 to create the 0.21.1 virtualenv with (default: pyenv's 3.12)",
    )
    parser.add_argument("--skip-ours", action="store_true", help="do not run pywebtransport")
    parser.add_argument(
        "--engines",
        default="aioquic",
        help="QUIC engines to run pywebtransport on, comma-separated (aioquic, qh3; default "
        "aioquic): column ours (aioquic), ours-qh3 (qh3)",
    )
    parser.add_argument(
        "--floor-asyncio",
        action="store_true",
        help="also run the floor on aioquic.asyncio's own transport (one datagram per callback)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write medians and raw runs here")
    parser.add_argument("--host", default="127.0.0.1")
    commands = parser.add_subparsers(dest="command")
    ours = commands.add_parser("ours", help=argparse.SUPPRESS)
    ours.add_argument("--json", action="store_true")
    ours.add_argument("--host", default="127.0.0.1")
    ours.add_argument("--engine", default="aioquic")
    server = commands.add_parser("ours-server", help=argparse.SUPPRESS)
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--engine", default="aioquic")
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if args.command == "ours":
        asyncio.run(bench_ours(args.host, bool(args.json), args.engine))
        return 0
    if args.command == "ours-server":
        asyncio.run(serve_ours(args.host, args.cert, args.key, args.engine))
        return 0
    return run_rounds(args)


if __name__ == "__main__":
    sys.exit(main())
