"""SSLKEYLOGFILE support shared by the client and the server (only when it is set)."""

from __future__ import annotations

import os
from typing import TextIO, cast


class _KeyLogFile:
    """``SSLKEYLOGFILE`` sink for aioquic's ``secrets_log_file``.

    Each line is appended with the file opened just for that write and closed at once, so no
    descriptor stays open per client, server or connection and nothing needs closing later.
    Two sinks for one path are equal (the engine settings holding them compare and hash).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _KeyLogFile) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def write(self, text: str) -> int:
        with open(self.path, "a", encoding="ascii") as f:
            return f.write(text)

    def flush(self) -> None:
        """Nothing to do: every write is closed (and so flushed) before it returns."""


def key_log_file() -> TextIO | None:
    """A key-log sink when ``SSLKEYLOGFILE`` is set (and non-empty), else ``None``."""
    path = os.environ.get("SSLKEYLOGFILE")
    return cast("TextIO", _KeyLogFile(path)) if path else None
