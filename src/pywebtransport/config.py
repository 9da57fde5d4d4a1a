"""Client and server configuration: keyword-only dataclasses with validated fields."""

from __future__ import annotations

import dataclasses
import importlib.util
import ssl
import string
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from . import constants as c
from .exceptions import ConfigurationError
from .protocol.subprotocol import is_valid_protocol


class PemCertificate(Protocol):
    """A certificate (chain) and its private key in memory, PEM encoded.

    :class:`~pywebtransport.server.certificate.CertificateBundle` is one.
    """

    @property
    def cert_pem(self) -> bytes:
        """The certificate chain, PEM (the server's own certificate first)."""

    @property
    def key_pem(self) -> bytes:
        """The unencrypted private key, PEM."""


class _ConfigBase:
    """create / from_dict / to_dict / update / copy shared by both configs."""

    @classmethod
    def create(cls, **kwargs: Any) -> Self:
        """Build a config from keyword arguments (unknown names raise ConfigurationError)."""
        return cls.from_dict(kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build a config from a mapping of field names to values."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigurationError(f"unknown setting {unknown[0]!r}", field=unknown[0])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (copies of containers)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = (
                list(value)
                if isinstance(value, list)
                else (dict(value) if isinstance(value, dict) else value)
            )
        return out

    def update(self, **kwargs: Any) -> Self:
        """A new config with some fields changed (validated)."""
        data = self.to_dict()
        data.update(kwargs)
        return self.from_dict(data)

    def copy(self) -> Self:
        """An independent copy."""
        return self.from_dict(self.to_dict())


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive number, got {value!r}", field=name)


def _check_protocols(value: object) -> None:
    if not isinstance(value, list) or not all(
        isinstance(p, str) and is_valid_protocol(p) for p in value
    ):
        raise ConfigurationError(
            f"protocols is a list of HTTP tokens, got {value!r}", field="protocols"
        )
    if len(set(value)) != len(value):
        raise ConfigurationError("protocols lists a name twice", field="protocols")


_RECEIVE_LIMITS = (
    "stream_receive_window",
    "connection_receive_window",
    "max_incoming_streams",
    "max_early_streams",
)


def _check_receive_limits(obj: ClientConfig | ServerConfig) -> None:
    for name in _RECEIVE_LIMITS:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive int, got {value!r}", field=name)
    if obj.connection_receive_window < obj.stream_receive_window:
        raise ConfigurationError(
            "connection_receive_window must be at least stream_receive_window",
            field="connection_receive_window",
        )


def _check_paths(obj: ClientConfig | ServerConfig) -> None:
    """certfile / keyfile are file names: PEM text given there is refused with a hint."""
    for name in ("certfile", "keyfile"):
        value = getattr(obj, name)
        if value is None:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if not isinstance(text, str):
            raise ConfigurationError(f"{name} must be a file path, got {value!r}", field=name)
        if "-----BEGIN" in text or "\n" in text:
            hint = (
                " or pass the certificate itself as ServerConfig(certificate=...)"
                if isinstance(obj, ServerConfig)
                else ""
            )
            raise ConfigurationError(
                f"{name} takes the path of a PEM file, not PEM content: write the PEM to a "
                f"file and pass its path{hint}",
                field=name,
            )
    if (obj.certfile is None) != (obj.keyfile is None):
        raise ConfigurationError("certfile and keyfile go together", field="certfile")


def _hex_digest(text: str) -> bytes | None:
    """A SHA-256 digest written as 64 hex digits, or 32 ``:``-separated pairs; else None."""
    groups = text.strip().split(":")
    if len(groups) > 1 and any(len(group) != 2 for group in groups):
        return None
    digits = "".join(groups)
    if len(digits) != 64 or any(char not in string.hexdigits for char in digits):
        return None
    return bytes.fromhex(digits)


def _certificate_hashes(values: object) -> list[bytes | str]:
    """``server_certificate_hashes`` as 32-byte digests (hex text is parsed)."""
    field_name = "server_certificate_hashes"
    if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
        raise ConfigurationError(
            f"{field_name} is a list of SHA-256 digests, got {values!r}", field=field_name
        )
    digests: list[bytes | str] = []
    for value in values:
        if isinstance(value, bytes | bytearray) and len(value) == 32:
            digests.append(bytes(value))
            continue
        digest = _hex_digest(value) if isinstance(value, str) else None
        if digest is not None:
            digests.append(digest)
            continue
        raise ConfigurationError(
            f"{field_name} holds SHA-256 digests: 32 bytes, or 64 hex digits (colons allowed), "
            f"got {value!r}",
            field=field_name,
        )
    return digests


def _check_qlog_dir(value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(
            f"qlog_dir is a directory path or None, got {value!r}", field="qlog_dir"
        )


def _check_engine(value: object) -> None:
    if value not in ("aioquic", "qh3"):
        raise ConfigurationError(f"engine is 'aioquic' or 'qh3', got {value!r}", field="engine")
    if value == "qh3" and importlib.util.find_spec("qh3") is None:
        raise ConfigurationError(
            "engine 'qh3' needs qh3: pip install pywebtransport[fast]", field="engine"
        )


def _check_idle_timeout(value: float) -> None:
    # QUIC carries it in milliseconds as a varint (RFC 9000 18.2): it must be finite.
    if not value * 1000 < 2**62:
        raise ConfigurationError(
            f"idle_timeout must be finite and below 2**62 ms, got {value!r}", field="idle_timeout"
        )


def _check_udp_payload(value: object, name: str = "max_datagram_size") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1200 <= value <= 65527:
        raise ConfigurationError(f"{name} must be within 1200..65527, got {value!r}", field=name)


@dataclass(kw_only=True)
class ClientConfig(_ConfigBase):
    """How a client connects.

    Attributes:
        connect_timeout: one deadline for QUIC, TLS and the CONNECT response, in seconds.
        idle_timeout: QUIC idle timeout; a silent connection is declared lost after it.
        verify_mode: TLS verification (``ssl.CERT_REQUIRED`` by default).
        ca_certs: a PEM file of trusted CAs; when set, only these are trusted (when None,
            the CA bundle aioquic ships, from certifi).
        server_certificate_hashes: SHA-256 digests of accepted server certificates (32 bytes,
            or hex text as the CLI prints it: 64 hex digits, ``:`` between bytes allowed;
            stored as bytes); when given,
            the certificate is accepted if and only if its hash is listed (like the browser's
            ``serverCertificateHashes``).
        headers: headers sent with every CONNECT.
        protocols: application subprotocols offered in ``wt-available-protocols`` (the
            server picks one; ``session.protocol`` tells which). Empty: none offered.
        user_agent: the ``user-agent`` header (None: not sent).
        max_datagram_size: UDP payload size of the packets we send first (1200 fits every path).
        max_path_datagram_size: the largest UDP payload path MTU discovery may raise our packets
            to once the path proves it carries them (at most ``max_datagram_size``: discovery
            off).
        stream_buffer_size: unacknowledged bytes one stream may queue before write() waits.
        datagram_queue_size: datagrams buffered per session in each direction.
        stream_receive_window: unread bytes one incoming stream may hold; the peer gets more
            credit (MAX_STREAM_DATA) only as the application reads.
        connection_receive_window: unread bytes all streams of a connection may hold together
            (MAX_DATA), the bound on what one peer can make this endpoint buffer.
        max_incoming_streams: WebTransport streams of each kind (bidirectional,
            unidirectional) the peer may have open, or finished but not yet read, at once on
            one connection (QUIC MAX_STREAMS; the peer waits for more, nothing is refused).
        max_early_streams: streams (per connection) and datagrams (per session) held for a
            session that is not open yet; beyond it they are refused / dropped.
        reuse_connections: open a session on an existing connection to the same host and port
            when the server allows another session there (its SETTINGS) and it has not sent
            GOAWAY; off by default, like a browser's WebTransport without ``allowPooling``.
        keep_alive: send a PING every ``min(15, idle_timeout / 2)`` seconds while a session
            is open, so an idle session is not timed out (a dead peer still is).
        auto_reconnect, max_retries, retry_delay, retry_backoff, max_retry_delay:
            reconnection policy of ReconnectingClient (negative max_retries: forever).
        engine: the QUIC implementation: ``"aioquic"`` (the default) or ``"qh3"`` (faster;
            ``pip install pywebtransport[fast]``; what it cannot guarantee is in
            docs/architecture.md).
        qlog_dir: a directory (created if missing) receiving one qlog file per QUIC
            connection, written by the engine when the connection ends; None: no qlog.
    """

    connect_timeout: float = c.DEFAULT_CONNECT_TIMEOUT
    idle_timeout: float = c.DEFAULT_IDLE_TIMEOUT
    verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED
    ca_certs: str | None = None
    server_certificate_hashes: list[bytes | str] = field(default_factory=list)
    certfile: str | None = None
    keyfile: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    protocols: list[str] = field(default_factory=list)
    user_agent: str | None = c.DEFAULT_USER_AGENT
    max_datagram_size: int = c.DEFAULT_MAX_UDP_PAYLOAD
    max_path_datagram_size: int = c.DEFAULT_MAX_PATH_UDP_PAYLOAD
    stream_buffer_size: int = c.DEFAULT_STREAM_SEND_BUFFER
    datagram_queue_size: int = c.DEFAULT_DATAGRAM_QUEUE
    congestion_control: str = "reno"
    stream_receive_window: int = c.DEFAULT_STREAM_RECEIVE_WINDOW
    connection_receive_window: int = c.DEFAULT_CONNECTION_RECEIVE_WINDOW
    max_incoming_streams: int = c.DEFAULT_MAX_INCOMING_STREAMS
    max_early_streams: int = c.DEFAULT_MAX_EARLY_STREAMS
    keep_alive: bool = True
    reuse_connections: bool = False
    auto_reconnect: bool = False
    max_retries: int = 5
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    max_retry_delay: float = 30.0
    engine: str = "aioquic"
    qlog_dir: str | None = None

    def __post_init__(self) -> None:
        _check_engine(self.engine)
        _check_qlog_dir(self.qlog_dir)
        _positive(
            self,
            "connect_timeout",
            "idle_timeout",
            "stream_buffer_size",
            "datagram_queue_size",
            "retry_delay",
            "max_retry_delay",
        )
        _check_udp_payload(self.max_datagram_size)
        _check_udp_payload(self.max_path_datagram_size, "max_path_datagram_size")
        _check_idle_timeout(self.idle_timeout)
        _check_receive_limits(self)
        _check_protocols(self.protocols)
        if self.retry_backoff < 1.0:
            raise ConfigurationError("retry_backoff must be >= 1.0", field="retry_backoff")
        self.server_certificate_hashes = _certificate_hashes(self.server_certificate_hashes)
        _check_paths(self)
        if self.congestion_control not in ("reno", "cubic"):
            raise ConfigurationError(
                "congestion_control is 'reno' or 'cubic'", field="congestion_control"
            )

    @property
    def keep_alive_interval(self) -> float | None:
        """Seconds between keep-alive PINGs (None when keep-alive is off)."""
        if not self.keep_alive:
            return None
        return min(15.0, self.idle_timeout / 2)


@dataclass(kw_only=True)
class ServerConfig(_ConfigBase):
    """How a server listens and what it allows.

    Attributes:
        host, port: where to listen (``port=0`` picks a free port).
        certfile, keyfile: paths of the TLS certificate chain and key files (PEM); PEM
            content given here is refused (write it to files, or use ``certificate``).
        certificate: the certificate and key in memory, instead of ``certfile`` and
            ``keyfile`` (a :class:`~pywebtransport.server.certificate.CertificateBundle`, as
            ``generate_self_signed_certificate()`` or ``CertificateBundle.from_pem()`` make).
        idle_timeout: QUIC idle timeout.
        max_datagram_size: UDP payload size of the packets we send first (1200 fits every path).
        max_path_datagram_size: the largest UDP payload path MTU discovery may raise our packets
            to once the path proves it carries them (at most ``max_datagram_size``: discovery
            off).
        max_sessions_per_connection: sessions one connection may hold at once.
        max_connections: QUIC connections served at once; new ones beyond are refused.
        stream_buffer_size: unacknowledged bytes one stream may queue before write() waits.
        datagram_queue_size: datagrams buffered per session in each direction.
        stream_receive_window: unread bytes one incoming stream may hold; the peer gets more
            credit (MAX_STREAM_DATA) only as the application reads.
        connection_receive_window: unread bytes all streams of a connection may hold together
            (MAX_DATA), the bound on what one peer can make this endpoint buffer.
        max_incoming_streams: WebTransport streams of each kind (bidirectional,
            unidirectional) the peer may have open, or finished but not yet read, at once on
            one connection (QUIC MAX_STREAMS; the peer waits for more, nothing is refused).
        max_early_streams: streams (per connection) and datagrams (per session) held for a
            session that is not open yet; beyond it they are refused / dropped.
        initial_max_data, initial_max_streams_bidi, initial_max_streams_uni: session flow
            control windows granted to peers that use it (drafts 13 to 16): unread bytes and
            open (or unread) peer streams per session; credit follows what is read and closed.
        max_header_size: largest encoded request header section accepted.
        session_accept_timeout: seconds a request may wait for the application's decision.
        protocols: subprotocols the server speaks, most preferred first; it answers
            ``wt-protocol`` with the first of these the client offered (an app's
            ``select_protocol(offered)`` method, when present, decides instead).
        shutdown_grace: seconds ``close()`` lets draining sessions finish by default (0: the
            DRAIN capsules and GOAWAY are sent, then every session is closed at once).
        handshake_timeout: seconds a new connection may take to finish its QUIC handshake;
            one that has not is dropped (the state a spoofed or stalled client leaves).
        request_timeout: seconds a request stream may take, from its first byte, to deliver
            its whole HEADERS frame; a late one is answered 408 (a slow client holding requests
            open).
        no_session_timeout: seconds a connection may carry no session (after its handshake,
            or since its last session ended) before the server closes it (H3_NO_ERROR).
        retry: when new clients must prove their address with a Retry round trip (RFC 9000
            8.1.2) before the server keeps any state for them: ``"auto"`` (only while 64 or
            more handshakes are in progress, as under a flood of spoofed Initials), ``"always"``
            or ``"never"``.
        stateless_reset_key: secret (16+ bytes) the stateless-reset tokens are derived from;
            None derives it from the private key file, so every worker, and a server restarted
            with the same key, can end connections it lost (RFC 9000 10.3).
        broker_url: where the application's pub/sub hubs meet (``Hub.from_url``): None or
            ``memory://`` (each process on its own), ``redis://host:port/db`` (every worker of a
            group, and every server pointed at that Redis, shares topics and presence).
        engine: the QUIC implementation: ``"aioquic"`` (the default) or ``"qh3"`` (faster;
            ``pip install pywebtransport[fast]``; what it cannot guarantee is in
            docs/architecture.md).
        qlog_dir: a directory (created if missing) receiving one qlog file per QUIC
            connection, written by the engine when the connection ends; None: no qlog.
    """

    host: str = "127.0.0.1"
    port: int = c.DEFAULT_PORT
    certfile: str | None = None
    keyfile: str | None = None
    certificate: PemCertificate | None = None
    idle_timeout: float = c.DEFAULT_IDLE_TIMEOUT
    max_datagram_size: int = c.DEFAULT_MAX_UDP_PAYLOAD
    max_path_datagram_size: int = c.DEFAULT_MAX_PATH_UDP_PAYLOAD
    max_sessions_per_connection: int = c.DEFAULT_MAX_SESSIONS_PER_CONNECTION
    max_connections: int = 10000
    stream_buffer_size: int = c.DEFAULT_STREAM_SEND_BUFFER
    datagram_queue_size: int = c.DEFAULT_DATAGRAM_QUEUE
    stream_receive_window: int = c.DEFAULT_STREAM_RECEIVE_WINDOW
    connection_receive_window: int = c.DEFAULT_CONNECTION_RECEIVE_WINDOW
    max_incoming_streams: int = c.DEFAULT_MAX_INCOMING_STREAMS
    max_early_streams: int = c.DEFAULT_MAX_EARLY_STREAMS
    initial_max_data: int = c.DEFAULT_CONNECTION_RECEIVE_WINDOW
    initial_max_streams_bidi: int = 100
    initial_max_streams_uni: int = 100
    max_header_size: int = c.DEFAULT_MAX_HEADER_SIZE
    session_accept_timeout: float = 10.0
    congestion_control: str = "reno"
    protocols: list[str] = field(default_factory=list)
    shutdown_grace: float = 0.0
    handshake_timeout: float = 10.0
    request_timeout: float = 60.0
    no_session_timeout: float = 60.0
    retry: str = "auto"
    stateless_reset_key: bytes | None = None
    broker_url: str | None = None
    engine: str = "aioquic"
    qlog_dir: str | None = None

    def __post_init__(self) -> None:
        _check_engine(self.engine)
        _check_qlog_dir(self.qlog_dir)
        _check_protocols(self.protocols)
        if self.broker_url is not None and (
            not isinstance(self.broker_url, str)
            or self.broker_url.partition("://")[0].lower()
            not in ("memory", "redis", "rediss", "unix")
        ):
            raise ConfigurationError(
                f"broker_url is memory://, redis://, rediss:// or unix://, got {self.broker_url!r}",
                field="broker_url",
            )
        if self.retry not in ("auto", "always", "never"):
            raise ConfigurationError(
                f"retry is 'auto', 'always' or 'never', got {self.retry!r}", field="retry"
            )
        key = self.stateless_reset_key
        if key is not None and (not isinstance(key, bytes) or len(key) < 16):
            raise ConfigurationError(
                "stateless_reset_key is None or at least 16 bytes", field="stateless_reset_key"
            )
        if (
            not isinstance(self.shutdown_grace, int | float)
            or isinstance(self.shutdown_grace, bool)
            or self.shutdown_grace < 0
        ):
            raise ConfigurationError(
                f"shutdown_grace must be >= 0, got {self.shutdown_grace!r}", field="shutdown_grace"
            )
        _positive(
            self,
            "idle_timeout",
            "max_sessions_per_connection",
            "max_connections",
            "stream_buffer_size",
            "datagram_queue_size",
            "initial_max_data",
            "initial_max_streams_bidi",
            "initial_max_streams_uni",
            "max_header_size",
            "session_accept_timeout",
            "handshake_timeout",
            "request_timeout",
            "no_session_timeout",
        )
        _check_udp_payload(self.max_datagram_size)
        _check_udp_payload(self.max_path_datagram_size, "max_path_datagram_size")
        _check_idle_timeout(self.idle_timeout)
        _check_receive_limits(self)
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port {self.port} is out of range", field="port")
        _check_paths(self)
        if self.certificate is not None:
            if not isinstance(getattr(self.certificate, "cert_pem", None), bytes) or not isinstance(
                getattr(self.certificate, "key_pem", None), bytes
            ):
                raise ConfigurationError(
                    "certificate is a CertificateBundle (pywebtransport.server.certificate) or "
                    f"another object with cert_pem and key_pem bytes, got {self.certificate!r}",
                    field="certificate",
                )
            if self.certfile is not None:
                raise ConfigurationError(
                    "give either certificate or certfile and keyfile, not both",
                    field="certificate",
                )
        if self.congestion_control not in ("reno", "cubic"):
            raise ConfigurationError(
                "congestion_control is 'reno' or 'cubic'", field="congestion_control"
            )
