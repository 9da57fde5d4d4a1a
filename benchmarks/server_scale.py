"""Server scale figures: sessions accepted per second by 1 and 2 workers, memory per idle session.

Usage::

    .venv/bin/python benchmarks/server_scale.py [--sessions 300] [--clients 2] [--concurrency 16]
        [--rounds 2] [--idle 1000] [--engines aioquic,qh3] [--json PATH]

- **Accept rate**: ``pywebtransport serve --workers W`` runs as a child process (W = 1, then 2,
  interleaved for ``--rounds``). ``--clients`` client processes (this script in ``client`` mode)
  each open ``--sessions`` sessions to ``/echo``, ``--concurrency`` at a time, every one on a
  fresh QUIC connection (handshake, extended CONNECT, ``200``), then close it. The rate is all
  sessions established / (last client end - first client start). The ratio is 2 workers / 1.
- **Idle memory**: one ``serve`` (one worker); after a warm-up of 50 sessions opened and closed,
  its RSS is read from ``/proc``; client processes open ``--idle`` sessions in total and keep them
  open; RSS is read again once all are open; the growth divided by ``--idle`` is the figure.

Server and clients are separate processes; on a 2-core machine 2 workers and 2 client processes
share the cores, so the ratio is bounded by the CPU left to the server (printed next to it).

``--engines`` (default ``aioquic``) lists the QUIC engines to measure (``serve --engine E``); the
client processes run on the same engine as the server. Rounds interleave the engines and the
worker counts; the idle memory figure is taken once per engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = str(ROOT / "src")
TIMEOUT = 120.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ----------------------------------------------------------------------------- client mode


async def _client_mode(
    port: int, hash_hex: str, count: int, concurrency: int, hold: bool, engine: str
) -> None:
    from pywebtransport import ClientConfig, WebTransportClient

    config = ClientConfig(
        server_certificate_hashes=[bytes.fromhex(hash_hex)], connect_timeout=30, engine=engine
    )
    url = f"https://127.0.0.1:{port}/echo"
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("READY", flush=True)
    await reader.readline()  # GO
    semaphore = asyncio.Semaphore(concurrency)
    sessions: list[Any] = []
    failures = 0

    async with WebTransportClient(config=config) as client:

        async def one() -> None:
            nonlocal failures
            async with semaphore:
                try:
                    session = await client.connect(url=url)
                except Exception:
                    failures += 1
                    return
                if hold:
                    sessions.append(session)
                else:
                    await session.close()

        started = time.time()
        await asyncio.gather(*(one() for _ in range(count)))
        ended = time.time()
        result = {"start": started, "end": ended, "ok": count - failures, "failed": failures}
        print("DONE " + json.dumps(result), flush=True)
        if hold:
            await reader.readline()  # CLOSE
            for session in sessions:
                await session.close()


# ----------------------------------------------------------------------------- driver


class Serve:
    def __init__(
        self,
        process: asyncio.subprocess.Process,
        port: int,
        hash_hex: str,
        pids: list[int],
        engine: str,
    ) -> None:
        self.process, self.port, self.hash_hex, self.pids = process, port, hash_hex, pids
        self.engine = engine

    @classmethod
    async def start(cls, workers: int, engine: str = "aioquic") -> Serve:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "pywebtransport", "serve", "--port", "0", "--http-port", "0"),
            *("--workers", str(workers), "--engine", engine),
            stdout=asyncio.subprocess.PIPE,
            env=_env(),
        )
        assert process.stdout is not None
        pids = []
        async with asyncio.timeout(TIMEOUT):
            while not (line := (await process.stdout.readline()).decode()).startswith("READY"):
                if not line:
                    raise RuntimeError("serve exited before READY")
                if line.startswith("WORKER "):
                    pids.append(int(line.split("pid=")[1].split()[0]))
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        return cls(process, int(fields["udp"]), fields["hash"], pids or [process.pid], engine)

    def cpu_seconds(self) -> float:
        """User + system CPU of the processes that serve the port (the workers, or serve)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    async def stop(self) -> list[str]:
        self.process.terminate()
        async with asyncio.timeout(TIMEOUT):
            out, _ = await self.process.communicate()
        return [line for line in out.decode().splitlines() if line.startswith("WORKER-EXIT")]


async def _clients(
    serve: Serve, *, clients: int, count: int, concurrency: int, hold: bool
) -> tuple[list[asyncio.subprocess.Process], list[dict[str, Any]]]:
    procs = []
    for _ in range(clients):
        procs.append(
            await asyncio.create_subprocess_exec(
                *(sys.executable, __file__, "client", str(serve.port), serve.hash_hex),
                *(str(count), str(concurrency), "hold" if hold else "close", serve.engine),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=_env(),
            )
        )
    async with asyncio.timeout(TIMEOUT):
        for proc in procs:
            assert proc.stdout is not None
            assert (await proc.stdout.readline()).startswith(b"READY")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")
        results = []
        for proc in procs:
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode()
            if not line.startswith("DONE "):
                raise RuntimeError(f"client failed: {line!r}")
            results.append(json.loads(line[5:]))
    return procs, results


async def _finish(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"CLOSE\n")
        proc.stdin.close()
    async with asyncio.timeout(TIMEOUT):
        for proc in procs:
            await proc.wait()


async def accept_rate(
    workers: int, engine: str, args: argparse.Namespace
) -> tuple[float, float, int, list[str]]:
    serve = await Serve.start(workers, engine)
    try:
        cpu_before = serve.cpu_seconds()
        procs, results = await _clients(
            serve,
            clients=args.clients,
            count=args.sessions,
            concurrency=args.concurrency,
            hold=False,
        )
        cpu = serve.cpu_seconds() - cpu_before
        await _finish(procs)
    finally:
        exits = await serve.stop()
    ok = sum(r["ok"] for r in results)
    failed = sum(r["failed"] for r in results)
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    return ok / elapsed, cpu * 1e3 / max(ok, 1), failed, exits


async def idle_memory(engine: str, args: argparse.Namespace) -> dict[str, float]:
    serve = await Serve.start(1, engine)
    try:
        procs, _ = await _clients(serve, clients=1, count=50, concurrency=10, hold=False)
        await _finish(procs)
        before = serve.rss_kib()
        per_client = args.idle // args.clients
        procs, results = await _clients(
            serve, clients=args.clients, count=per_client, concurrency=args.concurrency, hold=True
        )
        opened = sum(r["ok"] for r in results)
        after = serve.rss_kib()
        await _finish(procs)
    finally:
        await serve.stop()
    return {
        "rss_before_kib": before,
        "rss_after_kib": after,
        "sessions": opened,
        "kib_per_session": (after - before) / opened,
    }


async def main(args: argparse.Namespace) -> None:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    rates: dict[str, dict[int, list[float]]] = {e: {1: [], 2: []} for e in engines}
    cpu_ms: dict[str, dict[int, list[float]]] = {e: {1: [], 2: []} for e in engines}
    for round_ in range(args.rounds):
        for engine in engines:
            for workers in (1, 2):
                rate, cpu, failed, exits = await accept_rate(workers, engine, args)
                rates[engine][workers].append(rate)
                cpu_ms[engine][workers].append(cpu)
                spread = " ".join(e.split()[4] for e in exits)
                print(
                    f"round {round_ + 1} engine={engine} workers={workers}: {rate:,.0f} "
                    f"sessions/s, server CPU {cpu:.2f} ms/session (failed {failed}) {spread}",
                    flush=True,
                )
    memory: dict[str, dict[str, float]] = {}
    for engine in engines:
        one, two = statistics.median(rates[engine][1]), statistics.median(rates[engine][2])
        print(f"[{engine}] accept rate, 1 worker : {one:,.0f} sessions/s (median of {args.rounds})")
        print(f"[{engine}] accept rate, 2 workers: {two:,.0f} sessions/s (median of {args.rounds})")
        print(
            f"[{engine}] ratio 2/1: {two / one:.2f} "
            f"(cores: {os.cpu_count()}, client processes: {args.clients})"
        )
        for workers in (1, 2):
            cpu = statistics.median(cpu_ms[engine][workers])
            print(
                f"[{engine}] server CPU per accepted session, {workers} worker(s): {cpu:.2f} ms"
                f" (one core: {1e3 / cpu:,.0f} sessions/s)"
            )
        memory[engine] = await idle_memory(engine, args)
        m = memory[engine]
        print(
            f"[{engine}] idle sessions: {m['sessions']:.0f} open, server RSS "
            f"{m['rss_before_kib']:,.0f} -> {m['rss_after_kib']:,.0f} KiB, "
            f"{m['kib_per_session']:.1f} KiB per session",
            flush=True,
        )
    if args.json:
        _write_json(args.json, {"rates": rates, "cpu_ms": cpu_ms, "memory": memory})


def _write_json(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=1))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=300, help="sessions per client process")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=16, help="connects in flight per client")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--idle", type=int, default=1000, help="idle sessions for the memory figure"
    )
    parser.add_argument(
        "--engines", default="aioquic", help="comma-separated QUIC engines: aioquic,qh3"
    )
    parser.add_argument("--json")
    return parser.parse_args()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        port, hash_hex, count, concurrency, mode, engine = sys.argv[2:8]
        asyncio.run(
            _client_mode(int(port), hash_hex, int(count), int(concurrency), mode == "hold", engine)
        )
    else:
        asyncio.run(main(_parse()))
