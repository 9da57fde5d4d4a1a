"""What the peer scripts share: their command line, their output lines, test data, certificates.

Standard library and ``cryptography`` only (both are in the peers' virtualenv); nothing here knows
a WebTransport stack, so every peer script may use it. The protocol with the test
(``tests/interop/peer_process.py``) is line-based on stdout: ``READY <port>`` once a server
listens, ``RESULT <json>`` for each outcome.

Command line of every peer script (see :func:`parse_args`)::

    server --cert C --key K [--host H] [--port P] [--set NAME=VALUE ...]
    client --url U --scenario S [--ca FILE] [--cert-hash HEX] [--set NAME=VALUE ...]

``--port`` (0 by default: one the system picks) lets a test restart a server on the same port.
``--set`` passes the peer's own options (limits, counts); values that look like integers are
integers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import traceback
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlsplit

#: One period of :func:`pattern`'s bytes (they repeat every 251 bytes).
_PERIOD = 251


def emit(kind: str, payload: Any) -> None:
    """Write one protocol line, ``<kind> <payload>`` (a non-string payload as JSON), and flush."""
    text = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True)
    sys.stdout.write(f"{kind} {text}\n")
    sys.stdout.flush()


def ready(port: int) -> None:
    """Tell the test that the server listens on 127.0.0.1:``port``."""
    emit("READY", str(port))


def result(outcome: dict[str, Any]) -> None:
    """Report one outcome (a JSON object) to the test."""
    emit("RESULT", outcome)


def note(text: str) -> None:
    """A line for the failure message only (neither READY nor RESULT)."""
    sys.stdout.write(f"# {text}\n")
    sys.stdout.flush()


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` deterministic bytes: byte ``i`` is ``(i * 31 + seed) % 251`` (the tests agree)."""
    period = bytes((i * 31 + seed) % _PERIOD for i in range(_PERIOD))
    return (period * (size // _PERIOD + 1))[:size]


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port of ``host`` that is free now (for stacks that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def url_options(url: str) -> tuple[str, dict[str, Any]]:
    """The path of ``url`` and its query as a dict (integers where the value is one)."""
    parts = urlsplit(url)
    return parts.path, {key: _value(value) for key, value in parse_qsl(parts.query)}


def _value(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _setting(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--set takes NAME=VALUE, got {text!r}")
    return name, _value(value)


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line shared by the peer scripts (see the module docstring).

    ``options`` is the dict of the ``--set`` pairs; ``mode`` is ``server`` or ``client``.
    """
    parser = argparse.ArgumentParser(description=description)
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server", help="listen on HOST, port chosen by the system")
    server.add_argument("--cert", required=True, help="PEM certificate chain")
    server.add_argument("--key", required=True, help="PEM private key")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=0, help="UDP port (0: a free one)")
    client = modes.add_parser("client", help="run one scenario against URL")
    client.add_argument("--url", required=True)
    client.add_argument("--scenario", required=True)
    client.add_argument("--ca", help="PEM file of the certificate to trust")
    client.add_argument("--cert-hash", help="hex SHA-256 of the server's DER certificate")
    for sub in (server, client):
        sub.add_argument("--set", dest="settings", type=_setting, action="append", default=[])
    args = parser.parse_args(argv)
    args.options = dict(args.settings)
    return args


def der_certificate_chain(certfile: str) -> list[bytes]:
    """The certificates of a PEM file, DER-encoded, in file order (leaf first)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    with open(certfile, "rb") as file:
        certificates = x509.load_pem_x509_certificates(file.read())
    return [cert.public_bytes(serialization.Encoding.DER) for cert in certificates]


def der_private_key(keyfile: str) -> bytes:
    """The private key of a PEM file as unencrypted PKCS#8 DER."""
    from cryptography.hazmat.primitives import serialization

    with open(keyfile, "rb") as file:
        key = serialization.load_pem_private_key(file.read(), password=None)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def error_info(exc: BaseException) -> dict[str, Any]:
    """A JSON-able description of an exception: its type, message and code-like attributes."""
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for name in ("kind", "code", "error_code", "source", "reason"):
        value = getattr(exc, name, None)
        if isinstance(value, (int, str)):
            info[name] = value
    return info


def run(main: Coroutine[Any, Any, None], *, timeout: float | None = None) -> None:
    """Run ``main``; report a failure as ``RESULT {"error": ...}``; then end the process.

    The process ends with ``os._exit`` once stdout is flushed: a native runtime may abort
    while the interpreter shuts down after the work is done, and the test judges a peer by
    the lines it printed, not by that.
    """

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await main

    status = 0
    try:
        asyncio.run(bounded())
    except BaseException as exc:  # everything is reported; the test decides
        status = 1
        result({"error": error_info(exc), "traceback": traceback.format_exc(limit=8)})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class Tasks:
    """Background tasks (of one session, or of a server), cancelled together."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task of this set (the set forgets it when it is done)."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def cancel(self) -> None:
        """Cancel every task still running and wait for them all."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def session_record(path: str) -> dict[str, Any]:
    """The ``session`` RESULT a peer server fills in for one session on ``path``, all counts 0.

    ``resets`` / ``stops``: the codes of the client's RESET_STREAMs and STOP_SENDINGs;
    ``bidi_echoed`` / ``uni_echoed``: streams echoed; ``datagrams_not_echoed``: sizes too large
    to send back; ``largest_sent``: sizes of the largest datagrams sent (``?reply=``);
    ``push_*``: what ``/push`` did; ``errors``: unexpected failures, with where they happened.
    """
    return {
        "event": "session",
        "path": path,
        "resets": [],
        "stops": [],
        "bidi_echoed": 0,
        "uni_echoed": 0,
        "bytes_received": 0,
        "datagrams_echoed": 0,
        "datagrams_not_echoed": [],
        "largest_sent": [],
        "push_bidi_ok": 0,
        "push_uni_sent": 0,
        "errors": [],
    }
