"""Two cores wired back to back in memory, time stepped by hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pywebtransport._engine import engine_factory
from pywebtransport.protocol import AioquicEngine, WebTransportProtocol
from pywebtransport.protocol import events as ev
from pywebtransport.protocol.packets import route_packet
from pywebtransport.protocol.quic import QuicSettings
from tests.certs import make_cert
from tests.conftest import current_engine

CLIENT_ADDR = ("127.0.0.1", 50000)
SERVER_ADDR = ("127.0.0.1", 4433)


#: What both sides of a pair use unless a test says otherwise (aioquic's defaults).
SETTINGS = QuicSettings(
    is_client=True,
    idle_timeout=60.0,
    stream_receive_window=1024 * 1024,
    connection_receive_window=1024 * 1024,
    server_name="localhost",
    verify_mode=0,  # ssl.CERT_NONE
)


def engine_class(name: str | None = None) -> Any:
    """The engine class of ``name`` (None: the test's engine), for tests that patch it."""
    if (current_engine() if name is None else name) == "qh3":
        from pywebtransport.protocol.engine_qh3 import Qh3Engine

        return Qh3Engine
    return AioquicEngine


class Pair:
    """A client core and a server core exchanging packets through lists.

    Args:
        tmp: where the server's certificate is written.
        engine: the QUIC engine of both sides; None: the test's (the ``quic_engine`` fixture).
        client_engine: the client's engine, when it differs (a peer that misbehaves in a way
            only one engine lets a test arrange).
        prepare_client: called with the client's engine before it connects.
        reset_key: the server's stateless-reset key.
        server_max_streams_uni: the unidirectional streams the server lets the client have
            open or unread (QUIC MAX_STREAMS; HTTP/3's own three included).
        max_path_udp_payload: the ceiling of both sides' path MTU discovery (None: the
            default of :class:`QuicSettings`).
        kwargs: passed to both :class:`WebTransportProtocol` objects.

    Attributes:
        max_size: packets longer than this are dropped by :meth:`transfer` (None: none), like a
            path with a smaller MTU; a test may change it at any time.
        dropped_sizes: the sizes of the packets dropped that way, in order.
        largest_sent: the longest packet each side (``"client"``, ``"server"``) has sent.
        client_addr: where the server sees the client's packets come from (a test may change
            it: a NAT rebinding).
        drop_if: called with the sending side and each packet; True drops it (counted in
            ``dropped_sizes`` too). None: no such losses.
    """

    def __init__(
        self,
        tmp: Path,
        *,
        engine: str | None = None,
        client_engine: str | None = None,
        reset_key: bytes | None = None,
        prepare_client: Callable[[Any], None] | None = None,
        server_max_streams_uni: int | None = None,
        max_path_udp_payload: int | None = None,
        **kwargs: object,
    ) -> None:
        cert = make_cert(tmp)
        self.engine_name = engine = current_engine() if engine is None else engine
        self.max_size: int | None = None
        self.dropped_sizes: list[int] = []
        self.largest_sent = {"client": 0, "server": 0}
        self.client_addr = CLIENT_ADDR
        self.drop_if: Callable[[str, bytes], bool] | None = None
        ceiling = (
            SETTINGS.max_path_udp_payload if max_path_udp_payload is None else max_path_udp_payload
        )
        clients = engine_factory(
            client_engine or engine, dataclasses.replace(SETTINGS, max_path_udp_payload=ceiling)
        )
        servers = engine_factory(
            engine,
            QuicSettings(
                is_client=False,
                idle_timeout=SETTINGS.idle_timeout,
                stream_receive_window=SETTINGS.stream_receive_window,
                connection_receive_window=SETTINGS.connection_receive_window,
                certfile=str(cert.certfile),
                keyfile=str(cert.keyfile),
                max_streams_uni=128 if server_max_streams_uni is None else server_max_streams_uni,
                max_path_udp_payload=ceiling,
            ),
        )
        client_engine_object = clients.create()
        if prepare_client is not None:
            prepare_client(client_engine_object)
        self.client = WebTransportProtocol(client_engine_object, **kwargs)  # type: ignore[arg-type]
        self.now = 1.0
        self.client_events: list[ev.ProtocolEvent] = []
        self.server_events: list[ev.ProtocolEvent] = []
        self.client.connect(SERVER_ADDR, self.now)
        (first, _), *rest = self.client.datagrams_to_send(self.now)
        route = route_packet(first, 8)
        assert route is not None and route.is_initial
        server_engine = servers.create(
            original_destination_connection_id=route.destination_cid,
            stateless_reset_key=reset_key,
        )
        self.server = WebTransportProtocol(server_engine, **kwargs)  # type: ignore[arg-type]
        for data in (first, *(d for d, _ in rest)):
            self.server.receive_datagram(data, CLIENT_ADDR, self.now)

    def transfer(self, *, drop: bool = False) -> int:
        """Move every pending packet both ways once. Returns how many packets moved."""
        moved = 0
        for side, src, dst, addr in (
            ("client", self.client, self.server, self.client_addr),
            ("server", self.server, self.client, SERVER_ADDR),
        ):
            for data, _ in src.datagrams_to_send(self.now):
                moved += 1
                self.largest_sent[side] = max(self.largest_sent[side], len(data))
                if (self.max_size is not None and len(data) > self.max_size) or (
                    self.drop_if is not None and self.drop_if(side, data)
                ):
                    self.dropped_sizes.append(len(data))
                elif not drop:
                    dst.receive_datagram(data, addr, self.now)
        self.client_events += self.client.pop_events()
        self.server_events += self.server.pop_events()
        return moved

    def roundtrip(self, limit: int = 200, *, horizon: float = 0.05) -> None:
        """Transfer until both sides are quiet, stepping time over short (pacing) timers."""
        for _ in range(limit):
            if self.transfer() == 0 and not self.step(horizon):
                return
        raise AssertionError("the cores never went quiet")

    def step(self, horizon: float) -> bool:
        """Advance time to the next timer if it is due within ``horizon`` seconds."""
        timers = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None]
        if not timers or min(timers) > self.now + horizon:
            return False
        self.now = max(self.now, min(timers))
        for core in (self.client, self.server):
            timer = core.get_timer()
            if timer is not None and timer <= self.now:
                core.handle_timer(self.now)
        return True

    def take(self, side: str, kind: type[ev.ProtocolEvent]) -> list[ev.ProtocolEvent]:
        """Remove and return the queued events of one kind for ``side``."""
        events = self.client_events if side == "client" else self.server_events
        found = [e for e in events if isinstance(e, kind)]
        events[:] = [e for e in events if not isinstance(e, kind)]
        return found

    def open_session(self, path: str = "/echo") -> int:
        """Handshake, CONNECT, accept; returns the session ID."""
        self.roundtrip()
        sid = self.client.open_session(authority="localhost:4433", path=path)
        self.roundtrip()
        (req,) = self.take("server", ev.SessionRequested)
        assert isinstance(req, ev.SessionRequested)
        self.server.accept_session(req.session_id)
        self.roundtrip()
        (est,) = self.take("client", ev.SessionEstablished)
        assert isinstance(est, ev.SessionEstablished) and est.session_id == sid
        return sid
