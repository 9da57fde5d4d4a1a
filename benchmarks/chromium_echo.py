"""Headless Chromium against ``pywebtransport serve``: stream echo MiB/s and datagram echo rate.

Usage::

    .venv/bin/python benchmarks/chromium_echo.py [--engines aioquic,qh3] [--rounds 3]
        [--size-mib 20] [--datagrams 2000] [--datagram-size 1000] [--in-flight 64] [--json PATH]

Each run starts ``pywebtransport serve --engine E`` (one worker) and a fresh headless Chromium
(``tests/interop/chromium.py``) on a page that opens a session to ``/echo`` and then:

- **stream echo**: writes ``--size-mib`` MiB on one bidirectional stream (64 KiB writes, then
  FIN) while reading the echo back; MiB/s = size / (last echoed byte - first write);
- **datagrams**: sends ``--datagrams`` datagrams of ``--datagram-size`` bytes, at most
  ``--in-flight`` not yet echoed; a datagram not echoed within 250 ms of the last echo counts as
  lost (it frees its slot); datagrams/s = echoes received / elapsed. The page raises the
  readable's ``incomingHighWaterMark`` to ``--in-flight``: with Chromium's default, a burst of
  echoes the page has not read yet is dropped in the browser (62 of the first 64).

Around each phase the page POSTs a mark; at each mark the driver reads the CPU time (utime +
stime, ``/proc``) of the server process and of the Chromium process tree (browser, network
service, renderer), so each phase gets CPU seconds per side; the side near one core is the limit.
Rounds interleave the engines; the figures are medians.
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
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.interop.chromium import Chromium, load_page  # noqa: E402

from pywebtransport.web import PageServer  # noqa: E402

TIMEOUT = 180.0
TICKS = os.sysconf("SC_CLK_TCK")

PAGE = b"""<!doctype html>
<html><body><pre id="log"></pre>
<script src="/common.js"></script>
<script>
"use strict";
const mark = (name) => fetch("/mark", { method: "POST", body: JSON.stringify(name) });

async function streamEcho(wt, size) {
  const payload = new Uint8Array(size);
  for (let i = 0; i < size; i++) payload[i] = (i * 13 + 7) & 0xff;
  const stream = await wt.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  const started = performance.now();
  const reading = (async () => {
    let n = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return n;
      n += value.length;
    }
  })();
  for (let offset = 0; offset < size; offset += 65536) {
    await writer.write(payload.subarray(offset, offset + 65536));
  }
  await writer.close();
  const echoed = await reading;
  return { bytes: echoed, ms: performance.now() - started };
}

async function datagrams(wt, count, size, inFlight) {
  const writer = wt.datagrams.writable.getWriter();
  // Chromium drops echoes the page has not read yet beyond this mark (a small default).
  wt.datagrams.incomingHighWaterMark = Math.max(inFlight, wt.datagrams.incomingHighWaterMark);
  const reader = wt.datagrams.readable.getReader();
  const data = new Uint8Array(size).fill(42);
  let sent = 0, received = 0, lost = 0;
  let pending = null;
  const started = performance.now();
  while (received + lost < count) {
    while (sent < count && sent - received - lost < inFlight) {
      await writer.write(data);
      sent += 1;
    }
    if (pending === null) pending = reader.read();
    let timer;
    const expiry = new Promise((resolve) => { timer = setTimeout(() => resolve(null), 250); });
    const got = await Promise.race([pending, expiry]);
    clearTimeout(timer);
    if (got === null) {
      lost = sent - received;
    } else {
      pending = null;
      if (got.done) throw new Error("datagram stream ended");
      received += 1;
    }
  }
  return { received, lost, ms: performance.now() - started };
}

async function main() {
  try {
    const config = await (await fetch("/config.json")).json();
    const wt = new WebTransport(config.url, {
      serverCertificateHashes: [{ algorithm: "sha-256", value: hexToBytes(config.hash) }],
    });
    wt.closed.catch(() => {});
    await withTimeout(wt.ready, 20000, "ready");
    await mark("start");
    const echo = await streamEcho(wt, config.size);
    await mark("echo");
    const dgram = await datagrams(wt, config.datagrams, config.datagramSize, config.inFlight);
    await mark("datagrams");
    await fetch("/report", { method: "POST", body: JSON.stringify({ ok: true, echo, dgram }) });
    wt.close();
  } catch (error) {
    const report = JSON.stringify({ ok: false, error: String(error) });
    await fetch("/report", { method: "POST", body: report });
  }
}
main();
</script></body></html>
"""


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and all its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    total = 0.0
    for pid in tree:
        try:
            total += _cpu(pid)
        except (OSError, ValueError):
            continue
    return total


async def _start_serve(engine: str) -> tuple[asyncio.subprocess.Process, int, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pywebtransport", "serve", "--port", "0", "--http-port", "0"),
        *("--engine", engine),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        while not (line := (await process.stdout.readline()).decode()).startswith("READY"):
            if not line:
                raise RuntimeError("serve exited before READY")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return process, int(fields["udp"]), fields["hash"]


async def one_run(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    serve, port, hash_hex = await _start_serve(engine)
    marks: dict[str, tuple[float, float, float]] = {}
    browser: Chromium | None = None

    async def on_mark(name: Any) -> None:
        assert browser is not None and browser.process is not None
        marks[str(name)] = (time.monotonic(), _cpu(serve.pid), _tree_cpu(browser.process.pid))

    config = {
        "url": f"https://127.0.0.1:{port}/echo",
        "hash": hash_hex,
        "size": args.size_mib << 20,
        "datagrams": args.datagrams,
        "datagramSize": args.datagram_size,
        "inFlight": args.in_flight,
    }
    try:
        async with PageServer() as pages:
            pages.add_get("/", PAGE)
            pages.add_get("/common.js", load_page("common.js"), content_type="text/javascript")
            pages.add_get(
                "/config.json", json.dumps(config).encode(), content_type="application/json"
            )
            pages.add_post("/report")
            pages.add_post("/mark", on_mark)
            async with Chromium(pages.url) as browser:
                report = await browser.wait_for_post(pages, "/report", timeout=TIMEOUT)
    finally:
        serve.terminate()
        await serve.wait()
    if not report.get("ok"):
        raise RuntimeError(f"page failed: {report}")

    def phase(a: str, b: str) -> dict[str, float]:
        return {
            "wall": marks[b][0] - marks[a][0],
            "server_cpu": marks[b][1] - marks[a][1],
            "chromium_cpu": marks[b][2] - marks[a][2],
        }

    echo, dgram = report["echo"], report["dgram"]
    return {
        "mib_s": echo["bytes"] / (1 << 20) / (echo["ms"] / 1e3),
        "echoed": echo["bytes"],
        "echo": phase("start", "echo"),
        "dgram_s": dgram["received"] / (dgram["ms"] / 1e3),
        "dgram_lost": dgram["lost"],
        "datagrams": phase("echo", "datagrams"),
    }


def _share(phase: dict[str, float]) -> str:
    return (
        f"server CPU {phase['server_cpu'] / phase['wall']:.0%} of a core, "
        f"Chromium {phase['chromium_cpu'] / phase['wall']:.0%}"
    )


async def main(args: argparse.Namespace) -> None:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    results: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    for round_ in range(args.rounds):
        for engine in engines:
            r = await one_run(engine, args)
            results[engine].append(r)
            print(
                f"round {round_ + 1} {engine}: echo {r['mib_s']:.1f} MiB/s ({_share(r['echo'])}); "
                f"datagrams {r['dgram_s']:,.0f}/s lost {r['dgram_lost']} "
                f"({_share(r['datagrams'])})",
                flush=True,
            )
    for engine in engines:
        runs = results[engine]

        def med(key: str, phase: str | None = None, runs: list[dict[str, Any]] = runs) -> float:
            if phase is None:
                return float(statistics.median(r[key] for r in runs))
            return float(statistics.median(r[phase][key] / r[phase]["wall"] for r in runs))

        print(
            f"[{engine}] stream echo {med('mib_s'):.1f} MiB/s (server "
            f"{med('server_cpu', 'echo'):.0%}, Chromium {med('chromium_cpu', 'echo'):.0%} of a "
            f"core); datagrams {med('dgram_s'):,.0f}/s (server "
            f"{med('server_cpu', 'datagrams'):.0%}, Chromium "
            f"{med('chromium_cpu', 'datagrams'):.0%}); medians of {len(runs)}"
        )
    if args.json:
        _write_json(args.json, results)


def _write_json(path: str, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=1))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engines", default="aioquic,qh3")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=20)
    parser.add_argument("--datagrams", type=int, default=2000)
    parser.add_argument("--datagram-size", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--json")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_parse()))
