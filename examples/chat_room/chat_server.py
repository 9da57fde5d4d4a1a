"""Chat room server: browser pages and Python clients share one room over WebTransport.

One program serves two things:

* the room itself, a WebTransport route (``/chat``) on UDP;
* the page ``chat.html`` and what it needs, over plain HTTP on TCP (the same port number when it
  is free, else any free port; the ``PAGE`` line says which).

Every member opens one channel named ``chat`` with the project's message layer
(``pywebtransport.messaging``) and sends JSON objects on it:

* first ``{"join": NAME}``; the server answers ``{"type": "welcome", "name": NAME, "members":
  [...]}`` (the name may get a suffix when it is taken) and tells everybody ``{"type":
  "joined", "name": NAME}``;
* then ``{"text": TEXT}`` for each message, which everybody (the sender included) receives as
  ``{"type": "message", "name": NAME, "text": TEXT}``;
* closing the channel (or the whole session) is leaving: everybody left gets ``{"type": "left",
  "name": NAME}``.

    python chat_server.py --host 127.0.0.1 --port 4433

prints ``READY https://HOST:PORT/chat CERT_SHA256`` and ``PAGE http://HOST:TCP_PORT/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from pywebtransport import ServerApp, ServerConfig, WebTransportServer, WebTransportSession
from pywebtransport.exceptions import WebTransportError
from pywebtransport.messaging import Channel, MessagingError, Messenger
from pywebtransport.server.certificate import generate_self_signed_certificate
from pywebtransport.web import PageServer, messaging_module

PAGE = Path(__file__).with_name("chat.html")
CHAT_PATH = "/chat"
MAX_NAME = 32  # characters
MAX_TEXT = 1000  # characters
JOIN_TIMEOUT = 10.0  # seconds a new channel has to say its name
SEND_TIMEOUT = 2.0  # seconds a member may take to accept one message before it is dropped


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Room:
    """The members present, by name, each with its open ``chat`` channel."""

    def __init__(self) -> None:
        self.members: dict[str, Channel] = {}

    def free_name(self, wanted: str) -> str:
        """``wanted``, cleaned up, with a number added when somebody has it already."""
        base = " ".join(wanted.split())[:MAX_NAME] or "guest"
        name, number = base, 1
        while name in self.members:
            number += 1
            name = f"{base}-{number}"
        return name

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every member at once; a member too slow to take it is dropped."""
        members = list(self.members.items())
        await asyncio.gather(*(self._send(name, channel, message) for name, channel in members))

    async def _send(self, name: str, channel: Channel, message: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await channel.send(message)
        except (TimeoutError, WebTransportError):  # MessagingError is a WebTransportError
            # Its own handler notices the aborted channel and announces that it left.
            await channel.abort(code=1)

    async def serve_member(self, channel: Channel) -> None:
        """Run one member: its name first, then its messages until it leaves."""
        try:
            hello = await channel.receive(timeout=JOIN_TIMEOUT)
        except (TimeoutError, MessagingError):
            return  # never said who it is
        wanted = hello.get("join") if isinstance(hello, dict) else None
        name = self.free_name(wanted if isinstance(wanted, str) else "")
        self.members[name] = channel
        say(f"JOIN {name}")
        try:
            await channel.send({"type": "welcome", "name": name, "members": list(self.members)})
            await self.broadcast({"type": "joined", "name": name})
            async for message in channel:  # ends when the member closes the channel
                text = message.get("text") if isinstance(message, dict) else None
                if isinstance(text, str) and text.strip():
                    text = text[:MAX_TEXT]
                    say(f"MESSAGE {name}: {text}")
                    await self.broadcast({"type": "message", "name": name, "text": text})
        except WebTransportError:
            pass  # the channel or the session broke: that is leaving too
        finally:
            del self.members[name]
            say(f"LEAVE {name}")
            await self.broadcast({"type": "left", "name": name})


def make_app(config: ServerConfig, room: Room) -> ServerApp:
    app = ServerApp(config=config)

    @app.route(CHAT_PATH)
    async def chat(session: WebTransportSession) -> None:
        messenger = Messenger(session, max_message_size=16 * 1024)
        messenger.route("chat")(room.serve_member)
        await messenger.serve()  # runs the routes until the session ends

    return app


def make_pages(udp_port: int, cert_hash: str) -> PageServer:
    """The HTTP side: the page, the browser module it imports, its settings, and ``/report``."""
    settings = {"port": udp_port, "path": CHAT_PATH, "certificateHash": cert_hash}
    pages = PageServer()
    pages.add_get("/", PAGE.read_bytes)  # read at each request: edit the page, reload it
    pages.add_get("/config.json", json.dumps(settings).encode(), content_type="application/json")
    pages.add_get(
        "/pywebtransport/messaging.js", messaging_module(), content_type="text/javascript"
    )

    async def on_report(report: Any) -> None:
        # A page opened with ?test=1 posts what it shows here (the automated test reads it).
        say(f"REPORT {json.dumps(report, separators=(',', ':'))}")

    pages.add_post("/report", on_report)
    return pages


async def start_pages(pages: PageServer, host: str, port: int) -> None:
    """Listen on TCP ``port`` (the UDP port's number) if it is free, else on any port."""
    try:
        await pages.start(host=host, port=port)
    except OSError:
        await pages.start(host=host, port=0)


async def serve(host: str, port: int) -> None:
    bundle = generate_self_signed_certificate()
    config = ServerConfig(certificate=bundle)
    room = Room()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with WebTransportServer(config=config, app=make_app(config, room)) as server:
        await server.listen(host=host, port=port)
        bound_host, bound_port = server.local_address[:2]
        pages = make_pages(bound_port, bundle.sha256.hex())
        await start_pages(pages, host, bound_port)
        try:
            url_host = host_in_url(bound_host)
            say(f"READY https://{url_host}:{bound_port}{CHAT_PATH} {bundle.sha256.hex()}")
            say(f"PAGE http://{url_host}:{pages.port}/")
            await stop.wait()
        finally:
            await pages.close()
            await server.close(grace=1.0)
    say("STOPPED")


def main() -> None:
    parser = argparse.ArgumentParser(description="A chat room for browser pages and Python.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433, help="0 picks a free port")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
