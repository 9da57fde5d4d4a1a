"""WebTransportClient: opens sessions, each on a QUIC connection of its own.

With ``reuse_connections`` a session may instead share an open connection to the same host and
port, when the server's SETTINGS allow another session there and it has not sent GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import exceptions as errors
from .._engine import cached_engine_factory, client_settings
from ..config import ClientConfig
from ..connection import WebTransportConnection
from ..events import EventEmitter, EventType
from ..exceptions import CertificateError, WebTransportError
from ..protocol import LocalLimits, ProtocolUsageError, WebTransportProtocol
from ..protocol.quic import QuicSettings
from ..protocol.subprotocol import AVAILABLE_PROTOCOLS, encode_protocol_list, offered_protocols
from ..protocol.wire import CRYPTO_ERROR, TLS_BAD_CERTIFICATE, H3ErrorCode
from ..session import WebTransportSession
from ..udp import Batch, UdpEndpoint, open_udp_socket
from ._lifecycle import AsyncLifecycle
from ._url import ParsedURL, parse_url

if TYPE_CHECKING:
    from .reconnecting import ReconnectingClient

logger = logging.getLogger(__name__)

URL = str
Headers = dict[str, str]
_CRYPTO_ERROR_FIRST, _CRYPTO_ERROR_LAST = CRYPTO_ERROR, CRYPTO_ERROR + 0xFF
#: Longest close() waits for its connections to see their close capsules acknowledged.
_CLOSE_WAIT = 2.0


@dataclass(kw_only=True)
class ClientStats:
    """Aggregated connection statistics of a client (times from ``time.monotonic()``)."""

    created_at: float = field(default_factory=time.monotonic)
    connections_attempted: int = 0
    connections_successful: int = 0
    connections_failed: int = 0
    total_connect_time: float = 0.0
    min_connect_time: float = float("inf")
    max_connect_time: float = 0.0

    @property
    def avg_connect_time(self) -> float:
        """Mean connect time of successful connections (0.0 before any)."""
        if not self.connections_successful:
            return 0.0
        return self.total_connect_time / self.connections_successful

    @property
    def success_rate(self) -> float:
        """Successful / attempted connections (1.0 before any attempt)."""
        if not self.connections_attempted:
            return 1.0
        return self.connections_successful / self.connections_attempted

    def record(self, *, ok: bool, elapsed: float) -> None:
        """Count one finished attempt."""
        self.connections_attempted += 1
        if ok:
            self.connections_successful += 1
            self.total_connect_time += elapsed
            self.min_connect_time = min(self.min_connect_time, elapsed)
            self.max_connect_time = max(self.max_connect_time, elapsed)
        else:
            self.connections_failed += 1

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable counters."""
        return {
            "created_at": self.created_at,
            "connections_attempted": self.connections_attempted,
            "connections_successful": self.connections_successful,
            "connections_failed": self.connections_failed,
            "total_connect_time": self.total_connect_time,
            "min_connect_time": None
            if self.min_connect_time == float("inf")
            else self.min_connect_time,
            "max_connect_time": self.max_connect_time,
            "avg_connect_time": self.avg_connect_time,
            "success_rate": self.success_rate,
        }


class WebTransportClient(AsyncLifecycle, EventEmitter):
    """Opens WebTransport sessions. Use inside ``async with``.

    Args:
        config: how to connect (defaults: verification on, 10 s connect timeout).
    """

    _noun = "client"

    def __init__(self, *, config: ClientConfig | None = None) -> None:
        self._config = config or ClientConfig()
        self._default_headers: Headers = {}
        super().__init__()
        self._sessions: set[WebTransportSession] = set()
        self._connections: set[WebTransportConnection] = set()
        # reuse_connections: the connections opened to each (host, port)
        self._by_target: dict[tuple[str, int], set[WebTransportConnection]] = {}
        self._stats = ClientStats()
        self._last_error: str | None = None

    @classmethod
    def create(
        cls, *, url: URL, config: ClientConfig | None = None
    ) -> WebTransportClient | ReconnectingClient:
        """A :class:`ReconnectingClient` when ``config.auto_reconnect``, else a plain client."""
        if config is not None and config.auto_reconnect:
            from .reconnecting import ReconnectingClient

            return ReconnectingClient.create(url=url, config=config)
        return cls(config=config)

    # ----------------------------------------------------------------------------- properties

    @property
    def config(self) -> ClientConfig:
        """The client's configuration."""
        return self._config

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def stats(self) -> dict[str, Any]:
        """Connection statistics (see :class:`ClientStats`), plus live counts."""
        out = self._stats.to_dict()
        out["active_sessions"] = len(self._sessions)
        out["active_connections"] = len(self._connections)
        return out

    @property
    def client_stats(self) -> ClientStats:
        """The :class:`ClientStats` object itself."""
        return self._stats

    def __repr__(self) -> str:
        state = self._state_text
        return f"<WebTransportClient {state} sessions={len(self._sessions)}>"

    # ----------------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> WebTransportClient:
        self._check_enter()
        self._entered = True
        return self

    async def close(self) -> None:
        """Close every session and connection this client opened. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for session in list(self._sessions):
            with contextlib.suppress(WebTransportError):
                await session.close()
        # Each connection closes itself once the peer acknowledged its session's close capsule
        # (bounded by the connection's linger); wait for that, then close whatever is left.
        pending = [conn.close_sent for conn in self._connections if not conn.close_sent.done()]
        if pending:
            await asyncio.wait(pending, timeout=_CLOSE_WAIT)
        for conn in list(self._connections):
            conn.close()
        self._sessions.clear()
        self.emit(EventType.CONNECTION_CLOSED)

    def set_default_headers(self, *, headers: Headers) -> None:
        """Headers sent with every later :meth:`connect` (after the config's headers)."""
        self._default_headers = {k.lower(): v for k, v in headers.items()}

    # ----------------------------------------------------------------------------- connect

    def _merged_headers(self, headers: Headers | None) -> list[tuple[bytes, bytes]]:
        merged: dict[str, str] = {}
        if self._config.user_agent:
            merged["user-agent"] = self._config.user_agent
        if self._config.protocols:
            # Structured-field List of Strings (draft-13+); sent in every dialect, as Chromium
            # does. An explicit header of the same name (below) replaces it.
            merged[AVAILABLE_PROTOCOLS.decode()] = encode_protocol_list(
                self._config.protocols
            ).decode()
        for source in (self._config.headers, self._default_headers, headers or {}):
            for name, value in source.items():
                merged[name.lower()] = value
        return [(k.encode(), v.encode()) for k, v in merged.items()]

    async def connect(
        self, url: URL, *, timeout: float | None = None, headers: Headers | None = None
    ) -> WebTransportSession:
        """Open a session to ``url`` within one deadline.

        Raises:
            ConfigurationError: the URL is malformed or not https.
            pywebtransport.TimeoutError: the deadline passed.
            HandshakeError: the server answered a non-2xx status (``.status``).
            CertificateError: TLS verification or hash pinning failed.
            pywebtransport.ConnectionError: unreachable, refused, or no WebTransport on the server.
            ClientError: the client is not entered or closed.
        """
        self._check_usable()
        target = parse_url(url)
        deadline = self._config.connect_timeout if timeout is None else timeout
        start = time.monotonic()
        holder: list[WebTransportConnection] = []
        shared = self._reusable(target) if self._config.reuse_connections else None
        try:
            async with asyncio.timeout(deadline):
                if shared is not None:  # (not in ``holder``: a failure must not close it)
                    session = await self._request(shared, target, self._merged_headers(headers))
                else:
                    session = await self._open(target, self._merged_headers(headers), holder)
        except TimeoutError:
            error = errors.TimeoutError(f"no session with {url} within {deadline} s")
            self._failed(holder, f"timeout after {deadline} s", url, error)
            raise error from None
        except WebTransportError as exc:
            self._failed(holder, str(exc), url, exc)
            raise
        except BaseException:
            self._failed(holder, "cancelled", url, None)
            raise
        self._stats.record(ok=True, elapsed=time.monotonic() - start)
        self._sessions.add(session)
        session.add_close_callback(self._sessions.discard)
        self.emit(EventType.CONNECTION_ESTABLISHED, {"url": url, "session": session})
        return session

    def _reusable(self, target: ParsedURL) -> WebTransportConnection | None:
        """An open connection to ``target`` with room for one more session, if there is one.

        Only connections that still carry a session qualify: one whose last session ended is
        closing (it lingers until the peer acknowledged the close).
        """
        for conn in self._by_target.get((target.host, target.port), ()):
            protocol = conn.protocol
            if (
                not conn.is_closed
                and conn.close_error is None
                and not protocol.goaway_received
                and 0 < protocol.open_session_count() < protocol.peer_max_sessions
            ):
                return conn
        return None

    def _failed(
        self,
        holder: list[WebTransportConnection],
        reason: str,
        url: URL,
        error: BaseException | None,
    ) -> None:
        self._stats.record(ok=False, elapsed=0.0)
        self._last_error = reason
        for conn in holder:
            conn.close(code=H3ErrorCode.H3_REQUEST_CANCELLED, reason="connect failed")
        if error is not None:  # (a cancelled connect is not a failure worth an event)
            self.emit(EventType.CONNECTION_FAILED, {"url": url, "error": error})

    def _quic_settings(self, host: str) -> QuicSettings:
        """The QUIC settings of a connection to ``host`` (read per connection: SSLKEYLOGFILE)."""
        return client_settings(self._config, host)

    async def _open(
        self,
        target: ParsedURL,
        headers: list[tuple[bytes, bytes]],
        holder: list[WebTransportConnection],
    ) -> WebTransportSession:
        loop = asyncio.get_running_loop()
        family, addr = await _resolve(loop, target.host, target.port)
        try:
            sock = open_udp_socket(remote=addr, family=family)
        except OSError as exc:
            raise errors.ConnectionError(f"cannot reach {target.authority}: {exc}") from None
        cfg = self._config
        protocol = WebTransportProtocol(
            cached_engine_factory(cfg.engine, self._quic_settings(target.host)).create(),
            limits=LocalLimits(
                initial_max_data=cfg.connection_receive_window,
                initial_max_streams_bidi=cfg.max_incoming_streams,
                initial_max_streams_uni=cfg.max_incoming_streams,
            ),
            max_early_streams=cfg.max_early_streams,
            stream_send_buffer=cfg.stream_buffer_size,
            max_pending_datagrams=cfg.datagram_queue_size,
            keep_alive_interval=cfg.keep_alive_interval,
            liveness_timeout=cfg.idle_timeout if cfg.keep_alive else None,
        )
        holder_conn: list[WebTransportConnection] = []

        def on_batch(batch: Batch) -> None:
            holder_conn[0].datagrams_received(batch)

        endpoint = UdpEndpoint(
            sock, on_batch=on_batch, on_error=lambda exc: holder_conn[0].error_received(exc)
        )
        conn = WebTransportConnection(
            protocol,
            send=endpoint.send,
            remote_address=addr,
            datagram_queue_size=cfg.datagram_queue_size,
        )
        holder_conn.append(conn)
        conn.add_close_callback(lambda _c: endpoint.close())
        holder.append(conn)
        self._connections.add(conn)
        conn.add_close_callback(self._connections.discard)
        if cfg.reuse_connections:
            key = (target.host, target.port)
            self._by_target.setdefault(key, set()).add(conn)

            def ungroup(closed: WebTransportConnection) -> None:
                group = self._by_target.get(key)
                if group is not None:
                    group.discard(closed)
                    if not group:
                        del self._by_target[key]

            conn.add_close_callback(ungroup)
        protocol.connect(addr, loop.time())
        conn.transmit()
        await self._handshake(conn)
        return await self._request(conn, target, headers)

    async def _handshake(self, conn: WebTransportConnection) -> None:
        try:
            await conn.handshake_done
        except errors.ConnectionError as exc:
            code = exc.error_code or 0
            if _CRYPTO_ERROR_FIRST <= code <= _CRYPTO_ERROR_LAST:
                raise CertificateError(
                    f"TLS handshake failed: {exc.message}", error_code=code
                ) from None
            raise
        pins = self._config.server_certificate_hashes
        if pins:
            der = conn.protocol.peer_certificate_der()
            digest = hashlib.sha256(der).digest() if der else b""
            if digest not in pins:
                conn.close(
                    code=CRYPTO_ERROR + TLS_BAD_CERTIFICATE, reason="certificate hash mismatch"
                )
                raise CertificateError(
                    f"server certificate SHA-256 {digest.hex()} is not among the pinned hashes"
                )
        await conn.settings_received
        if conn.protocol.dialect is None:
            raise errors.ConnectionError("the server's SETTINGS do not offer WebTransport")

    async def _request(
        self,
        conn: WebTransportConnection,
        target: ParsedURL,
        headers: list[tuple[bytes, bytes]],
    ) -> WebTransportSession:
        try:
            sid = conn.protocol.open_session(
                authority=target.authority, path=target.path, headers=headers
            )
        except ProtocolUsageError as exc:
            raise errors.ConnectionError(str(exc)) from None
        session = WebTransportSession(
            conn,
            sid,
            path=target.path,
            headers=[],
            remote_address=conn.remote_address,
            offered_protocols=offered_protocols(headers),
            authority=target.authority,
        )
        conn.add_session(session)
        conn.transmit()
        try:
            await session.ready()
        except BaseException:
            # Withdraw a request that did not become a session (deadline, cancellation): on a
            # shared connection it would otherwise stay pending for good.
            with contextlib.suppress(WebTransportError):
                session.close_nowait()
            raise
        return session

    # ----------------------------------------------------------------------------- diagnostics

    def debug_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of the client's state."""
        return {
            "is_closed": self._closed,
            "entered": self._entered,
            "stats": self.stats,
            "last_error": self._last_error,
            "default_headers": dict(self._default_headers),
            "sessions": [
                {
                    "session_id": s.session_id,
                    "path": s.path,
                    "state": s.state.value,
                    "remote_address": list(s.remote_address[:2]) if s.remote_address else None,
                }
                for s in self._sessions
            ],
            "config": {
                "connect_timeout": self._config.connect_timeout,
                "idle_timeout": self._config.idle_timeout,
                "verify_mode": int(self._config.verify_mode),
                "pinned_hashes": len(self._config.server_certificate_hashes),
            },
        }

    def diagnose_issues(self) -> list[str]:
        """Human-readable findings about the client's health (empty when healthy)."""
        issues: list[str] = []
        stats = self._stats
        if self._closed:
            issues.append("client is closed")
        if stats.connections_attempted >= 4 and stats.success_rate < 0.9:
            issues.append(
                f"low connection success rate: {stats.success_rate:.0%} of "
                f"{stats.connections_attempted} attempts"
                + (f" (last error: {self._last_error})" if self._last_error else "")
            )
        if stats.connections_successful and stats.avg_connect_time > 1.0:
            issues.append(f"slow connects: {stats.avg_connect_time * 1000:.0f} ms on average")
        if self._config.verify_mode == ssl.CERT_NONE and not self._config.server_certificate_hashes:
            issues.append("TLS certificate verification is disabled")
        return issues


async def _resolve(
    loop: asyncio.AbstractEventLoop, host: str, port: int
) -> tuple[int, tuple[Any, ...]]:
    """The address family and socket address of ``host``.

    An IP literal needs no lookup (``getaddrinfo`` would cost a round trip to the executor's
    thread on every connect); names are resolved, and the first answer is used.

    Raises:
        pywebtransport.ConnectionError: the name does not resolve.
    """
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not getattr(literal, "scope_id", None):
        if literal.version == 4:
            return socket.AF_INET, (host, port)
        return socket.AF_INET6, (host, port, 0, 0)
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise errors.ConnectionError(f"cannot resolve {host}: {exc}") from None
    family, _, _, _, addr = infos[0]
    return family, addr
