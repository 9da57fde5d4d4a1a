"""The topics demo behind ``pywebtransport serve`` (route ``/room``).

Every session on the route becomes a member of the application's :class:`~pywebtransport.pubsub.Hub`
(built from ``ServerConfig.broker_url``, so with ``--workers N --broker redis://...`` one room
spans every worker). Members may join any topic and list who is in it; they may publish only on
:data:`PUBLIC_TOPICS`; their channel takes messages of up to 64 KiB.
"""

from __future__ import annotations

from ..config import ServerConfig
from ..messaging import Messenger
from ..pubsub import Hub
from ..server.app import ServerApp
from ..session import WebTransportSession

__all__ = ["PUBLIC_TOPICS", "add_room"]

PUBLIC_TOPICS = frozenset({"lobby"})
"""Topics members may publish on."""


def _authorize(session: WebTransportSession, action: str, topic: str) -> bool:
    return action != "publish" or topic in PUBLIC_TOPICS


def add_room(app: ServerApp, path: str, config: ServerConfig) -> Hub:
    """Serve the room on ``path`` of ``app``: its hub starts and stops with the app."""
    hub = Hub.from_url(config.broker_url, authorize=_authorize)

    @app.on_startup
    async def start() -> None:
        await hub.start()

    @app.on_shutdown
    async def stop() -> None:
        await hub.close()

    @app.route(path)
    async def room(session: WebTransportSession) -> None:
        messenger = Messenger(session, max_message_size=64 * 1024)
        hub.attach(messenger)
        await messenger.serve()

    return hub
