"""Several worker processes on one UDP port: ``serve --workers`` and ``WorkerGroup``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from pywebtransport import ClientConfig, ServerApp, ServerConfig, WebTransportClient
from pywebtransport.exceptions import CertificateError, ServerError
from pywebtransport.server.certificate import generate_self_signed_certificate
from pywebtransport.server.echo import echo_handler
from pywebtransport.server.workers import WorkerGroup
from tests.certs import CertBundle
from tests.conftest import T
from tests.test_cli import cli_env, http_get, start_serve

CONNECTIONS = 40
ROOT = str(Path(__file__).resolve().parents[2])  # the checkout, so `tests` imports


def echo_only(config: ServerConfig) -> ServerApp:
    """The workers' application (module level: it is pickled for the spawned processes)."""
    app = ServerApp(config=config)
    app.route("/echo")(echo_handler)
    return app


async def _echo_once(port: int, digest: bytes, payload: bytes) -> bytes:
    config = ClientConfig(server_certificate_hashes=[digest], connect_timeout=4 * T)
    async with WebTransportClient(config=config) as client:
        session = await client.connect(url=f"https://127.0.0.1:{port}/echo")
        try:
            async with asyncio.timeout(4 * T):
                stream = await session.create_bidirectional_stream()
                await stream.write(payload, end_stream=True)
                return await stream.read_all()
        finally:
            await session.close()


async def _many_echoes(port: int, digest: bytes, count: int) -> None:
    payloads = [f"connection {i} ".encode() * (i + 1) for i in range(count)]
    echoed = await asyncio.gather(*(_echo_once(port, digest, p) for p in payloads))
    assert echoed == payloads


def _fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split()[1:])


async def test_serve_workers_share_the_port_and_all_echo(tmp_path: Path) -> None:
    served = await start_serve(tmp_path, "--workers", "2", timeout=6 * T)
    try:
        workers = [_fields(line) for line in served.lines if line.startswith("WORKER ")]
        assert len(workers) == 2
        assert {w["udp"] for w in workers} == {str(served.udp_port)}
        pids = {int(w["pid"]) for w in workers}
        assert len(pids) == 2 and served.process.pid not in pids

        # The demo page is served by the supervisor alone, with the workers' port.
        status, body = await http_get(served.http_port, "/config.json")
        assert status == 200 and str(served.udp_port) in body.decode()

        await _many_echoes(served.udp_port, bytes.fromhex(served.hash_hex), CONNECTIONS)

        served.process.send_signal(signal.SIGTERM)
        exits = [_fields(await served.line_starting("WORKER-EXIT ")) for _ in range(2)]
        async with asyncio.timeout(T):
            assert await served.process.wait() == 0
    finally:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()
    assert {int(e["pid"]) for e in exits} == pids
    assert all(e["code"] == "0" for e in exits)
    connections = [int(e["connections"]) for e in exits]
    # Every connection was accepted by exactly one worker, and the kernel spread them.
    assert sum(connections) == CONNECTIONS, exits
    assert all(count > 0 for count in connections), connections
    assert sum(int(e["sessions"]) for e in exits) == CONNECTIONS, exits


async def test_worker_group_api_reload_and_stop(cert: CertBundle, tmp_path: Path) -> None:
    config = ServerConfig(
        certfile=str(cert.certfile), keyfile=str(cert.keyfile), host="127.0.0.1", port=0
    )
    group = WorkerGroup(echo_only, config=config, workers=2)
    try:
        async with asyncio.timeout(6 * T):
            port = await group.start()
        assert "alive=2" in repr(group)
        assert [w.port for w in group.workers] == [port, port]
        await _many_echoes(port, cert.sha256, 10)

        new = generate_self_signed_certificate()
        certfile, keyfile = str(tmp_path / "new.pem"), str(tmp_path / "new.key")
        new.write(certfile=certfile, keyfile=keyfile)
        async with asyncio.timeout(T):
            await group.reload_certificate(certfile=certfile, keyfile=keyfile)
        await _many_echoes(port, new.sha256, 6)
        with pytest.raises(CertificateError):
            await _echo_once(port, cert.sha256, b"old")
        with pytest.raises(ServerError, match="worker 0"):
            await group.reload_certificate(certfile=str(cert.certfile), keyfile=keyfile)
    finally:
        async with asyncio.timeout(T):
            await group.stop()
    assert [w.exitcode for w in group.workers] == [0, 0]
    assert "alive=0" in repr(group)
    assert sum(w.stats["sessions_accepted"] for w in group.workers) == 16


async def test_worker_exit_stops_the_group(cert: CertBundle) -> None:
    config = ServerConfig(
        certfile=str(cert.certfile), keyfile=str(cert.keyfile), host="127.0.0.1", port=0
    )
    group = WorkerGroup(echo_only, config=config, workers=2)
    try:
        async with asyncio.timeout(6 * T):
            await group.start()
        os.kill(group.workers[0].pid, signal.SIGKILL)
        async with asyncio.timeout(T):
            assert await group.wait() is True  # a failure: nothing restarts the worker
    finally:
        async with asyncio.timeout(T):
            await group.stop()
    assert group.workers[0].exitcode == -signal.SIGKILL
    assert group.workers[1].exitcode == 0


async def test_worker_that_cannot_listen_fails_start(cert: CertBundle) -> None:
    # A socket bound without SO_REUSEPORT keeps the port to itself.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        config = ServerConfig(
            certfile=str(cert.certfile),
            keyfile=str(cert.keyfile),
            host="127.0.0.1",
            port=taken.getsockname()[1],
        )
        group = WorkerGroup(echo_only, config=config, workers=2)
        with pytest.raises(ServerError, match="worker 0 failed to start"):
            async with asyncio.timeout(6 * T):
                await group.start()
    assert len(group.workers) == 1 and group.workers[0].exitcode is not None
    with pytest.raises(ServerError, match="at least 1"):
        WorkerGroup(echo_only, config=config, workers=0)


_SERVE_WORKERS_SCRIPT = """
import asyncio, sys
from pywebtransport import ServerConfig
from pywebtransport.server.workers import serve_workers
from tests.server.test_workers import echo_only

config = ServerConfig(certfile=sys.argv[1], keyfile=sys.argv[2], host="127.0.0.1", port=0)
ready = lambda group: print("PORT", group.port, flush=True)
failed = asyncio.run(serve_workers(echo_only, config=config, workers=2, on_ready=ready))
print("FAILED" if failed else "STOPPED", flush=True)
"""


async def test_serve_workers_forwards_sigint(cert: CertBundle) -> None:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _SERVE_WORKERS_SCRIPT, str(cert.certfile), str(cert.keyfile)),
        stdout=asyncio.subprocess.PIPE,
        env=cli_env(),
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(6 * T):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("PORT "), line
        await _many_echoes(int(line.split()[1]), cert.sha256, 4)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(T):
            rest = (await process.stdout.read()).decode()
            assert await process.wait() == 0
        assert rest.strip() == "STOPPED"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
