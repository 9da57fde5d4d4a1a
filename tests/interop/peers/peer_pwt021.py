"""A pywebtransport 0.21.1 peer (the PyPI release: a Rust core on quinn, draft-15) for the
interop tests.

Run by ``tests/interop/peer_process.py`` under the peers' Python 3.12 with the working directory
``tests/interop/peers`` and no ``PYTHONPATH``, so ``import pywebtransport`` is 0.21.1 from the
peers' virtualenv, never the project under test. The command line is
:func:`peer_common.parse_args`'s; the ``--set`` options named in :data:`CONFIG_OPTIONS` go to
0.21.1's ``ServerConfig`` / ``ClientConfig`` (session flow control: ``initial_max_data``,
``initial_max_streams_bidi`` / ``_uni``, ``session_receive_window``, ...), the others to the
client's scenario.

Server mode listens on ``--host`` and ``--port`` (0.21.1 cannot bind port 0: without ``--port``
a free port is picked first),
prints ``READY <port>`` and serves the paths of ``peer_quinn.py`` (``/echo``, ``/source``,
``/reset?reset=R&stop=S``, ``/close?code=C&reason=TEXT``, ``/push?bidi=N&uni=M&batch=B``), with
datagram echo on each (a datagram larger than 0.21.1 may send is counted in
``datagrams_not_echoed`` instead; with ``?reply=N`` each datagram is answered with one of N
bytes, ``pattern(N, seed=N)``, listed in ``largest_sent``); anything else is rejected with 404.
With ``--set protocols=a,b`` it accepts each session with its most preferred subprotocol
that the client offered (``offered`` and ``protocol`` in the session's record); a client given
``--set protocols=a,b`` offers them (``protocol`` in its ``RESULT``: what the server chose).
Its ``RESULT`` lines have an ``event``: ``reset`` / ``stop`` (with ``code``) when the client's
RESET_STREAM / STOP_SENDING is seen, ``pushed`` when ``/push`` is done, ``session`` when a
session ends.

Besides the codes, a session's record has 0.21.1's own view of session flow control: its
``diagnose()`` at the start (``local_max_*``: the credit it granted, ``peer_max_*``: the credit
we granted), and the count of its flow-control events (``session_max_data_updated``: a
WT_MAX_DATA from us raised its credit, ``session_data_blocked``: we said we were blocked, ...).

Client mode (``--ca`` is the certificate to trust) runs one ``scenario_*`` function and prints
one ``RESULT`` with the same flow-control fields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from peer_common import (
    Tasks,
    error_info,
    free_udp_port,
    note,
    parse_args,
    pattern,
    ready,
    result,
    run,
    session_record,
    url_options,
)

import pywebtransport as pwt
from pywebtransport.types import EventType

if pwt.__version__ != "0.21.1":
    raise SystemExit(f"peer_pwt021.py needs pywebtransport 0.21.1, found {pwt.__version__}")

CHUNK = 65536
DATAGRAM_WAIT = 1.0
DATAGRAM_TRIES = 5
SCENARIO_TIMEOUT = 40.0
#: ``--set`` options that configure 0.21.1 itself (the rest are scenario options).
CONFIG_OPTIONS = frozenset(
    {
        "initial_max_data",
        "initial_max_streams_bidi",
        "initial_max_streams_uni",
        "session_receive_window",
        "stream_receive_window",
        "connection_receive_window",
        "max_streams_bidi",
        "max_streams_uni",
    }
)
#: The session events 0.21.1 emits about flow control, counted per session.
FLOW_EVENTS = (
    EventType.SESSION_MAX_DATA_UPDATED,
    EventType.SESSION_MAX_STREAMS_BIDI_UPDATED,
    EventType.SESSION_MAX_STREAMS_UNI_UPDATED,
    EventType.SESSION_DATA_BLOCKED,
    EventType.SESSION_STREAMS_BLOCKED,
)
DIAGNOSTIC_FIELDS = (
    "flow_control_negotiated",
    "local_max_data",
    "local_max_streams_bidi",
    "local_max_streams_uni",
    "peer_max_data",
    "peer_max_streams_bidi",
    "peer_max_streams_uni",
)


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(0.21.1 configuration options, scenario options)."""
    config = {k: v for k, v in options.items() if k in CONFIG_OPTIONS}
    return config, {k: v for k, v in options.items() if k not in CONFIG_OPTIONS}


async def diagnostics(session: pwt.WebTransportSession) -> dict[str, Any] | None:
    """The flow-control part of ``session.diagnose()`` (None once the session closed)."""
    try:
        diagnosed = await session.diagnose()
    except pwt.WebTransportError:
        return None
    return {name: getattr(diagnosed, name) for name in DIAGNOSTIC_FIELDS}


class Watch:
    """What 0.21.1 reports about one session through its connection's events (``session_id``
    None: about any session of the connection, for a client's only one)."""

    def __init__(self, session_id: int | None, on_stream: Callable[[str, int], None]) -> None:
        self.session_id = session_id
        self.on_stream = on_stream
        self.counts = {str(event): 0 for event in FLOW_EVENTS}
        self.close: dict[str, Any] | None = None
        self.closed = asyncio.Event()

    def handle(self, event: pwt.Event) -> None:
        data = event.data or {}
        if event.type == EventType.CONNECTION_CLOSED:
            if self.close is None:
                self.close = {"connection": True, "code": data.get("error_code")}
                self.close["reason"] = data.get("reason")
            self.closed.set()
            return
        stream = data.get("stream")
        session_id = data.get("session_id")
        if session_id is None and stream is not None:
            with contextlib.suppress(pwt.WebTransportError):
                session_id = stream.session.session_id
        if self.session_id is not None and session_id != self.session_id:
            return
        if event.type in FLOW_EVENTS:
            self.counts[str(event.type)] += 1
        elif event.type == EventType.SESSION_CLOSED:
            self.close = {"code": data.get("error_code"), "reason": data.get("reason")}
            self.closed.set()
        elif event.type == EventType.STREAM_RESET_RECEIVED:
            self.on_stream("reset", data.get("error_code"))
        elif event.type == EventType.STREAM_STOP_SENDING_RECEIVED:
            self.on_stream("stop", data.get("error_code"))

    def attach(self, connection: pwt.WebTransportConnection) -> None:
        watched = (
            *FLOW_EVENTS,
            EventType.SESSION_CLOSED,
            EventType.STREAM_RESET_RECEIVED,
            EventType.STREAM_STOP_SENDING_RECEIVED,
            EventType.CONNECTION_CLOSED,
        )
        for event_type in watched:
            connection.events.on(event_type=event_type, handler=self.handle)


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


class Served:
    """One accepted session on the server and what it observed."""

    def __init__(self, session: pwt.WebTransportSession, path: str, query: dict[str, Any]):
        self.session = session
        self.query = query
        self.tasks = Tasks()
        self.watch = Watch(session.session_id, self.observed)
        self.record = session_record(path)

    def observed(self, kind: str, code: int) -> None:
        self.record["resets" if kind == "reset" else "stops"].append(code)
        result({"event": kind, "code": code, "path": self.record["path"]})

    def unexpected(self, where: str, error: BaseException) -> None:
        if not self.session.is_closed:  # what fails with the session is no error
            self.record["errors"].append({"where": where, **error_info(error)})

    def accept_loop(self, incoming: Any, handle: Callable[[Any], Coroutine[Any, Any, None]]):
        async def loop() -> None:
            with contextlib.suppress(pwt.WebTransportError):
                async for stream in incoming:
                    self.tasks.spawn(handle(stream))

        self.tasks.spawn(loop())

    # -- per-stream behaviours

    async def echo_bidi(self, stream: pwt.WebTransportBidirectionalStream) -> None:
        reading = True
        try:
            while chunk := await stream.read(max_size=CHUNK):
                self.record["bytes_received"] += len(chunk)
                reading = False
                await stream.write(data=chunk)
                reading = True
            await stream.write(data=b"", end_stream=True)
            self.record["bidi_echoed"] += 1
        except pwt.StreamError as error:
            # A reset (read) or STOP_SENDING (write) from the client: answered in kind with
            # the code 0.21.1 passes on (the event reported it already).
            with contextlib.suppress(pwt.WebTransportError):
                if reading:
                    await stream.reset(error_code=error.error_code)
                else:
                    await stream.stop_receiving(error_code=error.error_code)
        except pwt.WebTransportError as error:
            self.unexpected("echo_bidi", error)

    async def echo_uni(self, stream: pwt.WebTransportReceiveStream) -> None:
        try:
            data = await stream.read_all()
            self.record["bytes_received"] += len(data)
            answer = await self.session.create_unidirectional_stream()
            await answer.write(data=data, end_stream=True)
            self.record["uni_echoed"] += 1
        except pwt.StreamError:
            pass  # a reset: the event reported it
        except pwt.WebTransportError as error:
            self.unexpected("echo_uni", error)

    async def source_bidi(self, stream: pwt.WebTransportBidirectionalStream) -> None:
        with contextlib.suppress(pwt.WebTransportError):  # ends with the client's STOP_SENDING
            await stream.read(max_size=CHUNK)
            block = pattern(CHUNK)
            while True:
                await stream.write(data=block)

    async def reset_bidi(self, stream: pwt.WebTransportBidirectionalStream) -> None:
        try:
            await stream.read(max_size=CHUNK)
            await stream.reset(error_code=int(self.query.get("reset", 0)))
            await stream.stop_receiving(error_code=int(self.query.get("stop", 0)))
        except pwt.WebTransportError as error:
            self.unexpected("reset_bidi", error)

    async def push_bidi(self, index: int) -> None:
        try:
            stream = await self.session.create_bidirectional_stream()
            sent = f"server-bidi-{index}".encode()
            await stream.write(data=sent, end_stream=True)
            if await stream.read_all() == b"reply:" + sent:
                self.record["push_bidi_ok"] += 1
        except pwt.WebTransportError as error:
            self.unexpected("push_bidi", error)

    async def push_uni(self, index: int) -> None:
        try:
            stream = await self.session.create_unidirectional_stream()
            await stream.write(data=f"server-uni-{index}".encode(), end_stream=True)
            self.record["push_uni_sent"] += 1
        except pwt.WebTransportError as error:
            self.unexpected("push_uni", error)

    async def push(self) -> None:
        bidi, uni = int(self.query.get("bidi", 0)), int(self.query.get("uni", 0))
        batch = int(self.query.get("batch", 0)) or max(bidi, uni, 1)
        for start in range(0, max(bidi, uni), batch):
            await asyncio.gather(
                *(self.push_bidi(i) for i in range(start, min(start + batch, bidi))),
                *(self.push_uni(i) for i in range(start, min(start + batch, uni))),
            )
        record = self.record
        pushed = {"bidi_ok": record["push_bidi_ok"], "uni_sent": record["push_uni_sent"]}
        result({"event": "pushed", **pushed, "errors": record["errors"]})

    async def echo_datagrams(self) -> None:
        reply = self.query.get("reply")  # a size: answer with a datagram of that size instead
        with contextlib.suppress(pwt.WebTransportError):
            while True:
                data = await self.session.read_datagram()
                if reply is not None:
                    self.record["largest_sent"].append(int(reply))
                    data = pattern(int(reply), seed=int(reply))
                try:
                    await self.session.send_datagram(data=data)
                except pwt.DatagramError:  # larger than 0.21.1 sends: noted, not echoed
                    self.record["datagrams_not_echoed"].append(len(data))
                    continue
                self.record["datagrams_echoed"] += 1

    # -- routes

    def route_echo(self) -> None:
        self.accept_loop(self.session.incoming_bidirectional_streams(), self.echo_bidi)
        self.accept_loop(self.session.incoming_unidirectional_streams(), self.echo_uni)

    def route_source(self) -> None:
        self.accept_loop(self.session.incoming_bidirectional_streams(), self.source_bidi)

    def route_reset(self) -> None:
        self.accept_loop(self.session.incoming_bidirectional_streams(), self.reset_bidi)

    def route_close(self) -> None:
        code, reason = int(self.query.get("code", 0)), str(self.query.get("reason", ""))
        self.tasks.spawn(self.session.close(error_code=code, reason=reason))

    def route_push(self) -> None:
        self.route_echo()
        self.tasks.spawn(self.push())

    async def serve(self, route: Callable[[Served], None]) -> None:
        try:
            self.record["at_start"] = await diagnostics(self.session)
            self.tasks.spawn(self.echo_datagrams())
            route(self)
            await self.watch.closed.wait()
        finally:
            await self.tasks.cancel()
            self.record["close"] = self.watch.close
            self.record["flow_events"] = self.watch.counts
            result(self.record)


ROUTES: dict[str, Callable[[Served], None]] = {
    "/echo": Served.route_echo,
    "/source": Served.route_source,
    "/reset": Served.route_reset,
    "/close": Served.route_close,
    "/push": Served.route_push,
}


def protocol_list(value: Any) -> list[str]:
    """The ``--set protocols=a,b`` option as a list (most preferred first)."""
    return [name for name in str(value).split(",") if name]


async def serve_connection(
    connection: pwt.WebTransportConnection, tasks: Tasks, protocols: list[str]
) -> None:
    with contextlib.suppress(pwt.WebTransportError):
        async for session in connection.incoming_sessions():
            path, query = url_options(session.path)
            route = ROUTES.get(path)
            if route is None:
                await session.reject(status_code=404)
                continue
            served = Served(session, path, query)
            served.watch.attach(connection)  # before the client can close it
            # The server's most preferred subprotocol that the client offered, if any.
            offered = session.wt_available_protocols
            chosen = next((name for name in protocols if name in (offered or [])), None)
            served.record["offered"] = offered
            served.record["protocol"] = chosen
            await session.accept(wt_protocol=chosen)
            tasks.spawn(served.serve(route))


async def serve(host: str, port: int, certfile: str, keyfile: str, options: dict[str, Any]) -> None:
    config, own = split_options(options)
    protocols = protocol_list(own.get("protocols", ""))
    server_config = pwt.ServerConfig(
        certfile=certfile,
        keyfile=keyfile,
        bind_host=host,
        bind_port=port or free_udp_port(host),
        **config,
    )
    tasks = Tasks()
    async with pwt.WebTransportServer(config=server_config) as server:
        await server.listen()
        note(f"limits {config}")
        ready(int(server.local_addresses[0][1]))
        async for connection in server.incoming_connections():
            tasks.spawn(serve_connection(connection, tasks, protocols))


# ---------------------------------------------------------------------------------------------
# Client scenarios: each gets the session and its options, returns its RESULT fields
# ---------------------------------------------------------------------------------------------


async def echo_bidi_once(session: pwt.WebTransportSession, payload: bytes) -> bytes:
    stream = await session.create_bidirectional_stream()
    writer = asyncio.create_task(stream.write(data=payload, end_stream=True))
    echoed = await stream.read_all()
    await writer
    return echoed


async def scenario_bidi(session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch):
    """Echo ``hello``, ``size`` bytes and nothing on three bidirectional streams."""
    payload = pattern(int(options.get("size", 300_000)), seed=7)
    small = await echo_bidi_once(session, b"hello")
    large = await echo_bidi_once(session, payload)
    empty = await echo_bidi_once(session, b"")
    return {
        "small_ok": small == b"hello",
        "large_ok": large == payload,
        "empty_ok": empty == b"",
        "large": len(large),
    }


async def scenario_uni(session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch):
    """Send ``size`` bytes on a unidirectional stream and read the server's one back."""
    payload = pattern(int(options.get("size", 50_000)), seed=9)
    stream = await session.create_unidirectional_stream()
    await stream.write(data=payload, end_stream=True)
    incoming = await anext(session.incoming_unidirectional_streams())
    received = await incoming.read_all()
    return {"ok": received == payload, "received": len(received)}


async def scenario_datagrams(
    session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch
):
    """Round trips of a small and a ``size``-byte datagram (sent again when one is lost)."""
    answers = []
    for payload in (b"dgram-1", pattern(int(options.get("size", 1000)), seed=11)):
        answer = None
        for _ in range(DATAGRAM_TRIES):
            await session.send_datagram(data=payload)
            try:
                async with asyncio.timeout(DATAGRAM_WAIT):
                    answer = await session.read_datagram()
                break
            except TimeoutError:
                continue
        answers.append(answer == payload)
    return {"answers_ok": answers, "size": len(payload)}


async def scenario_accept(session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch):
    """Accept ``bidi`` server-opened bidirectional streams and ``uni`` unidirectional ones,
    answer each bidirectional one with ``reply:`` and its bytes once every unidirectional one
    is read (so the answers, read by the server, tell it that everything arrived), then wait
    for the server to close the session; report what the streams carried."""
    bidi_count, uni_count = int(options.get("bidi", 1)), int(options.get("uni", 1))
    bidi: list[str] = []
    uni: list[str] = []
    uni_read = asyncio.Event()

    async def answer(stream: pwt.WebTransportBidirectionalStream) -> None:
        data = await stream.read_all()
        bidi.append(data.decode())
        await uni_read.wait()
        await stream.write(data=b"reply:" + data, end_stream=True)

    async def take(stream: pwt.WebTransportReceiveStream) -> None:
        uni.append((await stream.read_all()).decode())

    async def accept_all(incoming: Any, handle: Any, count: int) -> None:
        tasks = []
        if count:
            async for stream in incoming:
                tasks.append(asyncio.create_task(handle(stream)))
                if len(tasks) == count:
                    break
        await asyncio.gather(*tasks)

    async def read_all_uni() -> None:
        await accept_all(session.incoming_unidirectional_streams(), take, uni_count)
        uni_read.set()

    await asyncio.gather(
        accept_all(session.incoming_bidirectional_streams(), answer, bidi_count),
        read_all_uni(),
    )
    await watch.closed.wait()  # the server closes the session once it read every answer
    return {"bidi": sorted(bidi), "uni": sorted(uni), "closed": watch.close}


async def scenario_many(session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch):
    """Echo ``count`` bidirectional and ``uni`` (default ``count``) unidirectional streams of
    ``size`` bytes (default: their names), ``batch`` at a time (a batch of unidirectional
    streams ends when as many echoes came back)."""
    count, batch = int(options.get("count", 200)), int(options.get("batch", 25))
    uni_count, size = int(options.get("uni", count)), int(options.get("size", 0))

    def payload(name: str, index: int) -> bytes:
        return pattern(size, seed=index) if size else name.encode()

    bidi_ok = 0
    for start in range(0, count, batch):
        sent = [payload(f"stream-{i}", i) for i in range(start, min(start + batch, count))]
        echoed = await asyncio.gather(*(echo_bidi_once(session, data) for data in sent))
        bidi_ok += sum(a == b for a, b in zip(echoed, sent, strict=True))

    async def send_uni(data: bytes) -> None:
        stream = await session.create_unidirectional_stream()
        await stream.write(data=data, end_stream=True)

    # Every echo is read as soon as it arrives: the echoes share the session's credit, and
    # one left unread could hold all of it while another is being read.
    arrived: asyncio.Queue[asyncio.Task[bytes]] = asyncio.Queue()

    async def collect() -> None:
        async for stream in session.incoming_unidirectional_streams():
            arrived.put_nowait(asyncio.create_task(stream.read_all()))

    collector = asyncio.create_task(collect())
    sent_uni: list[bytes] = []
    received: list[bytes] = []
    for start in range(0, uni_count, batch):
        batch_data = [payload(f"uni-{i}", i) for i in range(start, min(start + batch, uni_count))]
        await asyncio.gather(*(send_uni(data) for data in batch_data))
        sent_uni += batch_data
        readers = [await arrived.get() for _ in batch_data]
        received += await asyncio.gather(*readers)
    collector.cancel()
    return {
        "bidi_ok": bidi_ok,
        "uni_sent": len(sent_uni),
        "uni_ok": sum(data in sent_uni for data in received),
    }


async def scenario_close(session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch):
    """Close the session with ``code`` and ``reason``."""
    code, reason = int(options.get("code", 0)), str(options.get("reason", ""))
    await session.close(error_code=code, reason=reason)
    await watch.closed.wait()
    return {"closed": watch.close}


async def scenario_await_close(
    session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch
):
    """Wait for the server to close the session; report how it closed."""
    await watch.closed.wait()
    return {"closed": watch.close}


async def scenario_send_reset(
    session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch
):
    """Reset one bidirectional stream with ``reset`` once the server confirmed it (``got``),
    stop another with ``stop`` once the server writes on it, then wait for the server to
    close the session."""
    stream = await session.create_bidirectional_stream()
    await stream.write(data=b"reset me")
    confirmed = await stream.readexactly(size=3)
    await stream.reset(error_code=int(options.get("reset", 0)))
    second = await session.create_bidirectional_stream()
    await second.write(data=b"stop me")
    first = await second.read(max_size=CHUNK)
    await second.stop_receiving(error_code=int(options.get("stop", 0)))
    await watch.closed.wait()
    return {"confirmed": confirmed.decode(), "first": len(first), "closed": watch.close}


async def scenario_receive_reset(
    session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch
):
    """Write on a bidirectional stream the server resets and stops: report the codes, as the
    stream's errors and as 0.21.1's events."""
    events: dict[str, int] = {}
    watch.on_stream = lambda kind, code: events.setdefault(kind, code)
    stream = await session.create_bidirectional_stream()
    await stream.write(data=b"hello")
    outcome: dict[str, Any] = {}
    try:
        outcome["read"] = len(await stream.read_all())
    except pwt.StreamError as error:
        outcome["read_error"] = error_info(error)
    try:
        while True:  # until the STOP_SENDING arrives (bounded by the scenario's timeout)
            await stream.write(data=b"x" * 1000)
    except pwt.StreamError as error:
        outcome["write_error"] = error_info(error)
    outcome["events"] = events
    return outcome


async def scenario_restart(
    session: pwt.WebTransportSession, options: dict[str, Any], watch: Watch
) -> dict[str, Any]:
    """Echo ``hello`` and report ``connected`` at once; then send a datagram every ``tick``
    milliseconds (the traffic a restarted server answers) until the session ends; report how."""
    connected = await echo_bidi_once(session, b"hello") == b"hello"
    result({"connected": connected})
    tick = int(options.get("tick", 50)) / 1000
    closed = asyncio.ensure_future(watch.closed.wait())
    while not closed.done():
        with contextlib.suppress(pwt.WebTransportError):
            await session.send_datagram(data=b"tick")
        await asyncio.wait({closed}, timeout=tick)
    return {"closed": watch.close}


SCENARIOS: dict[
    str, Callable[[pwt.WebTransportSession, dict[str, Any], Watch], Awaitable[dict[str, Any]]]
] = {
    "bidi": scenario_bidi,
    "uni": scenario_uni,
    "datagrams": scenario_datagrams,
    "accept": scenario_accept,
    "many": scenario_many,
    "close": scenario_close,
    "await-close": scenario_await_close,
    "send-reset": scenario_send_reset,
    "receive-reset": scenario_receive_reset,
    "restart": scenario_restart,
}


class WatchedClient(pwt.WebTransportClient):
    """0.21.1's client with a :class:`Watch` on its connection from the connection's start, so
    that nothing is missed of a session the server closes as soon as it accepted it."""

    def __init__(self, *, config: pwt.ClientConfig, watch: Watch) -> None:
        super().__init__(config=config)
        self.watch = watch

    def _create_connection(self, controller: Any, handle: Any) -> pwt.WebTransportConnection:
        connection = super()._create_connection(controller, handle)
        self.watch.attach(connection)
        return connection


async def client(url: str, cafile: str, name: str, options: dict[str, Any]) -> None:
    scenario = SCENARIOS[name]
    config, scenario_options = split_options(options)
    offered = scenario_options.pop("protocols", None)
    client_config = pwt.ClientConfig(ca_certs=cafile, connect_timeout=10.0, **config)
    watch = Watch(None, lambda kind, code: None)
    async with WatchedClient(config=client_config, watch=watch) as endpoint:
        session = await endpoint.connect(
            url=url,
            timeout=10.0,
            wt_available_protocols=None if offered is None else protocol_list(offered),
        )
        at_start = await diagnostics(session)
        outcome = await scenario(session, scenario_options, watch)
        if offered is not None:
            outcome["protocol"] = session.wt_protocol
        outcome["at_start"] = at_start
        outcome["at_end"] = await diagnostics(session)
        outcome["flow_events"] = dict(watch.counts)
        if not session.is_closed:
            await session.close()
    result({"role": "client", "scenario": name, **outcome})


def main() -> None:
    args = parse_args("pywebtransport 0.21.1 interop peer")
    if args.mode == "server":
        run(serve(args.host, args.port, args.cert, args.key, args.options))
    else:
        run(client(args.url, args.ca, args.scenario, args.options), timeout=SCENARIO_TIMEOUT)


if __name__ == "__main__":
    main()
