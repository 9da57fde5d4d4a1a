"""The ``async with`` life cycle the client classes share: new -> open -> closed."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..exceptions import ClientError

if TYPE_CHECKING:
    from types import TracebackType


class AsyncLifecycle:
    """Entered/closed bookkeeping: use only inside ``async with``, ``close()`` on exit.

    Subclasses set ``_noun`` (for messages), call :meth:`_check_enter` at the start of their
    ``__aenter__`` and :meth:`_check_usable` at the start of every public operation.
    """

    _noun: ClassVar[str] = "client"

    def __init__(self) -> None:
        super().__init__()  # cooperative: a subclass may also be an EventEmitter
        self._entered = False
        self._closed = False

    @property
    def _state_text(self) -> str:
        return "closed" if self._closed else ("open" if self._entered else "new")

    def _check_enter(self) -> None:
        if self._closed:
            raise ClientError(f"{self._noun} is closed")

    def _check_usable(self) -> None:
        if self._closed:
            raise ClientError(f"{self._noun} is closed")
        if not self._entered:
            raise ClientError(f"use the {self._noun} inside 'async with'")

    async def close(self) -> None:
        """Release everything; idempotent."""
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
