"""Counter client: sends 1, 2, 3, ... over a session kept open by ReconnectingClient.

    python counter_client.py --url https://127.0.0.1:4433/counter --cert-hash HEX --count 100

Every value goes on its own bidirectional stream and counts once the server acknowledged it.
When the session is lost (for instance because the server was restarted), the client
reconnects and sends the unacknowledged value again, so the count carries on where it was.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pywebtransport import ClientConfig, WebTransportSession
from pywebtransport.client import ReconnectingClient
from pywebtransport.events import Event
from pywebtransport.exceptions import WebTransportError


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def send_value(session: WebTransportSession, value: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        stream = await session.create_bidirectional_stream()
        await stream.write_all(str(value).encode())
        reply = await stream.read_all(max_size=64)
    if reply != f"ack {value}".encode():
        raise WebTransportError(f"unexpected reply {reply!r}")


async def count(url: str, cert_hash: str, total: int, interval: float) -> int:
    config = ClientConfig(
        server_certificate_hashes=[cert_hash],
        auto_reconnect=True,
        max_retries=-1,  # keep trying while the server is down
        retry_delay=0.2,
        retry_backoff=1.5,
        max_retry_delay=1.0,
    )
    client = ReconnectingClient(url=url, config=config)
    client.on("connection_established", lambda event: say("CONNECTED"))
    client.on("connection_lost", lambda event: say(f"LOST code={event.data['code']}"))

    def on_failed(event: Event) -> None:
        say(f"GAVE UP {event.data['error']}")

    client.on("connection_failed", on_failed)
    value = 1
    async with client:
        while value <= total:
            session = await client.get_session(wait_timeout=5.0)
            if session is None:
                say("WAITING for a session")
                continue
            try:
                await send_value(session, value, timeout=2.0)
            except (WebTransportError, TimeoutError) as exc:
                say(f"RETRY {value} ({type(exc).__name__})")
                if not session.is_closed:
                    await session.wait_closed()  # the client is reconnecting
                continue
            say(f"ACK {value}")
            value += 1
            await asyncio.sleep(interval)
    say(f"DONE {value - 1}")
    return value - 1


def main() -> None:
    parser = argparse.ArgumentParser(description="Send a counter over a reconnecting session.")
    parser.add_argument("--url", required=True, help="e.g. https://127.0.0.1:4433/counter")
    parser.add_argument("--cert-hash", required=True, help="the server certificate's SHA-256")
    parser.add_argument("--count", type=int, default=100, help="stop after this many values")
    parser.add_argument("--interval", type=float, default=0.1, help="pause between values")
    args = parser.parse_args()
    asyncio.run(count(args.url, args.cert_hash, args.count, args.interval))


if __name__ == "__main__":
    main()
