"""Game client: sends inputs as datagrams and prints the newest game state it receives.

    python game_client.py --url https://127.0.0.1:4433/game --cert-hash HEX --seconds 5

States carry a tick number; a datagram with a tick not newer than the newest one seen (it
arrived late or out of order) is dropped and counted as stale, never shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from typing import Any

from pywebtransport import ClientConfig, WebTransportClient, WebTransportSession

INPUT_RATE = 30


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class View:
    """The newest state seen; older ones are superseded."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None
        self.shown = 0
        self.stale = 0

    def offer(self, data: bytes) -> bool:
        try:
            state = json.loads(data)
            tick = int(state["tick"])
        except (ValueError, KeyError, TypeError):
            return False
        if self.latest is not None and tick <= int(self.latest["tick"]):
            self.stale += 1
            return False
        self.latest = state
        return True


async def receive_states(session: WebTransportSession, view: View) -> None:
    async for data in session.datagrams:
        if view.offer(data) and view.latest is not None:
            state = view.latest
            me = state["players"].get(str(state["you"]), {})
            view.shown += 1
            say(
                f"STATE tick={state['tick']} players={len(state['players'])} "
                f"me=({me.get('x')},{me.get('y')}) inputs_applied={me.get('inputs')}"
            )


async def send_inputs(session: WebTransportSession, counter: list[int]) -> None:
    """Steer in a circle; each input carries an increasing sequence number."""
    seq = 0
    while True:
        angle = seq / INPUT_RATE
        message = {"seq": seq, "dx": round(math.cos(angle), 3), "dy": round(math.sin(angle), 3)}
        await session.datagrams.send_json(message)
        seq += 1
        counter[0] = seq
        await asyncio.sleep(1.0 / INPUT_RATE)


async def play(url: str, cert_hash: str, seconds: float) -> None:
    config = ClientConfig(server_certificate_hashes=[cert_hash])
    view = View()
    sent = [0]
    async with WebTransportClient(config=config) as client:
        session = await client.connect(url)
        tasks = [
            asyncio.create_task(receive_states(session, view)),
            asyncio.create_task(send_inputs(session, sent)),
        ]
        try:
            await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
    last = view.latest["tick"] if view.latest is not None else None
    say(f"DONE states={view.shown} stale={view.stale} last_tick={last} inputs_sent={sent[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Send inputs, print the newest game state.")
    parser.add_argument("--url", required=True, help="e.g. https://127.0.0.1:4433/game")
    parser.add_argument("--cert-hash", required=True, help="the server certificate's SHA-256")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to play")
    args = parser.parse_args()
    asyncio.run(play(args.url, args.cert_hash, args.seconds))


if __name__ == "__main__":
    main()
