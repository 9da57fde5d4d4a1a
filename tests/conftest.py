"""Shared fixtures: a test certificate, a running server with test routes, the QUIC engine.

Every test of a module that runs QUIC connections (an in-memory :class:`Pair`, or clients and
servers on loopback) runs once per QUIC engine: the ``quic_engine`` fixture makes that engine
the default of every ClientConfig and ServerConfig the test builds (a config naming an engine
keeps it) and of every Pair. A test that needs a guarantee the qh3 engine cannot give
(docs/architecture.md) is marked ``@pytest.mark.aioquic_only("the limitation")`` and skipped
on qh3 with that reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.server.echo import echo_handler
from tests.certs import CertBundle, make_cert

#: Every wait in the asyncio tests is bounded by a multiple of this (seconds).
T = 5.0

#: The QUIC engines the tests run on (qh3 only when installed: pywebtransport[fast]).
ENGINES = ("aioquic", "qh3") if importlib.util.find_spec("qh3") is not None else ("aioquic",)

#: A module that contains one of these runs QUIC connections: its tests run on every engine.
_ENGINE_USES = ("Pair(", "WebTransportClient(", "WebTransportServer(", "serving(", "build_app(")

_current_engine = ["aioquic"]

#: The reason of the tests that need receive credit to follow reading (docs/architecture.md).
CREDIT_FOLLOWS_READING = (
    "qh3 raises receive credit as data arrives, not as the application reads it: a peer that "
    "does not read slows no writer down"
)
#: The reason of the tests that need the packet size to fall back on a path that shrinks.
NO_PATH_FALLBACK = (
    "qh3's core never lowers its packet size once its probing confirmed one: a path that "
    "shrinks under it is a black hole for its larger packets"
)
#: The reason of the tests that need a server's packets to grow.
CLIENT_ONLY_PROBING = "qh3 probes the path only as a client: a server's packets keep the base size"
#: The reason of the tests that need a stream slot to stay taken until the stream is read.
SLOTS_FOLLOW_READING = (
    "qh3 gives a peer's stream slot back when the stream is finished on the wire, not when the "
    "application has read it"
)


def current_engine() -> str:
    """The engine the running test uses (see the ``quic_engine`` fixture)."""
    return _current_engine[0]


def _runs_connections(module: object) -> bool:
    try:
        source = inspect.getsource(module)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    return any(use in source for use in _ENGINE_USES)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A module may name the engines it is about (QUIC_ENGINES = ("aioquic",): its internals),
    # which also says that it runs connections (through helpers the source scan cannot see).
    declared = getattr(metafunc.module, "QUIC_ENGINES", None)
    engines = declared or ENGINES
    if (
        "quic_engine" in metafunc.fixturenames
        and engines != ("aioquic",)
        and (declared is not None or _runs_connections(metafunc.module))
    ):
        metafunc.parametrize("quic_engine", engines, indirect=True)


@pytest.fixture(autouse=True)
def quic_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The QUIC engine of this test: the default of its configs and pairs."""
    name: str = getattr(request, "param", "aioquic")
    marker = request.node.get_closest_marker("aioquic_only")
    if name != "aioquic" and marker is not None:
        pytest.skip(f"{name}: {marker.args[0]}")
    for config in (ClientConfig, ServerConfig):
        defaults = config.__init__.__kwdefaults__
        assert defaults is not None and "engine" in defaults
        monkeypatch.setitem(defaults, "engine", name)
    _current_engine[0] = name
    try:
        yield name
    finally:
        _current_engine[0] = "aioquic"


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """A self-signed ECDSA certificate for localhost, 127.0.0.1 and ::1."""
    return make_cert(tmp_path_factory.mktemp("cert"))


def build_app(cert: CertBundle, **config: object) -> ServerApp:
    """The test application: /echo plus routes that exercise server-side behaviour."""
    app = ServerApp(
        config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile), **config)  # type: ignore[arg-type]
    )
    app.route("/echo")(echo_handler)

    @app.route("/push")
    async def push(session: WebTransportSession) -> None:
        bidi = await session.create_bidirectional_stream()
        await bidi.write(b"server-bidi", end_stream=True)
        uni = await session.create_unidirectional_stream()
        await uni.write_all(b"server-uni")
        reply = await bidi.read_all()
        await session.datagrams.send(b"got:" + reply)
        await session.wait_closed()

    @app.route("/close")
    async def close(session: WebTransportSession) -> None:
        await session.close(code=4321, reason="server bye")

    @app.route("/sink")
    async def sink(session: WebTransportSession) -> None:
        await session.accept_bidirectional_stream()  # accepted, never read
        await session.wait_closed()

    @app.route("/stop")
    async def stop(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        await stream.stop(code=9)
        await session.wait_closed()

    @app.route("/items/{item_id}")
    async def item(session: WebTransportSession) -> None:
        await session.datagrams.send(session.path_params["item_id"].encode())
        await session.wait_closed()

    return app


@asynccontextmanager
async def serving(app: ServerApp) -> AsyncIterator[WebTransportServer]:
    """``app`` served on 127.0.0.1 with an ephemeral port; closed (bounded) at the end."""
    srv = WebTransportServer(config=app.config, app=app)
    await srv.listen(host="127.0.0.1", port=0)
    try:
        yield srv
    finally:
        async with asyncio.timeout(T):
            await srv.close()


@pytest.fixture
async def server(cert: CertBundle) -> AsyncIterator[WebTransportServer]:
    """Our server on 127.0.0.1 with an ephemeral port."""
    async with serving(build_app(cert)) as srv:
        yield srv


@pytest.fixture
def client_config(cert: CertBundle) -> ClientConfig:
    """A client config that pins the test certificate by hash."""
    return ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=T)


def url(server: WebTransportServer, path: str = "/echo") -> str:
    """The https URL of ``path`` on ``server``."""
    host, port = server.local_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{port}{path}"


async def echo_ok(session: WebTransportSession, payload: bytes = b"ping") -> None:
    """One bidirectional round trip on ``session``."""
    stream = await session.create_bidirectional_stream()
    await stream.write_all(payload)
    assert await stream.read_all() == payload
