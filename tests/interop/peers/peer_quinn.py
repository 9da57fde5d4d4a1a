"""A web-transport-quinn 0.1.0 peer (Rust quinn, draft-07 with us) for the interop tests.

Run by ``tests/interop/peer_process.py`` under the peers' Python 3.12; it imports
``web_transport`` and :mod:`peer_common`, never the project under test. The command line is
:func:`peer_common.parse_args`'s.

Server mode listens on ``--host`` and ``--port`` (by default one the system picks), prints
``READY <port>``, and serves these paths (options in the query string, e.g.
``/reset?reset=21&stop=22``); every path also echoes datagrams (one larger than quinn may send
at the time is counted in ``datagrams_not_echoed`` instead; with ``?reply=max`` each datagram
is answered with one of quinn's largest size, ``pattern(size, seed=size)``, listed in
``largest_sent``):

* ``/echo``: a bidirectional stream is echoed chunk by chunk on itself, then finished; a
  unidirectional stream is read to its end and sent back on a new unidirectional stream. A reset
  from the client is answered with a reset of the same code, a STOP_SENDING with a STOP_SENDING
  of the same code.
* ``/source``: on each bidirectional stream, once its first bytes arrive, writes without end
  until the client stops it.
* ``/reset?reset=R&stop=S``: on each bidirectional stream, once its first bytes arrive, a
  RESET_STREAM with code R and a STOP_SENDING with code S.
* ``/close?code=C&reason=TEXT``: closes the session at once.
* ``/push?bidi=N&uni=M&batch=B``: ``/echo``, and N server-opened bidirectional streams
  carrying ``server-bidi-<i>`` (the client's answer must be ``reply:`` and those bytes) and M
  unidirectional ones carrying ``server-uni-<i>``, B of each kind at a time (a round ends when
  its bidirectional streams are answered; without B, all at once).

Anything else is refused with 404. The server's ``RESULT`` lines have an ``event``:

* ``reset`` / ``stop`` (with ``code``) as soon as a client's RESET_STREAM / STOP_SENDING is seen;
* ``pushed`` once ``/push`` opened all its streams and checked the answers;
* ``session`` when a session ends: the path, the codes it received, counts, how it closed.

Client mode (``--cert-hash`` pins the server's certificate) runs one ``scenario_*`` function and
prints one ``RESULT``; ``--set`` gives its options.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import web_transport as wt
from peer_common import (
    Tasks,
    der_certificate_chain,
    der_private_key,
    error_info,
    note,
    parse_args,
    pattern,
    ready,
    result,
    run,
    session_record,
    url_options,
)

CHUNK = 65536
DATAGRAM_WAIT = 1.0
DATAGRAM_TRIES = 5
#: Upper bound on one client scenario (the test gives up sooner).
SCENARIO_TIMEOUT = 40.0


def close_info(reason: Any) -> dict[str, Any] | None:
    """How a session closed (``Session.close_reason``), as JSON."""
    return None if reason is None else error_info(reason)


async def read_all(recv: wt.RecvStream) -> bytes:
    """Read a stream to its end (raises what the read raises: a reset, a session close)."""
    return await recv.read()


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


class Served:
    """One accepted session on the server and what it observed."""

    def __init__(self, session: wt.Session, path: str, query: dict[str, Any]) -> None:
        self.session = session
        self.query = query
        self.tasks = Tasks()
        self.record = session_record(path)
        self.record["max_datagram_size"] = [session.max_datagram_size]

    def observed(self, error: wt.StreamClosedByPeer) -> None:
        self.record["resets" if error.kind == "reset" else "stops"].append(error.code)
        result({"event": error.kind, "code": error.code, "path": self.record["path"]})

    def unexpected(self, where: str, error: BaseException) -> None:
        if not isinstance(error, wt.SessionError):  # a session that ended is not an error
            self.record["errors"].append({"where": where, **error_info(error)})

    def accept_loop(
        self,
        accept: Callable[[], Awaitable[Any]],
        handle: Callable[[Any], Coroutine[Any, Any, None]],
    ) -> None:
        async def loop() -> None:
            try:
                while True:
                    self.tasks.spawn(handle(await accept()))
            except wt.WebTransportError as error:  # the session ended (said in case it did not)
                note(f"{self.record['path']}: accept loop ended: {error_info(error)}")

        self.tasks.spawn(loop())

    # -- per-stream behaviours

    async def echo_bidi(self, pair: tuple[wt.SendStream, wt.RecvStream]) -> None:
        send, recv = pair
        try:
            while chunk := await recv.read(CHUNK):
                self.record["bytes_received"] += len(chunk)
                await send.write(chunk)
            # Counted before the finish: quinn's finish() can return after the client has read
            # the end and closed the session, which cancels this task.
            self.record["bidi_echoed"] += 1
            await send.finish()
        except wt.StreamClosedByPeer as error:
            self.observed(error)
            if error.kind == "reset":
                with contextlib.suppress(wt.WebTransportError):
                    send.reset(error.code)
            else:
                with contextlib.suppress(wt.WebTransportError):
                    recv.stop(error.code)
        except wt.WebTransportError as error:
            self.unexpected("echo_bidi", error)

    async def echo_uni(self, recv: wt.RecvStream) -> None:
        try:
            data = await read_all(recv)
            self.record["bytes_received"] += len(data)
            send = await self.session.open_uni()
            await send.write(data)
            self.record["uni_echoed"] += 1  # before the finish, as in echo_bidi
            await send.finish()
        except wt.StreamClosedByPeer as error:
            self.observed(error)
        except wt.WebTransportError as error:
            self.unexpected("echo_uni", error)

    async def source_bidi(self, pair: tuple[wt.SendStream, wt.RecvStream]) -> None:
        send, recv = pair
        try:
            await recv.read(CHUNK)
            block = pattern(CHUNK)
            while True:
                await send.write(block)
        except wt.StreamClosedByPeer as error:
            self.observed(error)
        except wt.WebTransportError as error:
            self.unexpected("source_bidi", error)

    async def reset_bidi(self, pair: tuple[wt.SendStream, wt.RecvStream]) -> None:
        send, recv = pair
        try:
            await recv.read(CHUNK)
            send.reset(int(self.query.get("reset", 0)))
            recv.stop(int(self.query.get("stop", 0)))
        except wt.WebTransportError as error:
            self.unexpected("reset_bidi", error)

    async def push_bidi(self, index: int) -> None:
        try:
            send, recv = await self.session.open_bi()
            sent = f"server-bidi-{index}".encode()
            await send.write(sent)
            await send.finish()
            if await read_all(recv) == b"reply:" + sent:
                self.record["push_bidi_ok"] += 1
        except wt.WebTransportError as error:
            self.unexpected("push_bidi", error)

    async def push_uni(self, index: int) -> None:
        try:
            send = await self.session.open_uni()
            await send.write(f"server-uni-{index}".encode())
            await send.finish()
            self.record["push_uni_sent"] += 1
        except wt.WebTransportError as error:
            self.unexpected("push_uni", error)

    async def echo_datagrams(self) -> None:
        reply = self.query.get("reply")  # "max": answer with quinn's largest datagram instead
        with contextlib.suppress(wt.SessionError):
            while True:
                data = await self.session.receive_datagram()
                if reply == "max":
                    size = self.session.max_datagram_size
                    self.record["largest_sent"].append(size)
                    data = pattern(size, seed=size)
                try:
                    self.session.send_datagram(data)
                except wt.DatagramError:  # larger than quinn sends now: noted, not echoed
                    self.record["datagrams_not_echoed"].append(len(data))
                    continue
                self.record["datagrams_echoed"] += 1

    # -- routes

    def route_echo(self) -> None:
        self.accept_loop(self.session.accept_bi, self.echo_bidi)
        self.accept_loop(self.session.accept_uni, self.echo_uni)

    def route_source(self) -> None:
        self.accept_loop(self.session.accept_bi, self.source_bidi)

    def route_reset(self) -> None:
        self.accept_loop(self.session.accept_bi, self.reset_bidi)

    def route_close(self) -> None:
        self.session.close(int(self.query.get("code", 0)), str(self.query.get("reason", "")))

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

    def route_push(self) -> None:
        self.route_echo()
        self.tasks.spawn(self.push())


ROUTES: dict[str, Callable[[Served], None]] = {
    "/echo": Served.route_echo,
    "/source": Served.route_source,
    "/reset": Served.route_reset,
    "/close": Served.route_close,
    "/push": Served.route_push,
}


async def serve_request(request: wt.SessionRequest) -> None:
    path, query = url_options(request.url)
    route = ROUTES.get(path)
    if route is None:
        await request.reject(404)
        return
    served = Served(await request.accept(), path, query)
    try:
        served.tasks.spawn(served.echo_datagrams())
        route(served)
        await served.session.wait_closed()
    finally:
        await served.tasks.cancel()
        with contextlib.suppress(wt.WebTransportError):
            served.record["max_datagram_size"].append(served.session.max_datagram_size)
        served.record["close"] = close_info(served.session.close_reason)
        result(served.record)


async def serve(host: str, port: int, certfile: str, keyfile: str) -> None:
    tasks = Tasks()
    async with wt.Server(
        certificate_chain=der_certificate_chain(certfile),
        private_key=der_private_key(keyfile),
        bind=f"{host}:{port}",
    ) as server:
        ready(server.local_addr[1])
        async for request in server:
            tasks.spawn(serve_request(request))


# ---------------------------------------------------------------------------------------------
# Client scenarios: each gets the session and the --set options, returns its RESULT fields
# ---------------------------------------------------------------------------------------------


async def echo_bidi_once(session: wt.Session, payload: bytes) -> bytes:
    send, recv = await session.open_bi()

    async def write() -> None:
        await send.write(payload)
        await send.finish()

    writer = asyncio.create_task(write())
    echoed = await read_all(recv)
    await writer
    return echoed


async def scenario_bidi(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
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


async def scenario_uni(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
    """Send ``size`` bytes on a unidirectional stream and read the server's one back."""
    payload = pattern(int(options.get("size", 50_000)), seed=9)
    send = await session.open_uni()
    await send.write(payload)
    await send.finish()
    received = await read_all(await session.accept_uni())
    return {"ok": received == payload, "received": len(received)}


async def scenario_datagrams(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
    """Round trips of a small and a ``size``-byte datagram (sent again, up to ``tries`` times,
    when one is lost; ``size=max``: quinn's largest)."""
    answers = []
    size = options.get("size", 1000)
    size = session.max_datagram_size if size == "max" else int(size)
    for payload in (b"dgram-1", pattern(size, seed=11)):
        answer = None
        for _ in range(int(options.get("tries", DATAGRAM_TRIES))):
            session.send_datagram(payload)
            try:
                async with asyncio.timeout(DATAGRAM_WAIT):
                    answer = await session.receive_datagram()
                break
            except TimeoutError:
                continue
        answers.append(answer == payload)
    return {"answers_ok": answers, "size": size, "max_datagram_size": session.max_datagram_size}


async def scenario_accept(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
    """Accept ``bidi`` server-opened bidirectional streams and ``uni`` unidirectional ones,
    answer each bidirectional one with ``reply:`` and its bytes once every unidirectional one
    is read (so the answers, read by the server, tell it that everything arrived), then wait
    for the server to close the session; report what the streams carried."""
    bidi_count, uni_count = int(options.get("bidi", 1)), int(options.get("uni", 1))
    bidi: list[str] = []
    uni: list[str] = []
    uni_read = asyncio.Event()

    async def answer(pair: tuple[wt.SendStream, wt.RecvStream]) -> None:
        send, recv = pair
        data = await read_all(recv)
        bidi.append(data.decode())
        await uni_read.wait()
        await send.write(b"reply:" + data)
        await send.finish()

    async def answer_all() -> None:
        tasks = [asyncio.create_task(answer(await session.accept_bi())) for _ in range(bidi_count)]
        await asyncio.gather(*tasks)

    async def read_all_uni() -> None:
        readers = [
            asyncio.create_task(read_all(await session.accept_uni())) for _ in range(uni_count)
        ]
        uni.extend(data.decode() for data in await asyncio.gather(*readers))
        uni_read.set()

    await asyncio.gather(answer_all(), read_all_uni())
    # quinn's close would drop answers not yet sent: the server closes once it read them all.
    await session.wait_closed()
    return {"bidi": sorted(bidi), "uni": sorted(uni), "closed": close_info(session.close_reason)}


async def scenario_many(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
    """Echo ``count`` bidirectional and ``count`` unidirectional streams, ``batch`` at a time
    (a batch of unidirectional streams ends when as many echoes came back)."""
    count, batch = int(options.get("count", 200)), int(options.get("batch", 25))
    bidi_ok = 0
    for start in range(0, count, batch):
        names = [f"stream-{i}".encode() for i in range(start, min(start + batch, count))]
        echoed = await asyncio.gather(*(echo_bidi_once(session, name) for name in names))
        bidi_ok += sum(a == b for a, b in zip(echoed, names, strict=True))

    async def send_uni(name: bytes) -> None:
        send = await session.open_uni()
        await send.write(name)
        await send.finish()

    arrived: asyncio.Queue[asyncio.Task[bytes]] = asyncio.Queue()

    async def collect() -> None:  # every echo is read as soon as it arrives
        with contextlib.suppress(wt.WebTransportError):
            while True:
                arrived.put_nowait(asyncio.create_task(read_all(await session.accept_uni())))

    collector = asyncio.create_task(collect())
    sent: list[bytes] = []
    received: list[bytes] = []
    for start in range(0, count, batch):
        names = [f"uni-{i}".encode() for i in range(start, min(start + batch, count))]
        await asyncio.gather(*(send_uni(name) for name in names))
        sent += names
        readers = [await arrived.get() for _ in names]
        received += await asyncio.gather(*readers)
    collector.cancel()
    return {"bidi_ok": bidi_ok, "uni_sent": len(sent), "uni_ok": len(set(sent) & set(received))}


async def scenario_close(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
    """Close the session with ``code`` and ``reason``."""
    session.close(int(options.get("code", 0)), str(options.get("reason", "")))
    await session.wait_closed()
    return {"closed": close_info(session.close_reason)}


async def scenario_await_close(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
    """Wait for the server to close the session; report how it closed."""
    await session.wait_closed()
    return {"closed": close_info(session.close_reason)}


async def scenario_send_reset(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
    """Reset one bidirectional stream with ``reset`` once the server confirmed it (``got``),
    stop another with ``stop`` once the server writes on it, then wait for the server to
    close the session."""
    send, recv = await session.open_bi()
    await send.write(b"reset me")
    confirmed = await recv.readexactly(3)
    send.reset(int(options.get("reset", 0)))
    send2, recv2 = await session.open_bi()
    await send2.write(b"stop me")
    first = await recv2.read(CHUNK)
    recv2.stop(int(options.get("stop", 0)))
    await session.wait_closed()
    return {
        "confirmed": confirmed.decode(),
        "first": len(first),
        "closed": close_info(session.close_reason),
    }


async def scenario_receive_reset(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
    """Write on a bidirectional stream the server resets and stops: report the two codes."""
    send, recv = await session.open_bi()
    await send.write(b"hello")
    outcome: dict[str, Any] = {}
    try:
        outcome["read"] = len(await read_all(recv))
    except wt.StreamClosedByPeer as error:
        outcome["reset"] = {"kind": error.kind, "code": error.code}
    try:
        while True:  # until the STOP_SENDING arrives (bounded by the scenario's timeout)
            await send.write(b"x" * 1000)
    except wt.StreamClosedByPeer as error:
        outcome["stop"] = {"kind": error.kind, "code": error.code}
    return outcome


async def scenario_restart(session: wt.Session, options: dict[str, Any]) -> dict[str, Any]:
    """Echo ``hello`` and report ``connected`` at once; then send a datagram every ``tick``
    milliseconds (the traffic a restarted server answers) until the session ends; report how."""
    connected = await echo_bidi_once(session, b"hello") == b"hello"
    result({"connected": connected})
    tick = int(options.get("tick", 50)) / 1000
    closed = asyncio.ensure_future(session.wait_closed())
    while not closed.done():
        with contextlib.suppress(wt.WebTransportError):
            session.send_datagram(b"tick")
        await asyncio.wait({closed}, timeout=tick)
    return {"closed": close_info(session.close_reason)}


SCENARIOS: dict[str, Callable[[wt.Session, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
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


async def client(url: str, cert_hash: str, name: str, options: dict[str, Any]) -> None:
    scenario = SCENARIOS[name]
    async with wt.Client(server_certificate_hashes=[bytes.fromhex(cert_hash)]) as endpoint:
        session = await endpoint.connect(url)
        note(f"connected, max_datagram_size {session.max_datagram_size}")
        outcome = await scenario(session, options)
        with contextlib.suppress(wt.WebTransportError):  # already closed after "restart"
            session.close(0, "")
    result({"role": "client", "scenario": name, **outcome})


def main() -> None:
    args = parse_args("web-transport-quinn 0.1.0 interop peer")
    if args.mode == "server":
        run(serve(args.host, args.port, args.cert, args.key))
    else:
        run(
            client(args.url, args.cert_hash, args.scenario, args.options),
            timeout=SCENARIO_TIMEOUT,
        )


if __name__ == "__main__":
    main()
