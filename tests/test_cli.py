"""The command line, end to end: ``serve`` in a subprocess, its demo page in headless Chromium,
``connect`` against it, and ``cert generate`` in-process."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import re
import signal
import socket
import sys
import tomllib
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import pywebtransport
from pywebtransport.cli import main
from pywebtransport.constants import DEFAULT_STREAM_RECEIVE_WINDOW, DEFAULT_STREAM_SEND_BUFFER
from tests.certs import CertBundle, make_key_file
from tests.interop.chromium import Chromium

TIMEOUT = 30.0
SRC_DIR = str(Path(pywebtransport.__file__).resolve().parent.parent)


def cli_env() -> dict[str, str]:
    """The environment for ``python -m pywebtransport`` subprocesses (finds this checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC_DIR, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Served:
    process: asyncio.subprocess.Process
    udp_port: int
    http_port: int
    hash_hex: str
    lines: list[str] = field(default_factory=list)

    async def line_starting(self, prefix: str, *, timeout: float = TIMEOUT) -> str:
        """Return the next stdout line starting with ``prefix`` (other lines are kept)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"serve exited; output so far: {self.lines}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith(prefix):
                    return line


async def start_serve(
    tmp_path: Path, *extra: str, timeout: float | None = None, global_options: tuple[str, ...] = ()
) -> Served:
    """Start ``pywebtransport serve`` on free ports (plus ``extra`` options); wait for READY."""
    stderr = (tmp_path / "serve.stderr").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pywebtransport",
        *global_options,
        "serve",
        "--port",
        "0",
        "--http-port",
        "0",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env=cli_env(),
    )
    stderr.close()
    served = Served(process, 0, 0, "")
    try:
        if timeout is None:
            ready = await served.line_starting("READY ")
        else:
            ready = await served.line_starting("READY ", timeout=timeout)
    except BaseException:
        process.kill()
        await process.wait()
        raise AssertionError((tmp_path / "serve.stderr").read_text()) from None
    fields = dict(part.split("=", 1) for part in ready.split()[1:])
    served.udp_port, served.http_port = int(fields["udp"]), int(fields["http"])
    served.hash_hex = fields["hash"]
    return served


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    served = await start_serve(tmp_path)
    try:
        yield served
    finally:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def run_cli(*args: str, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pywebtransport",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.interop
async def test_serve_demo_page_connect_and_stop(served: Served, tmp_path: Path) -> None:
    # The page and its settings are served over plain HTTP.
    status, page = await http_get(served.http_port, "/")
    assert status == 200
    assert b"serverCertificateHashes" in page
    status, body = await http_get(served.http_port, "/config.json")
    assert status == 200
    config = json.loads(body)
    assert config["certificateHash"] == served.hash_hex
    assert config["url"] == f"https://127.0.0.1:{served.udp_port}/echo"
    assert "Open http://127.0.0.1:" in "\n".join(served.lines)

    # Headless Chromium runs the demo page; serve prints the page's summary.
    url = f"http://127.0.0.1:{served.http_port}/"
    async with Chromium(url, log_path=tmp_path / "chromium.log") as browser:
        try:
            line = await served.line_starting("REPORT ")
        except (AssertionError, TimeoutError) as error:
            raise AssertionError(f"no report from the demo page:\n{browser.log_tail()}") from error
    report = json.loads(line.removeprefix("REPORT "))
    assert report["ok"], json.dumps(report, indent=1)
    assert report["bidi"]["ok"] and report["uni"]["ok"] and report["datagrams"]["ok"]

    # The CLI client measures round trips against the same server.
    code, out, err = await run_cli(
        "connect",
        f"https://127.0.0.1:{served.udp_port}/echo",
        "--cert-hash",
        served.hash_hex,
        "--count",
        "5",
        "--size",
        "3000",
    )
    assert code == 0, err
    assert "connected to https://127.0.0.1:" in out
    assert "bidirectional streams: 5/5 round trips of 3000 bytes, median" in out
    assert "datagrams: " in out and "median" in out.split("datagrams: ", 1)[1]

    # SIGTERM ends serve cleanly.
    served.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(TIMEOUT):
        assert await served.process.wait() == 0
        rest = await served.process.stdout.read() if served.process.stdout else b""
    assert b"stopping" in rest or "stopping" in served.lines


async def test_connect_failures_have_distinct_messages(served: Served) -> None:
    base = f"https://127.0.0.1:{served.udp_port}"

    code, _, err = await run_cli("connect", f"{base}/echo", "--cert-hash", "ab" * 32)
    assert code == 5, err
    assert "certificate" in err

    code, _, err = await run_cli("connect", f"{base}/nowhere", "--cert-hash", served.hash_hex)
    assert code == 4, err
    assert "rejected" in err and "404" in err

    # A UDP socket that never answers: the handshake cannot finish before the deadline.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        code, _, err = await run_cli(
            "connect", f"https://127.0.0.1:{port}/echo", "--insecure", "--timeout", "1"
        )
    assert code == 3, err
    assert "timed out" in err


async def test_connect_echoes_a_payload_larger_than_the_flow_control_windows(
    served: Served,
) -> None:
    # Both sides' stream receive windows and send buffers together hold 4 MiB (the defaults):
    # a client that wrote its whole payload before reading the echo would stall on this one.
    size = 3 * (DEFAULT_STREAM_RECEIVE_WINDOW + DEFAULT_STREAM_SEND_BUFFER)
    code, out, err = await run_cli(
        "connect",
        f"https://127.0.0.1:{served.udp_port}/echo",
        "--cert-hash",
        served.hash_hex,
        "--count",
        "1",
        "--size",
        str(size),
    )
    assert code == 0, err
    assert f"bidirectional streams: 1/1 round trips of {size} bytes, median" in out


async def test_connect_says_how_far_a_timed_out_round_trip_got(served: Served) -> None:
    # 64 MiB each way takes several seconds on loopback: the round trip cannot end within 1 s.
    size = 64 << 20
    code, out, err = await run_cli(
        "connect",
        f"https://127.0.0.1:{served.udp_port}/echo",
        "--cert-hash",
        served.hash_hex,
        "--count",
        "1",
        "--size",
        str(size),
        "--timeout",
        "1",
    )
    assert code == 3, err
    assert "connected to" in out
    line = err.strip()
    assert line.startswith(
        f"error: timed out after 1 s: stream round trip 1: no complete echo of {size} bytes ("
    ), line
    written, echoed = (int(n) for n in re.findall(r"(\d+) (?:written|echoed)", line))
    assert echoed <= written and 0 < written < size, line


async def test_serve_refuses_a_key_that_does_not_match_the_certificate(
    cert: CertBundle, tmp_path: Path
) -> None:
    other_key = make_key_file(tmp_path / "other-key.pem")
    code, out, err = await run_cli(
        "serve",
        "--port",
        "0",
        "--http-port",
        "0",
        "--cert",
        str(cert.certfile),
        "--key",
        str(other_key),
    )
    assert code == 1, err
    assert err.strip() == (
        f"error: the private key in {other_key} does not match the certificate in {cert.certfile}"
    )
    assert "READY" not in out


async def test_serve_says_when_certificate_and_key_are_swapped(cert: CertBundle) -> None:
    code, out, err = await run_cli(
        "serve",
        "--port",
        "0",
        "--http-port",
        "0",
        "--cert",
        str(cert.keyfile),
        "--key",
        str(cert.certfile),
    )
    assert code == 1, err
    assert err.strip() == (
        f"error: {cert.keyfile} holds no PEM certificate "
        "(it holds a private key: are the certificate and key files swapped?)"
    )
    assert "READY" not in out


async def test_serve_reports_busy_port(served: Served, tmp_path: Path) -> None:
    # The demo page's TCP port is taken by the running server: a second serve must say so.
    code, _, err = await run_cli(
        "serve", "--port", "0", "--http-port", str(served.http_port), timeout=TIMEOUT
    )
    assert code == 1
    assert f"cannot listen on TCP 127.0.0.1:{served.http_port}" in err


async def test_serve_on_the_qh3_engine(tmp_path: Path) -> None:
    pytest.importorskip("qh3")
    served = await start_serve(tmp_path, "--engine", "qh3")
    try:
        url = f"https://127.0.0.1:{served.udp_port}/echo"
        code, _, err = await run_cli("connect", url, "--cert-hash", served.hash_hex)
        assert code == 0, err  # (the connect command's client runs on aioquic)
    finally:
        served.process.kill()
        await served.process.wait()


def test_serve_rejects_an_unknown_engine(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--engine", "quiche"])
    assert exit_info.value.code == 2
    assert "--engine: invalid choice" in capsys.readouterr().err


def test_connect_rejects_bad_hash(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["connect", "https://127.0.0.1:4433/echo", "--cert-hash", "not-hex"])
    assert exit_info.value.code == 2
    assert "--cert-hash: certificate hash" in capsys.readouterr().err


def test_trust_options_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["connect", "https://x/", "--insecure", "--cert-hash", "00" * 32])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_serve_needs_cert_and_key_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--cert", "cert.pem"])
    assert exit_info.value.code == 2
    assert "--cert and --key go together" in capsys.readouterr().err


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"pywebtransport {pywebtransport.__version__}\n"
    # The version the package reports is the one it is built with.
    pyproject = Path(SRC_DIR).parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    assert project["version"] == pywebtransport.__version__


def test_cert_generate_writes_files_and_prints_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "certs"
    assert main(["cert", "generate", "--out-dir", str(out_dir), "--days", "7"]) == 0
    printed = capsys.readouterr().out
    cert = x509.load_pem_x509_certificate((out_dir / "cert.pem").read_bytes())
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert digest in printed.replace(":", "").lower()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(days=7)
    key = serialization.load_pem_private_key((out_dir / "key.pem").read_bytes(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert "valid until" in printed

    # Existing files are kept unless --force is given.
    before = (out_dir / "cert.pem").read_bytes()
    assert main(["cert", "generate", "--out-dir", str(out_dir)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out_dir / "cert.pem").read_bytes() == before
    assert main(["cert", "generate", "--out-dir", str(out_dir), "--force"]) == 0
    assert (out_dir / "cert.pem").read_bytes() != before


def test_cert_generate_refuses_browser_incompatible_validity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["cert", "generate", "--out-dir", str(tmp_path), "--days", "14"])
    assert exit_info.value.code == 2
    assert "--days" in capsys.readouterr().err
    assert not (tmp_path / "cert.pem").exists()


async def test_module_entry_point_shows_help() -> None:
    code, out, err = await run_cli("--help")
    assert code == 0, err
    assert "serve" in out and "connect" in out and "cert" in out


async def test_a_closed_stdout_ends_the_command_quietly(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line, as with ``| head -0``
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pywebtransport",
            "cert",
            "generate",
            "--out-dir",
            str(tmp_path),
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(),
        )
    finally:
        os.close(write_end)
    try:
        async with asyncio.timeout(TIMEOUT):
            _, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 141
    assert err.decode() == ""  # no traceback, no "Exception ignored" at exit


async def test_workers_write_the_access_log_and_qlog_with_verbose(tmp_path: Path) -> None:
    from pywebtransport import ClientConfig, WebTransportClient

    qlog_dir = tmp_path / "qlog"
    served = await start_serve(
        tmp_path, "--workers", "2", "--qlog-dir", str(qlog_dir), global_options=("-v",)
    )
    try:
        config = ClientConfig(server_certificate_hashes=[served.hash_hex], connect_timeout=TIMEOUT)
        async with asyncio.timeout(TIMEOUT), WebTransportClient(config=config) as client:
            session = await client.connect(f"https://127.0.0.1:{served.udp_port}/echo")
            stream = await session.create_bidirectional_stream()
            await stream.write_all(b"logged")
            assert await stream.read_all() == b"logged"
            await session.close()
        served.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            assert await served.process.wait() == 0
    finally:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()
    log = (tmp_path / "serve.stderr").read_text()
    access = [line for line in log.splitlines() if "pywebtransport.access" in line]
    assert len(access) == 1, log
    assert '"/echo" 200' in access[0] and "sent=6 received=6" in access[0]
    # The worker that served the connection wrote its qlog file, ended when it closed.
    (qlog,) = qlog_dir.glob("*.qlog")
    (trace,) = json.loads(qlog.read_text())["traces"]
    assert trace["vantage_point"]["type"] == "server" and trace["events"]


async def test_connect_qlog_dir_writes_a_qlog_file(served: Served, tmp_path: Path) -> None:
    qlog_dir = tmp_path / "qlog"
    code, _, err = await run_cli(
        "connect",
        f"https://127.0.0.1:{served.udp_port}/echo",
        "--cert-hash",
        served.hash_hex,
        "--count",
        "1",
        "--qlog-dir",
        str(qlog_dir),
    )
    assert code == 0, err
    files = list(qlog_dir.glob("*.qlog"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["traces"][0]["events"]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        body: bytes = response.read()
        return body.decode()


async def test_serve_exposes_prometheus_metrics(tmp_path: Path) -> None:
    port = free_tcp_port()
    served = await start_serve(tmp_path, "--metrics-port", str(port))
    try:
        assert f"METRICS http://127.0.0.1:{port}/metrics" in served.lines
        async with asyncio.timeout(TIMEOUT):
            text = await asyncio.to_thread(fetch_text, f"http://127.0.0.1:{port}/metrics")
        lines = text.splitlines()
        assert "pywebtransport_server_connections_accepted_total 0.0" in lines
        assert "pywebtransport_server_sessions_active 0.0" in lines
        served.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            assert await served.process.wait() == 0
    finally:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()


def test_serve_refuses_metrics_with_workers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--workers", "2", "--metrics-port", "9000"])
    assert exit_info.value.code == 2
    assert "--metrics-port works with one process only" in capsys.readouterr().err
