"""Chat room client: joins with a name, sends lines, prints what the room says.

    python chat_client.py --url https://127.0.0.1:4433/chat --cert-hash HEX --name bob
    python chat_client.py --url ... --cert-hash HEX --name bob "hello" "anyone here?"

Without messages on the command line it sends every line typed on standard input until its
end (Ctrl-D). It leaves once the room has sent each of its own messages back (so every member
has been sent them) and, with ``--wait-for TEXT``, once another member's message containing
``TEXT`` has arrived too. It prints one line per event:

    WELCOME bob members=alice,bob
    JOINED carol
    MESSAGE alice: hello bob
    LEFT carol
    DONE sent=2 received=3

The exit status is 0 after ``DONE``. It is 1 after ``CLOSED ...`` (a send failed: the room or
the connection is gone) and after ``INCOMPLETE ...`` (the room closed, or ``--timeout`` seconds
passed, before the awaited messages came).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

from pywebtransport import ClientConfig, WebTransportClient
from pywebtransport.exceptions import WebTransportError
from pywebtransport.messaging import Channel, Messenger


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Progress:
    """Counts messages; ``done`` is set once the client has nothing left to wait for."""

    def __init__(self, wait_for: str | None) -> None:
        self.me = ""
        self.sent = 0
        self.sending_done = False
        self.echoed = 0  # own messages the room sent back
        self.received = 0  # messages of other members
        self.wait_for = wait_for
        self.done = asyncio.Event()

    def check(self) -> None:
        if self.sending_done and self.echoed >= self.sent and self.wait_for is None:
            self.done.set()

    def note(self, event: dict[str, Any]) -> None:
        if event.get("type") != "message":
            return
        if event.get("name") == self.me:
            self.echoed += 1
        else:
            self.received += 1
            if self.wait_for is not None and self.wait_for in str(event.get("text")):
                self.wait_for = None
        self.check()


def show(event: dict[str, Any]) -> None:
    kind = event.get("type")
    if kind == "welcome":
        say(f"WELCOME {event['name']} members={','.join(event['members'])}")
    elif kind == "joined":
        say(f"JOINED {event['name']}")
    elif kind == "left":
        say(f"LEFT {event['name']}")
    elif kind == "message":
        say(f"MESSAGE {event['name']}: {event['text']}")


async def listen(chat: Channel, progress: Progress) -> None:
    async for event in chat:  # until the server closes the channel
        if isinstance(event, dict):
            show(event)
            progress.note(event)


async def lines(messages: list[str]) -> AsyncIterator[str]:
    """The messages given on the command line, else the lines of standard input."""
    if messages:
        for message in messages:
            yield message
        return
    while line := await asyncio.to_thread(sys.stdin.readline):  # "" at the end of input
        if line.strip():
            yield line.rstrip("\n")


async def chat(args: argparse.Namespace) -> int:
    config = ClientConfig(server_certificate_hashes=[args.cert_hash])
    progress = Progress(args.wait_for)
    async with WebTransportClient(config=config) as client:
        session = await client.connect(args.url)
        messenger = Messenger(session)
        channel = await messenger.open_channel("chat", timeout=args.timeout)
        await channel.send({"join": args.name})
        welcome = await channel.receive(timeout=args.timeout)
        show(welcome)
        progress.me = welcome["name"]
        listener = asyncio.create_task(listen(channel, progress))
        finished = asyncio.create_task(progress.done.wait())
        try:
            async for text in lines(args.messages):
                await channel.send({"text": text})
                progress.sent += 1
            progress.sending_done = True
            progress.check()
            # Wait for the echoes (and the awaited text), or for the room to go away.
            await asyncio.wait(
                {finished, listener}, timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except WebTransportError as error:  # a send failed: the room or the connection is gone
            say(f"CLOSED {error}")
            return 1
        finally:
            await channel.close()  # this is leaving the room
            for task in (listener, finished):
                task.cancel()
            await asyncio.gather(listener, finished, return_exceptions=True)
            await session.close()
    if not progress.done.is_set():
        say(
            f"INCOMPLETE sent={progress.sent} echoed={progress.echoed} wait_for={progress.wait_for}"
        )
        return 1
    say(f"DONE sent={progress.sent} received={progress.received}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="Join the chat room, send lines, print events.")
    parser.add_argument("--url", required=True, help="e.g. https://127.0.0.1:4433/chat")
    parser.add_argument("--cert-hash", required=True, help="the server certificate's SHA-256")
    parser.add_argument("--name", required=True)
    parser.add_argument("--wait-for", help="stay until a message containing this text arrives")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait at most")
    parser.add_argument("messages", nargs="*", help="messages to send (default: stdin lines)")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(chat(args)))
    except KeyboardInterrupt:  # Ctrl-C: leave without a traceback
        sys.exit(130)


if __name__ == "__main__":
    main()
