"""Two cores wired back to back in memory, time stepped by hand."""

from __future__ import annotations

import ssl
from pathlib import Path

from aioquic.quic.configuration import QuicConfiguration

from pywebtransport.protocol import AioquicEngine, WebTransportProtocol
from pywebtransport.protocol import events as ev
from pywebtransport.protocol.packets import route_packet
from tests.certs import make_cert

CLIENT_ADDR = ("127.0.0.1", 50000)
SERVER_ADDR = ("127.0.0.1", 4433)


class Pair:
    """A client core and a server core exchanging packets through lists."""

    def __init__(self, tmp: Path, *, reset_key: bytes | None = None, **kwargs: object) -> None:
        cert = make_cert(tmp)
        ccfg = QuicConfiguration(
            is_client=True, alpn_protocols=["h3"], max_datagram_frame_size=65536
        )
        ccfg.verify_mode = ssl.CERT_NONE
        ccfg.server_name = "localhost"
        scfg = QuicConfiguration(
            is_client=False, alpn_protocols=["h3"], max_datagram_frame_size=65536
        )
        scfg.load_cert_chain(cert.certfile, cert.keyfile)
        self.client = WebTransportProtocol(AioquicEngine(ccfg), **kwargs)  # type: ignore[arg-type]
        self.now = 1.0
        self.client_events: list[ev.ProtocolEvent] = []
        self.server_events: list[ev.ProtocolEvent] = []
        self.client.connect(SERVER_ADDR, self.now)
        (first, _), *rest = self.client.datagrams_to_send(self.now)
        route = route_packet(first, 8)
        assert route is not None and route.is_initial
        engine = AioquicEngine(
            scfg,
            original_destination_connection_id=route.destination_cid,
            stateless_reset_key=reset_key,
        )
        self.server = WebTransportProtocol(engine, **kwargs)  # type: ignore[arg-type]
        for data in (first, *(d for d, _ in rest)):
            self.server.receive_datagram(data, CLIENT_ADDR, self.now)

    def transfer(self, *, drop: bool = False) -> int:
        """Move every pending packet both ways once. Returns how many packets moved."""
        moved = 0
        for src, dst, addr in (
            (self.client, self.server, CLIENT_ADDR),
            (self.server, self.client, SERVER_ADDR),
        ):
            for data, _ in src.datagrams_to_send(self.now):
                moved += 1
                if not drop:
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
