"""Choosing and configuring the QUIC engine from a client or server configuration.

The configuration (:class:`ClientConfig` / :class:`ServerConfig`) becomes an engine-neutral
:class:`QuicSettings`; the engine named by ``config.engine`` turns it into its own QUIC
configuration through an :class:`EngineFactory` (``protocol/engine_aioquic.py``,
``protocol/engine_qh3.py``).
"""

from __future__ import annotations

import dataclasses
import ssl
from collections import OrderedDict

from ._keylog import key_log_file
from .config import ClientConfig, ServerConfig
from .constants import ALPN_H3
from .protocol.engine_aioquic import AioquicFactory
from .protocol.quic import EngineFactory, QuicSettings, file_stamp

#: The QUIC engines a config may name.
ENGINES = ("aioquic", "qh3")

#: Unidirectional streams every HTTP/3 peer opens for itself: control, QPACK encoder, decoder.
_H3_UNI_STREAMS = 3


def client_settings(cfg: ClientConfig, server_name: str) -> QuicSettings:
    """The QUIC settings of one client connection to ``server_name``.

    With ``server_certificate_hashes`` the certificate is not verified against CAs: the client
    checks its hash after the handshake instead.
    """
    pinned = bool(cfg.server_certificate_hashes)
    return dataclasses.replace(
        _shared_settings(cfg),
        is_client=True,
        max_streams_bidi=cfg.max_incoming_streams,
        server_name=server_name,
        verify_mode=ssl.CERT_NONE if pinned else cfg.verify_mode,
        ca_file=None if pinned else cfg.ca_certs,
    )


def server_settings(cfg: ServerConfig) -> QuicSettings:
    """The QUIC settings of a server's connections.

    The peer's bidirectional streams are its WebTransport streams plus one CONNECT stream per
    session it may hold.
    """
    return dataclasses.replace(
        _shared_settings(cfg),
        max_streams_bidi=cfg.max_incoming_streams + cfg.max_sessions_per_connection,
    )


def _shared_settings(cfg: ClientConfig | ServerConfig) -> QuicSettings:
    """The settings a client and a server take from their configs alike (server side)."""
    return QuicSettings(
        is_client=False,
        alpn_protocols=(ALPN_H3,),
        idle_timeout=cfg.idle_timeout,
        max_udp_payload=cfg.max_datagram_size,
        max_path_udp_payload=max(cfg.max_datagram_size, cfg.max_path_datagram_size),
        stream_receive_window=cfg.stream_receive_window,
        connection_receive_window=cfg.connection_receive_window,
        max_streams_uni=cfg.max_incoming_streams + _H3_UNI_STREAMS,
        certfile=cfg.certfile,
        keyfile=cfg.keyfile,
        key_log=key_log_file(),  # only when SSLKEYLOGFILE is set
        congestion_control=cfg.congestion_control,
        qlog_dir=cfg.qlog_dir,
    )


def engine_factory(engine: str, settings: QuicSettings) -> EngineFactory:
    """The factory of the engine named ``engine`` (``config.engine``) for ``settings``.

    Raises:
        OSError, ValueError: a certificate, key or CA file cannot be read or parsed.
    """
    if engine == "qh3":
        from .protocol.engine_qh3 import Qh3Factory, remember_trust_stores  # optional: [fast]

        if settings.is_client and settings.verify_mode != ssl.CERT_NONE:
            remember_trust_stores(_default_verify_files)
        return Qh3Factory(settings)
    return AioquicFactory(settings)


#: Client engine factories kept for reuse (each holds a parsed CA store and TLS settings).
_FACTORY_CACHE_SIZE = 32
_factories: OrderedDict[tuple[object, ...], EngineFactory] = OrderedDict()


def cached_engine_factory(engine: str, settings: QuicSettings) -> EngineFactory:
    """:func:`engine_factory`, reused while ``settings`` and the files it names are unchanged.

    A client builds the factory of every connection it opens; parsing a CA store each time
    would add a large share of a connect's CPU time (hundreds of microseconds for qh3). The
    key holds each named file's size, modification time and inode, so a rewritten certificate,
    key or CA file is read again. Few entries are kept (least recently used are dropped).

    Raises:
        OSError, ValueError: as :func:`engine_factory`.
    """
    try:
        stamps = tuple(
            file_stamp(path) for path in (settings.ca_file, settings.certfile, settings.keyfile)
        )
    except OSError:
        return engine_factory(engine, settings)  # raises the reader's error
    key = (engine, settings, stamps)
    factory = _factories.get(key)
    if factory is None:
        factory = engine_factory(engine, settings)
        _factories[key] = factory
        if len(_factories) > _FACTORY_CACHE_SIZE:
            _factories.popitem(last=False)
    else:
        _factories.move_to_end(key)
    return factory


def _default_verify_files() -> tuple[str | None, str | None]:
    """The system CA store's file and directory (what an engine reads when given no CA file)."""
    paths = ssl.get_default_verify_paths()
    return (paths.cafile, paths.capath)
