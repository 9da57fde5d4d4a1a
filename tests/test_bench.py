"""``pywebtransport bench`` against a server on loopback in this process.

The command runs in a worker thread (``main`` starts its own event loop there) while the
test's loop serves the routes: ``/echo``, and routes that break the echo on purpose: ``/half``
echoes only the datagrams with an even sequence number, ``/mute`` echoes nothing, ``/garble``
echoes streams with their first byte changed.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pywebtransport import ClientConfig, WebTransportClient, WebTransportServer, WebTransportSession
from pywebtransport.bench import WORKLOADS, BenchOptions, parse_workloads, run_bench
from pywebtransport.cli import main
from pywebtransport.exceptions import WebTransportError
from pywebtransport.stream import WebTransportStream
from tests.certs import CertBundle
from tests.conftest import build_app, current_engine, serving, url

#: Bound of one command run (a run here takes well under a second or two).
RUN_TIMEOUT = 30.0
#: Latencies on loopback are far below this (milliseconds).
SANE_MS = 5000.0
LATENCY_KEYS = ("median_ms", "p95_ms", "p99_ms", "min_ms", "max_ms")
RESULT_KEYS = {
    "count",
    "ok",
    "errors",
    "lost",
    *LATENCY_KEYS,
    "mb_per_s",
    "ops_per_s",
    "elapsed_s",
    "bytes",
    "first_error",
}


async def _half(session: WebTransportSession) -> None:
    """Echo the datagrams whose sequence number (their first 4 bytes) is even."""
    while True:
        try:
            data = await session.datagrams.receive()
        except WebTransportError:
            return
        if len(data) >= 4 and struct.unpack("!I", data[:4])[0] % 2 == 0:
            await session.datagrams.send(data)


async def _mute(session: WebTransportSession) -> None:
    await session.wait_closed()


async def _garble(session: WebTransportSession) -> None:
    async def garble(stream: WebTransportStream) -> None:
        first = True
        try:
            while chunk := await stream.read(65536):
                if first:
                    chunk, first = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
                await stream.write(chunk)
            await stream.close()
        except WebTransportError:
            pass

    tasks = set()
    async for stream in session.incoming_streams():
        if isinstance(stream, WebTransportStream):
            tasks.add(asyncio.create_task(garble(stream)))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def bench_server(cert: CertBundle) -> AsyncIterator[WebTransportServer]:
    app = build_app(cert)
    app.route("/half")(_half)
    app.route("/mute")(_mute)
    app.route("/garble")(_garble)
    async with serving(app) as srv:
        yield srv


async def bench(
    capsys: pytest.CaptureFixture[str], *args: str, cert: CertBundle | None = None
) -> tuple[int, str, str]:
    """Run ``pywebtransport bench ARGS`` (pinning ``cert``); return status, stdout, stderr."""
    argv = ["bench", *args]
    if cert is not None:
        argv += ["--cert-hash", cert.sha256.hex()]
    capsys.readouterr()
    async with asyncio.timeout(RUN_TIMEOUT):
        code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_sane_latencies(figures: dict[str, Any]) -> None:
    values = [figures[key] for key in LATENCY_KEYS]
    assert all(isinstance(value, float) for value in values), figures
    median, p95, p99, low, high = values
    assert 0 < low <= median <= p95 <= p99 <= high < SANE_MS, figures


async def test_every_workload_against_the_echo_route(
    bench_server: WebTransportServer, cert: CertBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    total = 300_000
    code, out, err = await bench(
        capsys,
        url(bench_server),
        "--count",
        "6",
        "--size",
        "1000",  # (fits in a datagram both ways, on every engine and path)
        "--concurrency",
        "3",
        "--bytes",
        str(total),
        "--json",
        "--engine",
        current_engine(),
        cert=cert,
    )
    assert code == 0, err
    report = json.loads(out)  # stdout is exactly one JSON object
    assert set(report) == {"url", "engine", "options", "workloads", "ok"}
    assert report["ok"] is True
    assert report["url"] == url(bench_server)
    assert report["engine"] == current_engine()
    assert report["options"]["concurrency"] == 3 and report["options"]["bytes"] == total
    workloads = report["workloads"]
    assert list(workloads) == list(WORKLOADS)
    for name, figures in workloads.items():
        assert set(figures) == RESULT_KEYS, name
        assert figures["count"] == figures["ok"] + figures["errors"] + figures["lost"], name
        assert figures["ops_per_s"] > 0 and figures["elapsed_s"] > 0, name
        assert_sane_latencies(figures)

    connect = workloads["connect"]
    assert (connect["count"], connect["ok"], connect["errors"]) == (6, 6, 0)
    assert connect["mb_per_s"] is None and connect["bytes"] == 0

    streams = workloads["stream-rtt"]
    assert (streams["count"], streams["ok"], streams["errors"]) == (6, 6, 0)
    assert streams["bytes"] == 6 * 1000 and streams["mb_per_s"] > 0

    # Datagrams may be dropped (even on loopback, rarely): each is counted one way or the other.
    datagrams = workloads["datagram-rtt"]
    assert datagrams["count"] == 6 and datagrams["errors"] == 0 and datagrams["ok"] >= 1
    assert datagrams["bytes"] == datagrams["ok"] * 1000

    throughput = workloads["throughput"]
    assert throughput["bytes"] == total  # every byte came back, checked against what was sent
    assert throughput["errors"] == 0 and throughput["ok"] == throughput["count"] >= 3
    assert throughput["mb_per_s"] > 0
    assert throughput["mb_per_s"] == pytest.approx(total / throughput["elapsed_s"] / 1e6, rel=1e-3)


async def test_throughput_for_a_duration(
    bench_server: WebTransportServer, cert: CertBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await bench(
        capsys,
        url(bench_server),
        "--workload",
        "throughput",
        "--duration",
        "0.3",
        "--concurrency",
        "2",
        "--json",
        cert=cert,
    )
    assert code == 0, err
    report = json.loads(out)
    assert list(report["workloads"]) == ["throughput"]
    assert report["options"]["duration"] == 0.3 and report["options"]["bytes"] is None
    figures = report["workloads"]["throughput"]
    assert figures["elapsed_s"] >= 0.3
    assert figures["bytes"] > 0 and figures["mb_per_s"] > 0
    assert figures["errors"] == 0 and figures["ok"] == figures["count"] >= 2
    assert_sane_latencies(figures)


async def test_the_table_has_a_row_per_workload_and_the_bars_stay_on_stderr(
    bench_server: WebTransportServer, cert: CertBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await bench(
        capsys,
        url(bench_server),
        "--count",
        "3",
        "--bytes",
        "100000",
        "--progress",
        "always",
        cert=cert,
    )
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()}
    for name in WORKLOADS:
        assert name in rows, out
        assert len(rows[name]) == 10, rows[name]  # count, errors, lost, 5 latencies, MB/s, ops/s
    assert rows["connect"][:3] == ["3", "0", "0"]
    assert rows["stream-rtt"][:3] == ["3", "0", "0"]
    assert "median" in out and "MB/s" in out and "ops/s" in out
    # The live bars are drawn on stderr, and nothing of them reaches stdout.
    assert "\x1b" not in out and "%" not in out, out
    for name in WORKLOADS:
        assert re.search(rf"{name}\s.*100%", err), err


async def test_json_stays_clean_while_the_bars_are_drawn(
    bench_server: WebTransportServer, cert: CertBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await bench(
        capsys,
        url(bench_server),
        "--workload",
        "connect,stream-rtt",
        "--count",
        "3",
        "--json",
        "--progress",
        "always",
        cert=cert,
    )
    assert code == 0, err
    assert out.count("\n") == 1
    assert list(json.loads(out)["workloads"]) == ["connect", "stream-rtt"]
    assert "stream-rtt" in err and "100%" in err


async def test_no_bars_when_stderr_is_not_a_terminal(
    bench_server: WebTransportServer, cert: CertBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await bench(
        capsys, url(bench_server), "--workload", "connect", "--count", "2", cert=cert
    )
    assert code == 0, err
    assert err == ""
    assert re.search(r"^\s*connect\s+2\s+0\s+0\s", out, re.M), out


async def test_lost_datagrams_are_counted(
    bench_server: WebTransportServer, cert: CertBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--workload", "datagram-rtt", "--count", "6", "--datagram-timeout", "0.5", "--json")
    code, out, err = await bench(capsys, url(bench_server, "/half"), *args, cert=cert)
    assert code == 0, err  # losses are figures, not a failure
    figures = json.loads(out)["workloads"]["datagram-rtt"]
    assert figures["count"] == 6 and figures["errors"] == 0
    assert figures["lost"] >= 3 and figures["ok"] + figures["lost"] == 6
    assert figures["ok"] >= 1
    assert_sane_latencies(figures)


async def test_a_workload_without_any_success_fails_the_command(
    bench_server: WebTransportServer, cert: CertBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--workload", "datagram-rtt", "--count", "3", "--datagram-timeout", "0.2", "--json")
    code, out, err = await bench(capsys, url(bench_server, "/mute"), *args, cert=cert)
    assert code == 1
    report = json.loads(out)  # the figures are printed all the same
    assert report["ok"] is False
    figures = report["workloads"]["datagram-rtt"]
    assert (figures["count"], figures["ok"], figures["lost"]) == (3, 0, 3)
    assert all(figures[key] is None for key in LATENCY_KEYS)
    assert err == "error: datagram-rtt: no operation succeeded (0 errors, 3 lost)\n"


async def test_an_echo_that_differs_is_an_error(
    bench_server: WebTransportServer, cert: CertBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await bench(
        capsys,
        url(bench_server, "/garble"),
        "--workload",
        "stream-rtt,throughput",
        "--count",
        "3",
        "--bytes",
        "200000",
        "--json",
        cert=cert,
    )
    assert code == 1
    workloads = json.loads(out)["workloads"]
    streams = workloads["stream-rtt"]
    assert (streams["count"], streams["ok"], streams["errors"]) == (3, 0, 3)
    assert "echoed 1024 other bytes" in streams["first_error"]
    throughput = workloads["throughput"]
    assert throughput["ok"] == 0 and throughput["errors"] == throughput["count"] >= 1
    assert throughput["bytes"] == 0
    assert "differs" in throughput["first_error"]
    assert "stream-rtt: no operation succeeded" in err
    assert "throughput: no operation succeeded" in err


async def test_an_unreachable_url_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    # A UDP socket that never answers: no session can open before the deadline.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        target = f"https://127.0.0.1:{silent.getsockname()[1]}/echo"
        code, out, err = await bench(capsys, target, "--insecure", "--timeout", "0.5")
    assert code == 1
    assert out == ""
    assert err == f"error: cannot reach {target}: no session within 0.5 s\n"


async def test_a_refused_session_exits_1(
    bench_server: WebTransportServer, cert: CertBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    target = url(bench_server, "/nowhere")
    code, out, err = await bench(capsys, target, cert=cert)
    assert code == 1
    assert out == ""
    assert (
        err == f"error: cannot reach {target}: the server rejected the session: HTTP status 404\n"
    )


async def test_a_wrong_certificate_and_a_bad_url(
    bench_server: WebTransportServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = url(bench_server)
    code, out, err = await bench(capsys, target, "--cert-hash", "ab" * 32)
    assert code == 1 and out == ""
    assert err.startswith(f"error: cannot reach {target}: certificate verification failed: ")
    assert err.endswith(" (pass --cert-hash, --ca or --insecure)\n")

    code, out, err = await bench(capsys, target.replace("https:", "http:"), "--insecure")
    assert code == 2 and out == ""
    assert err.startswith("error: invalid URL or settings: ")


def test_without_rich_the_command_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # ``import rich`` now fails
    assert main(["bench", "https://127.0.0.1:4433/echo", "--insecure"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "error: the bench command needs rich: pip install 'pywebtransport[bench]'\n"
    )


def test_workload_names_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "https://127.0.0.1:4433/echo", "--workload", "connect,warp"])
    assert exit_info.value.code == 2
    assert "unknown workload warp" in capsys.readouterr().err
    assert parse_workloads(" throughput , connect ") == ("connect", "throughput")
    assert parse_workloads("stream-rtt,all") == WORKLOADS


def test_duration_and_bytes_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "https://x/", "--duration", "1", "--bytes", "10"])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


class Recorder:
    """A progress sink that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def start(self, workload: str, total: float) -> None:
        self.calls.append(("start", workload, total))

    def update(self, workload: str, completed: float) -> None:
        self.calls.append(("update", workload, completed))

    def finish(self, workload: str) -> None:
        self.calls.append(("finish", workload, 0.0))


async def test_the_runner_reports_progress(
    bench_server: WebTransportServer, client_config: ClientConfig
) -> None:
    options = BenchOptions(
        url=url(bench_server), count=4, concurrency=2, total_bytes=150_000, timeout=5.0
    )
    recorder = Recorder()
    async with asyncio.timeout(RUN_TIMEOUT), WebTransportClient(config=client_config) as client:
        report = await run_bench(client, options, progress=recorder)
    assert [result.name for result in report.results] == list(WORKLOADS)
    assert not report.failed
    for result in report.results:
        calls = [call for call in recorder.calls if call[1] == result.name]
        assert calls[0][0] == "start" and calls[-1][0] == "finish"
        updates = [value for kind, _, value in calls if kind == "update"]
        assert updates == sorted(updates) and updates, result.name
        assert updates[-1] == calls[0][2]  # the bar ended full
    assert report.results[-1].bytes == 150_000
