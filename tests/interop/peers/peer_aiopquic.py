"""An aiopquic 0.6.1 WebTransport peer (picoquic and its h3zero) for the interop tests.

Run by ``tests/interop/peer_process.py`` under the peers' Python 3.12; it imports aiopquic, the
standard library and ``peer_common`` (the command line and output lines every peer script
uses), never the project under test. Its command line is ``peer_common``'s, with these
``--set`` options (:data:`DEFAULTS`).

``server --cert C --key K [--port P] --set route=R`` listens on ``--port`` or a free UDP port
(aiopquic binds the wildcard address, whatever the host: the tests send it loopback traffic
only), prints ``READY <port>`` and serves one WebTransport path, ``path``, with one behaviour,
``route``:

* ``echo``: a bidirectional stream is echoed chunk by chunk on itself, a unidirectional stream is
  read to its end and sent back on a new server-opened unidirectional stream, a datagram is
  echoed (``largest`` is answered with aiopquic's largest, 1,200 bytes). A reset from the client
  is answered with a reset of the same code, a STOP_SENDING with a STOP_SENDING of the same code
  (so the client learns that its code arrived).
* ``push``: ``echo``, and at once ``count`` server-opened bidirectional streams
  (``server-bidi-<i>``, then the client's reply is read) and as many unidirectional ones
  (``server-uni-<i>``); one ``RESULT`` ``{"pushed": [[bidi id, uni id, reply, reset code],
  ...]}`` once every reply is in (before the session's own ``RESULT``).
* ``close``: closes the session with ``code`` and ``reason`` when the client's first stream
  arrives.
* ``reset``: on each client bidirectional stream, once its first bytes arrive, a RESET_STREAM
  with ``reset_code`` and a STOP_SENDING with ``stop_code``.

When a session ends the server prints one ``RESULT`` with what it saw: the reset and
STOP_SENDING codes it received (``[stream id, code]`` pairs), the close code and reason and who
closed, stream, byte and datagram counts, the QUIC transport parameters both sides advertised.

``client --url U --scenario S [--ca FILE]`` runs one scenario (the ``scenario_*`` functions)
against ``U`` and prints one ``RESULT`` (``{"error": ...}`` when it fails); with ``--ca`` it
verifies the server's certificate against that file (server name ``localhost``), else it
verifies nothing (aiopquic takes no certificate hash).

``protocols=a,b`` is the client's offer (``wt_available_protocols``) or the server's allowlist
(``wt_supported_protocols``); ``protocol`` in a server session's ``RESULT`` (and in a client's,
when it offered some) is aiopquic's ``negotiated_protocol``.

``max_data``, ``max_stream_data``, ``max_streams_bidi`` and ``max_streams_uni`` set picoquic's
QUIC flow-control limits (0: aiopquic's defaults); aiopquic has no WebTransport session flow
control.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from aiopquic.asyncio.webtransport import (
    WebTransportServer,
    WebTransportSession,
    connect_webtransport,
    serve_webtransport,
)
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.events import (
    WebTransportDatagramReceived,
    WebTransportNewStream,
    WebTransportSessionClosed,
    WebTransportStopSending,
    WebTransportStreamDataReceived,
    WebTransportStreamReset,
)
from peer_common import free_udp_port, parse_args, pattern, ready, result, run

#: aiopquic refuses one write larger than its per-stream ring (4 MiB): writes are cut to this.
WRITE_CHUNK = 1 << 20
DATAGRAM_WAIT = 1.0
DATAGRAM_TRIES = 5
#: The largest datagram payload an aiopquic session sends: its WebTransport session caps the
#: payload at 1,200 bytes (``send_datagram_frame`` raises ValueError above that).
DATAGRAM_LIMIT = 1200
#: The ``restart`` scenario's interval between two datagrams.
TICK = 0.05
#: How long picoquic may take to open a server's sockets, and how many ports are tried.
BIND_WAIT = 3.0
BIND_TRIES = 3
#: The ``--set`` options and their defaults (see the module docstring).
DEFAULTS: dict[str, Any] = {
    "path": "/wt",
    "route": "echo",
    "code": 0,
    "reason": "",
    "reset_code": 0,
    "stop_code": 0,
    "count": 1,
    "size": 1000,
    "streams": 200,
    "batch": 25,
    "timeout": 20,
    "max_data": 0,
    "max_stream_data": 0,
    "max_streams_bidi": 0,
    "max_streams_uni": 0,
    "protocols": "",
}


class Options:
    """The command line of this run: its arguments, and the ``--set`` options over DEFAULTS."""

    def __init__(self, args: argparse.Namespace) -> None:
        unknown = set(args.options) - set(DEFAULTS)
        if unknown:
            raise SystemExit(f"unknown --set options: {sorted(unknown)}")
        self.mode: str = args.mode
        self.cert: str | None = getattr(args, "cert", None)
        self.key: str | None = getattr(args, "key", None)
        self.host: str = getattr(args, "host", "127.0.0.1")
        self.port: int = getattr(args, "port", 0)
        self.ca: str | None = getattr(args, "ca", None)
        self.url: str = getattr(args, "url", "")
        self.scenario: str = getattr(args, "scenario", "")
        values = {**DEFAULTS, **args.options}
        self.path: str = str(values["path"])
        self.route: str = str(values["route"])
        self.code: int = values["code"]
        self.reason: str = str(values["reason"])
        self.reset_code: int = values["reset_code"]
        self.stop_code: int = values["stop_code"]
        self.count: int = values["count"]
        self.size: int = values["size"]
        self.streams: int = values["streams"]
        self.batch: int = values["batch"]
        self.timeout = float(values["timeout"])
        self.max_data: int = values["max_data"]
        self.max_stream_data: int = values["max_stream_data"]
        self.max_streams_bidi: int = values["max_streams_bidi"]
        self.max_streams_uni: int = values["max_streams_uni"]
        names = str(values["protocols"]).split(",")
        self.protocols: list[str] | None = [name for name in names if name] or None


def is_bidi(stream_id: int) -> bool:
    return stream_id & 2 == 0


def configuration(args: Options, *, is_client: bool) -> QuicConfiguration:
    """picoquic's settings for this run: IPv4 only, the requested flow-control limits."""
    config = QuicConfiguration(is_client=is_client, ip_family=socket.AF_INET)
    if args.max_data:
        config.max_data = args.max_data
    if args.max_stream_data:
        config.max_stream_data = args.max_stream_data
    if args.max_streams_bidi:
        config.max_streams_bidi = args.max_streams_bidi
    if args.max_streams_uni:
        config.max_streams_uni = args.max_streams_uni
    if is_client and args.ca:
        config.cafile = args.ca
    return config


def transport_parameters(session: WebTransportSession) -> dict[str, Any]:
    """The QUIC transport parameters this side and the peer advertised (aiopquic's snapshot)."""
    transport = session._transport  # the session's TransportContext
    cnx = session.cnx_ptr
    return {
        "local": transport.transport_parameters(cnx, local=True) if cnx else None,
        "remote": transport.transport_parameters(cnx, local=False) if cnx else None,
    }


async def send_all(session: WebTransportSession, stream_id: int, data: bytes, fin: bool) -> None:
    """Write ``data`` (in pieces aiopquic accepts) and optionally FIN, waiting for ring room."""
    for offset in range(0, len(data), WRITE_CHUNK):
        piece = data[offset : offset + WRITE_CHUNK]
        last = offset + WRITE_CHUNK >= len(data)
        await session.send_stream_data_drained(stream_id, piece, end_stream=fin and last)
    if not data and fin:
        await session.send_stream_data_drained(stream_id, b"", end_stream=True)


async def read_stream(session: WebTransportSession, stream_id: int) -> tuple[bytes, int | None]:
    """Read a stream to its end: (bytes, None), or (bytes so far, reset code)."""
    received = bytearray()
    async for event in session.receive_stream_data(stream_id):
        if isinstance(event, WebTransportStreamReset):
            return bytes(received), event.error_code
        received += event.data
    return bytes(received), None


def refused_above_limit(session: WebTransportSession) -> str | None:
    """The error of sending one byte more than :data:`DATAGRAM_LIMIT` (None: it was sent)."""
    try:
        session.send_datagram_frame(pattern(DATAGRAM_LIMIT + 1))
    except ValueError as error:
        return f"{type(error).__name__}: {error}"
    return None


def close_of(session: WebTransportSession, seen: WebTransportSessionClosed | None) -> Any:
    """[code, reason] of the session's close: the event, else what the session kept of it.

    ``events()`` stops before yielding the close when the session ended while it was not
    waiting, so the session's own record is the fallback.
    """
    event = seen or session._session_close_event
    if event is None:
        return None
    return [event.error_code, bytes(event.reason).decode("utf-8", "replace")]


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


class ServerSession:
    """One accepted session of the server and what it observed."""

    def __init__(self, session: WebTransportSession, args: Options) -> None:
        self.session = session
        self.args = args
        self.tasks: set[asyncio.Task[None]] = set()
        self.close_sent: list[Any] | None = None
        self.observed: dict[str, Any] = {
            "route": args.route,
            "bidi_streams": 0,
            "uni_streams": 0,
            "bytes_received": 0,
            "bytes_sent": 0,
            "datagrams": 0,
            "resets": [],
            "stop_sending": [],
            "replies": [],
            "errors": [],
        }

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        session, args = self.session, self.args
        self.observed["transport_parameters"] = transport_parameters(session)
        self.observed["protocol"] = session.negotiated_protocol
        seen_close: WebTransportSessionClosed | None = None
        if args.route == "push":
            self.spawn(self.push_all())
        try:
            async for event in session.events():
                if isinstance(event, WebTransportNewStream):
                    self.on_new_stream(event.stream_id)
                elif isinstance(event, WebTransportDatagramReceived):
                    self.observed["datagrams"] += 1
                    self.on_datagram(bytes(event.data))
                elif isinstance(event, WebTransportStopSending):
                    self.observed["stop_sending"].append([event.stream_id, event.error_code])
                    if args.route != "reset" and is_bidi(event.stream_id):
                        session.stop_stream(event.stream_id, event.error_code)
                elif isinstance(event, WebTransportSessionClosed):
                    seen_close = event
        except Exception as error:  # reported to the test rather than lost in a task
            self.observed["errors"].append(repr(error))
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.observed["close"] = self.close_sent or close_of(session, seen_close)
            self.observed["closed_by"] = "server" if self.close_sent else "client"
            result(self.observed)

    def on_datagram(self, data: bytes) -> None:
        """Echo ``data``; answer ``largest`` with a datagram of :data:`DATAGRAM_LIMIT` bytes
        (``largest_sent``, with the error of one byte more in ``refused``). A datagram that
        aiopquic refuses to send is recorded in ``datagrams_not_echoed`` (its size)."""
        session = self.session
        if data == b"largest":
            self.observed["refused"] = refused_above_limit(session)
            data = pattern(DATAGRAM_LIMIT, seed=DATAGRAM_LIMIT)
            self.observed.setdefault("largest_sent", []).append(len(data))
        try:
            session.send_datagram_frame(data)
        except ValueError:
            self.observed.setdefault("datagrams_not_echoed", []).append(len(data))

    def on_new_stream(self, stream_id: int) -> None:
        kind = "bidi_streams" if is_bidi(stream_id) else "uni_streams"
        self.observed[kind] += 1
        route = self.args.route
        if route == "close":
            if self.close_sent is None:
                self.close_sent = [self.args.code, self.args.reason]
                self.session.close(self.args.code, self.args.reason.encode())
        elif route == "reset" and is_bidi(stream_id):
            self.spawn(self.reset(stream_id))
        else:
            self.spawn(self.echo(stream_id))

    async def echo(self, stream_id: int) -> None:
        session, observed = self.session, self.observed
        kept = bytearray()
        try:
            async for event in session.receive_stream_data(stream_id):
                if isinstance(event, WebTransportStreamReset):
                    if not session.session_closed:
                        observed["resets"].append([stream_id, event.error_code])
                        if is_bidi(stream_id):
                            session.reset_stream(stream_id, event.error_code)
                    return
                data = bytes(event.data)
                observed["bytes_received"] += len(data)
                if not is_bidi(stream_id):
                    kept += data
                elif data or event.end_stream:
                    await send_all(session, stream_id, data, event.end_stream)
                    observed["bytes_sent"] += len(data)
            if not is_bidi(stream_id):
                answer = await session.create_stream(bidir=False)
                await send_all(session, answer, bytes(kept), True)
                observed["bytes_sent"] += len(kept)
        except ConnectionError as error:  # aiopquic's WebTransportError: stream or session gone
            if not session.session_closed:
                observed["errors"].append(f"echo {stream_id}: {error!r}")

    async def reset(self, stream_id: int) -> None:
        session = self.session
        async for event in session.receive_stream_data(stream_id):
            if isinstance(event, WebTransportStreamDataReceived) and len(event.data):
                self.observed["bytes_received"] += len(event.data)
                session.reset_stream(stream_id, self.args.reset_code)
                session.stop_stream(stream_id, self.args.stop_code)
                return
            if not isinstance(event, WebTransportStreamDataReceived) or event.end_stream:
                return

    async def push_all(self) -> None:
        """Open the streams at once; print the client's replies once they are all in."""
        replies = await asyncio.gather(*(self.push(index) for index in range(self.args.count)))
        self.observed["replies"] = replies
        result({"pushed": replies})

    async def push(self, index: int) -> list[Any]:
        session = self.session
        try:
            bidi = await session.create_stream(bidir=True)
            await send_all(session, bidi, f"server-bidi-{index}".encode(), True)
            uni = await session.create_stream(bidir=False)
            await send_all(session, uni, f"server-uni-{index}".encode(), True)
            reply, code = await read_stream(session, bidi)
        except ConnectionError as error:
            return [None, None, repr(error), None]
        return [bidi, uni, reply.decode(), code]


async def sockets_open(server: WebTransportServer) -> bool:
    """Whether picoquic opened the server's sockets, within BIND_WAIT.

    ``serve_webtransport`` returns once picoquic's thread is started; the thread opens the
    sockets afterwards (and ends at once if it cannot). aiopquic signals neither, only a
    ``thread_ready`` flag, so it is checked every few milliseconds.
    """
    transport = server._transport  # the server's TransportContext
    deadline = asyncio.get_running_loop().time() + BIND_WAIT
    while not transport.thread_ready:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


async def run_server(args: Options) -> None:
    async def handler(session: WebTransportSession) -> None:
        await ServerSession(session, args).run()

    for _ in range(BIND_TRIES):
        # aiopquic does not report the port it bound: a free one is picked first.
        port = args.port or free_udp_port(args.host)
        server = await serve_webtransport(
            args.host,
            port,
            args.path,
            handler=handler,
            cert_file=args.cert,
            key_file=args.key,
            configuration=configuration(args, is_client=False),
            wt_supported_protocols=args.protocols,
        )
        if await sockets_open(server):
            break
        server.close()  # the port was taken meanwhile: another one
    else:
        raise RuntimeError(f"picoquic opened no socket in {BIND_TRIES} tries")
    ready(port)
    try:
        await asyncio.Event().wait()  # until the test terminates the process
    finally:
        await server.aclose()


# ---------------------------------------------------------------------------------------------
# Client scenarios
# ---------------------------------------------------------------------------------------------


async def next_event(session: WebTransportSession, kinds: tuple[type, ...]) -> Any:
    """The next event of one of ``kinds`` from the session's event stream (others are dropped)."""
    async for event in session.events():
        if isinstance(event, kinds):
            return event
    raise ConnectionError("the session ended first")


async def scenario_bidi(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    small = await wt.create_stream(bidir=True)
    await send_all(wt, small, b"hello", True)
    small_echo, small_code = await read_stream(wt, small)
    payload = pattern(args.size, seed=7)
    big = await wt.create_stream(bidir=True)
    await send_all(wt, big, payload, True)
    echo, code = await read_stream(wt, big)
    return {
        "stream_ids": [small, big],
        "small": small_echo.decode(),
        "codes": [small_code, code],
        "size": len(echo),
        "same": echo == payload,
    }


async def scenario_uni(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    payload = pattern(args.size, seed=9)
    sent = await wt.create_stream(bidir=False)
    await send_all(wt, sent, payload, True)
    event = await next_event(wt, (WebTransportNewStream,))
    received, code = await read_stream(wt, event.stream_id)
    return {
        "sent_id": sent,
        "received_id": event.stream_id,
        "code": code,
        "size": len(received),
        "same": received == payload,
    }


async def scenario_datagrams(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    answers = []
    for payload in (b"dgram-A", pattern(args.size, seed=11)):
        for _ in range(DATAGRAM_TRIES):  # datagrams may be lost: send again after a while
            wt.send_datagram_frame(payload)
            try:
                async with asyncio.timeout(DATAGRAM_WAIT):
                    event = await next_event(wt, (WebTransportDatagramReceived,))
            except TimeoutError:
                continue
            answers.append(bytes(event.data) == payload)
            break
        else:
            answers.append(False)
    return {"echoed": answers}


async def scenario_largest(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    """Send a datagram of :data:`DATAGRAM_LIMIT` bytes, then a marker until the marker's echo
    comes back; report whether the large one's echo came first, and the error of a datagram
    one byte larger."""
    refused = refused_above_limit(wt)
    largest = pattern(DATAGRAM_LIMIT, seed=DATAGRAM_LIMIT)
    wt.send_datagram_frame(largest)
    echoed = False
    for _ in range(DATAGRAM_TRIES):  # datagrams may be lost: send again after a while
        wt.send_datagram_frame(b"marker")
        try:
            async with asyncio.timeout(DATAGRAM_WAIT):
                while True:
                    event = await next_event(wt, (WebTransportDatagramReceived,))
                    if bytes(event.data) == b"marker":
                        break
                    echoed = echoed or bytes(event.data) == largest
        except TimeoutError:
            continue
        return {"size": len(largest), "echoed": echoed, "refused": refused}
    raise AssertionError(f"no marker came back after {DATAGRAM_TRIES} tries")


async def scenario_push(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    bidi: list[Any] = []
    uni: list[Any] = []
    while len(bidi) < args.count or len(uni) < args.count:
        event = await next_event(wt, (WebTransportNewStream,))
        stream_id = event.stream_id
        data, code = await read_stream(wt, stream_id)
        if is_bidi(stream_id):
            await send_all(wt, stream_id, b"client-reply:" + data, True)
            bidi.append([stream_id, data.decode(), code])
        else:
            uni.append([stream_id, data.decode(), code])
    # The server closes once it has read the replies (a close from here would reset them).
    seen: WebTransportSessionClosed | None = None
    async for event in wt.events():
        if isinstance(event, WebTransportSessionClosed):
            seen = event
    return {"bidi": bidi, "uni": uni, "close": close_of(wt, seen)}


async def scenario_close(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    await wt.aclose(args.code, args.reason.encode())
    return {"closed": wt.session_closed}


async def scenario_closed_by_server(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    stream = await wt.create_stream(bidir=True)
    await send_all(wt, stream, b"close me", False)
    seen: WebTransportSessionClosed | None = None
    async for event in wt.events():
        if isinstance(event, WebTransportSessionClosed):
            seen = event
    return {"close": close_of(wt, seen)}


async def scenario_restart(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    """Echo ``hello`` and report ``connected`` at once; then send a datagram every
    :data:`TICK` seconds (the traffic a restarted server answers) until the session ends;
    report how."""
    small = await wt.create_stream(bidir=True)
    await send_all(wt, small, b"hello", True)
    echoed, _ = await read_stream(wt, small)
    result({"connected": echoed == b"hello"})
    seen: list[WebTransportSessionClosed] = []

    async def watch() -> None:
        async for event in wt.events():
            if isinstance(event, WebTransportSessionClosed):
                seen.append(event)

    ended = asyncio.ensure_future(watch())
    while not ended.done():
        with contextlib.suppress(Exception):  # a send on a session that just ended
            wt.send_datagram_frame(b"tick")
        await asyncio.wait({ended}, timeout=TICK)
    return {"closed": close_of(wt, seen[0] if seen else None)}


async def scenario_codes(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    """Reset one stream and stop another, each once the server has answered on it; then read
    the server's report of the codes it saw, on the unidirectional stream it opens."""

    async def answered(text: bytes) -> int:
        stream = await wt.create_stream(bidir=True)
        await send_all(wt, stream, text, False)
        async for event in wt.receive_stream_data(stream):
            if not isinstance(event, WebTransportStreamDataReceived) or len(event.data):
                break  # the server's first bytes (or the stream ended)
        return stream

    reset = await answered(b"reset me")
    wt.reset_stream(reset, args.reset_code)
    stopped = await answered(b"stop me")
    wt.stop_stream(stopped, args.stop_code)
    event = await next_event(wt, (WebTransportNewStream,))
    report, code = await read_stream(wt, event.stream_id)
    return {"reset_id": reset, "stopped_id": stopped, "report": report.decode(), "code": code}


async def scenario_server_codes(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    """Send on a stream the server then resets and stops: which codes arrive here?"""
    stream = await wt.create_stream(bidir=True)
    await send_all(wt, stream, b"reset and stop me", False)
    stop = await next_event(wt, (WebTransportStopSending,))
    data, reset_code = await read_stream(wt, stream)
    return {
        "stream_id": stream,
        "stop": [stop.stream_id, stop.error_code],
        "reset": reset_code,
        "data": data.decode(),
    }


async def scenario_many(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    async def one(index: int) -> bool:
        stream = await wt.create_stream(bidir=True)
        text = f"stream-{index}".encode()
        await send_all(wt, stream, text, True)
        echo, code = await read_stream(wt, stream)
        return echo == text and code is None

    done = 0
    for first in range(0, args.streams, args.batch):
        batch = range(first, min(first + args.batch, args.streams))
        results = await asyncio.gather(*(one(index) for index in batch))
        done += sum(results)
    return {"streams": done}


async def scenario_flow(wt: WebTransportSession, args: Options) -> dict[str, Any]:
    """Write ``size`` bytes on one stream while reading the echo (both under small windows)."""
    payload = pattern(args.size, seed=13)
    stream = await wt.create_stream(bidir=True)
    piece = 4096

    async def write() -> None:
        for offset in range(0, len(payload), piece):
            last = offset + piece >= len(payload)
            await wt.send_stream_data_drained(
                stream, payload[offset : offset + piece], end_stream=last
            )

    writer = asyncio.ensure_future(write())
    echo, code = await read_stream(wt, stream)
    await writer
    return {
        "size": len(echo),
        "same": echo == payload,
        "code": code,
        "transport_parameters": transport_parameters(wt),
    }


SCENARIOS = {
    "bidi": scenario_bidi,
    "uni": scenario_uni,
    "datagrams": scenario_datagrams,
    "push": scenario_push,
    "close": scenario_close,
    "closed_by_server": scenario_closed_by_server,
    "codes": scenario_codes,
    "server_codes": scenario_server_codes,
    "many": scenario_many,
    "flow": scenario_flow,
    "restart": scenario_restart,
    "largest": scenario_largest,
}


async def run_client(args: Options) -> None:
    url = urlsplit(args.url)
    path = url.path + (f"?{url.query}" if url.query else "")
    async with connect_webtransport(
        url.hostname or "127.0.0.1",
        url.port or 443,
        path,
        sni="localhost",
        configuration=configuration(args, is_client=True),
        verify_peer=bool(args.ca),
        ca_file=args.ca,
        wt_available_protocols=args.protocols,
    ) as wt:
        outcome = await SCENARIOS[args.scenario](wt, args)
        if args.protocols is not None:
            outcome["protocol"] = wt.negotiated_protocol
    result(outcome)


def main() -> None:
    args = Options(parse_args(__doc__.splitlines()[0]))
    if args.mode == "server":
        run(run_server(args))
    elif args.scenario not in SCENARIOS:
        raise SystemExit(f"unknown scenario {args.scenario!r}; known: {sorted(SCENARIOS)}")
    else:
        run(run_client(args), timeout=args.timeout)


if __name__ == "__main__":
    main()
