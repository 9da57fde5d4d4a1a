"""Server scale figures: sessions accepted per second by 1 and 2 workers, memory per idle session.

Usage::

    .venv/bin/python benchmarks/server_scale.py [--sessions 300] [--clients 2] [--concurrency 16]
        [--rounds 2] [--idle 1000] [--json PATH]

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


async def _client_mode(port: int, hash_hex: str, count: int, concurrency: int, hold: bool) -> None:
    from pywebtransport import ClientConfig, WebTransportClient

    config = ClientConfig(server_certificate_hashes=[bytes.fromhex(hash_hex)], connect_timeout=30)
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
        self, process: asyncio.subprocess.Process, port: int, hash_hex: str, pids: list[int]
    ) -> None:
        self.process, self.port, self.hash_hex, self.pids = process, port, hash_hex, pids

    @classmethod
    async def start(cls, workers: int) -> Serve:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "pywebtransport", "serve", "--port", "0", "--http-port", "0"),
            *("--workers", str(workers)),
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
        return cls(process, int(fields["udp"]), fields["hash"], pids or [process.pid])

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
                *(str(count), str(concurrency), "hold" if hold else "close"),
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
    workers: int, args: argparse.Namespace
) -> tuple[float, float, int, list[str]]:
    serve = await Serve.start(workers)
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


async def idle_memory(args: argparse.Namespace) -> dict[str, float]:
    serve = await Serve.start(1)
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
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu_ms: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(args.rounds):
        for workers in (1, 2):
            rate, cpu, failed, exits = await accept_rate(workers, args)
            rates[workers].append(rate)
            cpu_ms[workers].append(cpu)
            spread = " ".join(e.split()[4] for e in exits)
            print(
                f"round {round_ + 1} workers={workers}: {rate:,.0f} sessions/s, server CPU "
                f"{cpu:.2f} ms/session (failed {failed}) {spread}",
                flush=True,
            )
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"accept rate, 1 worker : {one:,.0f} sessions/s (median of {args.rounds})")
    print(f"accept rate, 2 workers: {two:,.0f} sessions/s (median of {args.rounds})")
    print(f"ratio 2/1: {two / one:.2f} (cores: {os.cpu_count()}, client processes: {args.clients})")
    cpu = statistics.median(cpu_ms[1] + cpu_ms[2])
    print(f"server CPU per accepted session: {cpu:.2f} ms (one core: {1e3 / cpu:,.0f} sessions/s)")
    memory = await idle_memory(args)
    print(
        f"idle sessions: {memory['sessions']:.0f} open, server RSS {memory['rss_before_kib']:,.0f}"
        f" -> {memory['rss_after_kib']:,.0f} KiB, {memory['kib_per_session']:.1f} KiB per session"
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
    parser.add_argument("--json")
    return parser.parse_args()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        port, hash_hex, count, concurrency, mode = sys.argv[2:7]
        asyncio.run(_client_mode(int(port), hash_hex, int(count), int(concurrency), mode == "hold"))
    else:
        asyncio.run(main(_parse()))
