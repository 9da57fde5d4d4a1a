"""The WebTransport server: one UDP socket, many QUIC connections routed by connection ID."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import os
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._engine import engine_factory, server_settings
from ..config import PemCertificate, ServerConfig
from ..connection import WebTransportConnection
from ..events import Event, EventType
from ..exceptions import ServerError
from ..protocol import LocalLimits, WebTransportProtocol
from ..protocol import events as ev
from ..protocol.admission import Accept, PacketAdmission, Reply
from ..protocol.packets import (
    route_packet,
)
from ..protocol.quic import EngineFactory
from ..protocol.subprotocol import offered_protocols, select_protocol
from ..protocol.wire import H3ErrorCode
from ..session import WebTransportSession, reject_session
from ..udp import Batch, UdpEndpoint, open_udp_socket
from .certificate import check_certificate_pair

if TYPE_CHECKING:
    from types import TracebackType

logger = logging.getLogger(__name__)

SessionHandler = Callable[[WebTransportSession], Awaitable[None]]


class Application(Protocol):
    """What a :class:`WebTransportServer` asks of its application (:class:`ServerApp` is one)."""

    def select_protocol(self, offered: list[str]) -> str | None:
        """The subprotocol to answer a client's offer with (None: none of them)."""

    async def startup(self) -> None:
        """Called once the server listens."""

    async def shutdown(self) -> None:
        """Called once the server has closed."""

    async def handle(self, session: WebTransportSession) -> bool:
        """Decide on and run one session; True when it was accepted."""


_CID_LENGTH = 8  # the length of the connection IDs the server chooses (both engines' default)


def _address(addr: Any) -> bytes:
    """A client address as bytes, for binding a Retry token to it."""
    return f"{addr[0]}|{addr[1]}".encode()


def _stateless_reset_key(config: ServerConfig, keyfile: str) -> bytes:
    """The configured key, else one derived from the TLS private key file.

    Derived from the key file, it is the same in every worker and after a restart with the same
    certificate key, so a restarted server can end its predecessor's connections at once.
    """
    if config.stateless_reset_key is not None:
        return config.stateless_reset_key
    try:
        with open(keyfile, "rb") as handle:
            secret = handle.read()
    except OSError as exc:
        raise ServerError(f"cannot read {keyfile}: {exc}") from exc
    return hmac.new(secret, b"pywebtransport stateless reset key", hashlib.sha256).digest()


def _write_pem(certificate: PemCertificate, certfile: str, keyfile: str) -> None:
    """Write an in-memory certificate and key to new files (the key file owner-only)."""
    with open(certfile, "xb") as cert_file:
        cert_file.write(certificate.cert_pem)
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(certificate.key_pem)


@dataclass
class ServerStats:
    """Server counters."""

    connections_accepted: int = 0
    connections_active: int = 0
    sessions_requested: int = 0
    sessions_accepted: int = 0
    sessions_rejected: int = 0
    sessions_active: int = 0
    packets_dropped: int = 0
    stateless_resets_sent: int = 0
    retries_sent: int = 0
    handshakes_timed_out: int = 0


class WebTransportServer:
    """Accepts WebTransport sessions on one UDP port.

    Args:
        config: listening address, certificate and limits.
        app: the application that handles sessions (an :class:`Application`, such as
            :class:`ServerApp`); without one every request is answered 404.
    """

    def __init__(self, *, config: ServerConfig, app: Application | None = None) -> None:
        self.config = config
        self.app = app
        if config.certificate is not None:
            # Both engines read the PEM files once, here: a private directory holds them
            # only while they are loaded.
            with tempfile.TemporaryDirectory(prefix="pywebtransport-") as folder:
                certfile, keyfile = f"{folder}/cert.pem", f"{folder}/key.pem"
                _write_pem(config.certificate, certfile, keyfile)
                self._engines = self._engine_factory(certfile, keyfile)
                self._reset_key = _stateless_reset_key(config, keyfile)
        elif config.certfile is None or config.keyfile is None:
            raise ServerError("a server needs certfile and keyfile, or certificate")
        else:
            self._engines = self._engine_factory(config.certfile, config.keyfile)
            self._reset_key = _stateless_reset_key(config, config.keyfile)
        self._cid_length = _CID_LENGTH
        self._transport: UdpEndpoint | None = None
        self._routes: dict[bytes, WebTransportConnection] = {}
        self._cids: dict[WebTransportConnection, set[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats = ServerStats()
        self._serving: asyncio.Future[None] | None = None
        self._closing = False
        self._handshaking: set[WebTransportConnection] = set()
        self._admission = PacketAdmission(
            cid_length=self._cid_length,
            retry=config.retry,
            retry_key=hmac.new(self._reset_key, b"retry", hashlib.sha256).digest(),
            reset_key=self._reset_key,
            max_connections=config.max_connections,
            random_bytes=os.urandom,
            now=time.monotonic(),
        )

    def _engine_factory(self, certfile: str, keyfile: str) -> EngineFactory:
        """The engine factory (``config.engine``) serving ``certfile`` and ``keyfile``."""
        settings = dataclasses.replace(
            server_settings(self.config), certfile=certfile, keyfile=keyfile
        )
        try:
            # The pair is checked first, so every engine reports a wrong one in the same words.
            check_certificate_pair(certfile, keyfile)
            return engine_factory(self.config.engine, settings)
        except (OSError, ValueError, TypeError) as exc:
            raise ServerError(f"cannot load certificate: {exc}") from exc

    def reload_certificate(self, *, certfile: str, keyfile: str) -> None:
        """Use a new certificate and key for connections accepted from now on.

        Connections already open (and their sessions) keep the TLS state they negotiated, so
        rotating a certificate drops nothing. The files are checked first: on any problem the
        current certificate stays in use.

        Args:
            certfile: PEM certificate (chain) file.
            keyfile: PEM private key file matching the certificate.

        Raises:
            ServerError: a file cannot be read or parsed, or the key does not match.
        """
        engines = self._engine_factory(certfile, keyfile)
        self._engines = engines
        self.config = self.config.update(certfile=certfile, keyfile=keyfile, certificate=None)
        logger.info("certificate reloaded from %s", certfile)

    # ----------------------------------------------------------------------------- life cycle

    async def listen(
        self, *, host: str | None = None, port: int | None = None, reuse_port: bool = False
    ) -> None:
        """Bind the UDP socket and start accepting connections.

        With ``reuse_port`` the socket is bound with ``SO_REUSEPORT`` so that several worker
        processes can share the port (see :mod:`pywebtransport.server.workers`).
        """
        if self._transport is not None:
            raise ServerError("already listening")
        host = self.config.host if host is None else host
        port = self.config.port if port is None else port
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = open_udp_socket(local=(host, port), family=family, reuse_port=reuse_port)
        except OSError as exc:
            raise ServerError(f"cannot listen on {host}:{port}: {exc}") from exc
        self._transport = UdpEndpoint(sock, on_batch=self._on_batch, on_error=self._on_error)
        self._serving = loop.create_future()
        if self.app is not None:
            await self.app.startup()
        logger.info("listening on %s", self.local_address)

    @property
    def local_address(self) -> tuple[Any, ...]:
        """The bound (host, port, ...) address."""
        if self._transport is None or self._transport.is_closed:
            raise ServerError("not listening")
        return self._transport.local_address

    @property
    def stats(self) -> dict[str, int]:
        """Counters of connections and sessions."""
        self._stats.connections_active = len(self._cids)
        self._stats.sessions_active = sum(len(c.sessions) for c in self._cids)
        return asdict(self._stats)

    def debug_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: address, stats, and every connection's sessions."""
        return {
            "listening": self._transport is not None and not self._transport.is_closed,
            "closing": self._closing,
            "local_address": (
                list(self._transport.local_address)
                if self._transport is not None and not self._transport.is_closed
                else None
            ),
            "stats": self.stats,
            "connections": [
                {
                    "remote_address": [str(part) for part in conn.remote_address[:2]],
                    "sessions": [
                        {
                            "session_id": s.session_id,
                            "path": s.path,
                            "state": s.state.value,
                            "protocol": s.protocol,
                        }
                        for s in conn.sessions
                    ],
                }
                for conn in self._cids
            ],
        }

    @property
    def sessions(self) -> list[WebTransportSession]:
        """The sessions that are open now (ready or draining), oldest connection first."""
        return [s for conn in self._cids for s in conn.sessions if s.is_ready]

    @property
    def connections(self) -> list[WebTransportConnection]:
        """The QUIC connections currently open."""
        return list(self._cids)

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called."""
        if self._serving is None:
            raise ServerError("call listen() first")
        await asyncio.shield(self._serving)

    async def close(self, *, grace: float | None = None) -> None:
        """Stop accepting, drain open sessions for up to ``grace`` seconds, then close the rest.

        From the first call on, new QUIC connections are ignored and new session requests are
        answered 503. Every connection gets a GOAWAY and every open session a DRAIN capsule
        (its state becomes DRAINING on both sides); sessions that end within ``grace``
        (default ``config.shutdown_grace``) end on their own terms, the rest are closed with
        code 0, then every connection is closed and the port released.
        """
        grace = self.config.shutdown_grace if grace is None else grace
        if grace < 0:
            raise ServerError(f"grace must be >= 0, got {grace}")
        if self._closing:
            return
        self._closing = True
        draining: list[WebTransportSession] = []
        for conn in list(self._cids):
            if conn.is_closed:
                continue
            conn.protocol.goaway()
            for session in conn.sessions:
                session.drain()
                if not session.is_closed:
                    draining.append(session)
            conn.flush_events()
            conn.schedule_transmit()
        if draining and grace > 0:
            waiting = [asyncio.ensure_future(session.wait_closed()) for session in draining]
            _, late = await asyncio.wait(waiting, timeout=grace)
            for task in late:
                task.cancel()
        for conn in list(self._cids):
            for session in conn.sessions:
                await session.close(code=0, reason="server shutting down")
            conn.close(code=H3ErrorCode.H3_NO_ERROR, reason="server shutting down")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.app is not None:
            await self.app.shutdown()
        if self._transport is not None:
            self._transport.close()
        # Each connection sent its CONNECTION_CLOSE above; with the socket closed there is no
        # closing period left to wait out: they end now, and are forgotten before close returns.
        for conn in list(self._cids):
            conn.abandon("server closed")
        if self._serving is not None and not self._serving.done():
            self._serving.set_result(None)

    async def __aenter__(self) -> WebTransportServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------------------- packets

    def _on_batch(self, batch: Batch) -> None:
        if len(batch) == 1:
            self._datagram_received(*batch[0])
            return
        # Group the batch per connection (short headers route by a slice), keeping order.
        groups: dict[WebTransportConnection, Batch] = {}
        routes = self._routes
        cid_length = self._cid_length
        for item in batch:
            data = item[0]
            conn = routes.get(data[1 : 1 + cid_length]) if data and not data[0] & 0x80 else None
            if conn is None:
                for pending, items in groups.items():
                    pending.datagrams_received(items)
                groups.clear()
                self._datagram_received(*item)
            else:
                groups.setdefault(conn, []).append(item)
        for conn, items in groups.items():
            conn.datagrams_received(items)

    def _on_error(self, exc: OSError) -> None:
        logger.debug("server socket error: %s", exc)

    def _datagram_received(self, data: bytes, addr: Any) -> None:
        if data and not data[0] & 0x80:  # short header: the DCID follows the first byte
            conn = self._routes.get(data[1 : 1 + self._cid_length])
            if conn is not None:
                conn.datagram_received(data, addr)
                return
        route = route_packet(data, self._cid_length)
        conn = self._routes.get(route.destination_cid) if route is not None else None
        if conn is not None:
            conn.datagram_received(data, addr)
            return
        decision = self._admission.decide(
            data,
            route,
            _address(addr),
            now=time.monotonic(),
            wall=time.time(),
            handshaking=len(self._handshaking),
            connections=len(self._cids),
            closing=self._closing,
        )
        if isinstance(decision, Reply):
            assert self._transport is not None
            self._transport.sendto(decision.data, addr)
            if decision.kind == "retry":
                self._stats.retries_sent += 1
            elif decision.kind == "stateless_reset":
                self._stats.packets_dropped += 1
                self._stats.stateless_resets_sent += 1
        elif isinstance(decision, Accept):
            assert route is not None
            conn = self._new_connection(
                route.destination_cid, addr, original_dcid=decision.original_dcid
            )
            conn.datagram_received(data, addr)
        else:
            self._stats.packets_dropped += 1

    def _new_connection(
        self, dcid: bytes, addr: Any, *, original_dcid: bytes | None = None
    ) -> WebTransportConnection:
        """A connection for an Initial sent to ``dcid`` (``original_dcid``: after a Retry)."""
        cfg = self.config
        engine = self._engines.create(
            original_destination_connection_id=original_dcid or dcid,
            retry_source_connection_id=dcid if original_dcid is not None else None,
            stateless_reset_key=self._reset_key,
        )
        protocol = WebTransportProtocol(
            engine,
            limits=LocalLimits(
                max_sessions=cfg.max_sessions_per_connection,
                initial_max_data=cfg.initial_max_data,
                initial_max_streams_bidi=cfg.initial_max_streams_bidi,
                initial_max_streams_uni=cfg.initial_max_streams_uni,
            ),
            max_header_size=cfg.max_header_size,
            max_early_streams=cfg.max_early_streams,
            stream_send_buffer=cfg.stream_buffer_size,
            max_pending_datagrams=cfg.datagram_queue_size,
            request_timeout=cfg.request_timeout,
            no_session_timeout=cfg.no_session_timeout,
        )
        transport = self._transport
        assert transport is not None
        conn = WebTransportConnection(
            protocol,
            send=transport.send,
            remote_address=addr,
            datagram_queue_size=cfg.datagram_queue_size,
            on_event=self._on_event,
        )
        cids = {dcid, engine.host_cid}
        self._cids[conn] = cids
        for cid in cids:
            self._routes[cid] = conn
        self._handshaking.add(conn)
        expiry = asyncio.get_running_loop().call_later(
            cfg.handshake_timeout, self._handshake_expired, conn
        )

        def handshake_over(_: object) -> None:
            self._handshaking.discard(conn)
            expiry.cancel()

        conn.handshake_done.add_done_callback(handshake_over)
        conn.add_close_callback(self._forget_connection)
        self._stats.connections_accepted += 1
        return conn

    def _handshake_expired(self, conn: WebTransportConnection) -> None:
        """A handshake that did not finish in time (a spoofed or stuck client) is dropped,
        silently: a CONNECTION_CLOSE could exceed what an unvalidated address may be sent."""
        if conn.handshake_done.done() or conn.closed.done():
            return
        self._stats.handshakes_timed_out += 1
        conn.abandon("handshake timeout")

    def _forget_connection(self, conn: WebTransportConnection) -> None:
        self._handshaking.discard(conn)
        for cid in self._cids.pop(conn, set()):
            if self._routes.get(cid) is conn:
                del self._routes[cid]

    def _on_event(self, conn: WebTransportConnection, event: ev.ProtocolEvent) -> None:
        if isinstance(event, ev.ConnectionIdIssued):
            self._cids[conn].add(event.connection_id)
            self._routes[event.connection_id] = conn
        elif isinstance(event, ev.ConnectionIdRetired):
            self._cids.get(conn, set()).discard(event.connection_id)
            if self._routes.get(event.connection_id) is conn:
                del self._routes[event.connection_id]
        elif isinstance(event, ev.SessionRequested):
            self._on_session_requested(conn, event)

    # ----------------------------------------------------------------------------- sessions

    def _on_session_requested(
        self, conn: WebTransportConnection, event: ev.SessionRequested
    ) -> None:
        self._stats.sessions_requested += 1
        refusal: int | None = None
        if self._closing:
            refusal = 503
        elif len(conn.sessions) >= self.config.max_sessions_per_connection:
            refusal = 429
        session = WebTransportSession(
            conn,
            event.session_id,
            path=event.path,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers],
            remote_address=conn.remote_address,
            protocol=None if refusal else self._chosen_protocol(event),
            authority=event.authority,
        )
        conn.add_session(session)
        if refusal:
            self._stats.sessions_rejected += 1
            reject_session(session, status=refusal)
            return
        task = asyncio.get_running_loop().create_task(self._run_session(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _chosen_protocol(self, event: ev.SessionRequested) -> str | None:
        """The subprotocol answered to the client's offer, if it made one.

        The app's ``select_protocol(offered)`` decides (without an app: the first of
        ``config.protocols`` the client offered); a choice outside the offer is dropped.
        """
        offered = offered_protocols(event.headers)
        if not offered:
            return None
        try:
            chosen = (
                self.app.select_protocol(offered)
                if self.app is not None
                else select_protocol(offered, self.config.protocols)
            )
        except Exception:
            logger.exception("select_protocol failed for %s", event.path)
            return None
        return chosen if chosen in offered else None

    def _count_accepted(self, _event: Event) -> None:
        self._stats.sessions_accepted += 1

    async def _run_session(self, session: WebTransportSession) -> None:
        try:
            if self.app is None:
                reject_session(session, status=404)
                self._stats.sessions_rejected += 1
                return
            # Counted as soon as the session is accepted, not when its handler returns.
            session.once(EventType.SESSION_READY, self._count_accepted)
            if not await self.app.handle(session):
                self._stats.sessions_rejected += 1
        except asyncio.CancelledError:
            await session.close(code=0, reason="server shutting down")
            raise
        except Exception:
            logger.exception("session %d on %s failed", session.session_id, session.path)
            await session.close(code=1, reason="internal server error")
