"""The exceptions pywebtransport raises, all under one root.

::

    WebTransportError (error_code, message)
    ├── ConfigurationError      a setting or argument is invalid (names the field)
    ├── ConnectionError         unreachable, refused, lost, closed (also builtins.ConnectionError)
    │   └── CertificateError    TLS verification or certificate-hash pinning failed
    ├── HandshakeError          the server answered the CONNECT with a non-2xx status (.status)
    ├── TimeoutError            a deadline passed (also builtins.TimeoutError)
    ├── ClientError             a client object was misused (closed, not entered)
    ├── ServerError             a server object was misused or could not start
    ├── SessionError            the session is closed or not usable
    ├── StreamError             the stream was reset/stopped by the peer, or is closed
    ├── DatagramError           a datagram could not be sent (too large, no support)
    ├── FlowControlError        session flow control refused the operation
    └── ProtocolError           the peer broke the protocol
"""

from __future__ import annotations

import builtins


class WebTransportError(Exception):
    """Root of every pywebtransport exception.

    Attributes:
        message: human-readable description.
        error_code: the wire or application code involved, when there is one.
    """

    def __init__(self, message: str = "", *, error_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code

    #: True when ``message`` already states ``error_code`` (then it is not appended again).
    _code_in_message = False

    def __str__(self) -> str:
        if self.error_code is None or self._code_in_message:
            return self.message
        return f"{self.message} (code {self.error_code:#x})"


class ConfigurationError(WebTransportError, ValueError):
    """A configuration field or argument is invalid.

    Attributes:
        field: the name of the offending field, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConnectionError(WebTransportError, builtins.ConnectionError):
    """The connection could not be made or was lost."""


class CertificateError(ConnectionError):
    """The server's certificate failed verification or did not match a pinned hash."""


class HandshakeError(WebTransportError):
    """The server refused the session.

    Attributes:
        status: the HTTP status the server answered (0 when it reset the request instead).
        headers: the response headers.
    """

    def __init__(self, message: str, *, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class TimeoutError(WebTransportError, builtins.TimeoutError):
    """A deadline passed."""


class ClientError(WebTransportError):
    """A client object was used outside its lifetime (not entered, or closed)."""


class ServerError(WebTransportError):
    """A server object was misused or could not start."""


class SessionError(WebTransportError):
    """The session is closed or cannot do what was asked."""


class StreamError(WebTransportError):
    """A stream failed: reset or stopped by the peer, or used after it closed.

    Attributes:
        error_code: the peer's 32-bit WebTransport application code when it reset or stopped
            the stream with one (None when the code was not a WebTransport code).
        h3_error_code: the raw HTTP/3 code from the wire, when the peer reset or stopped it
            (for example 0x10f H3_CONNECT_ERROR, which browsers use when a session ends).
    """

    def __init__(
        self, message: str = "", *, error_code: int | None = None, h3_error_code: int | None = None
    ) -> None:
        super().__init__(message, error_code=error_code)
        self.h3_error_code = h3_error_code


class DatagramError(WebTransportError):
    """A datagram could not be sent."""


class FlowControlError(WebTransportError):
    """Session flow control refused the operation."""


class ProtocolError(WebTransportError):
    """The peer violated the protocol."""


__all__ = [
    "CertificateError",
    "ClientError",
    "ConfigurationError",
    "ConnectionError",
    "DatagramError",
    "FlowControlError",
    "HandshakeError",
    "ProtocolError",
    "ServerError",
    "SessionError",
    "StreamError",
    "TimeoutError",
    "WebTransportError",
]
