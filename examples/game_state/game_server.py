"""Game state server: a 60 Hz tick that sends the latest state to every player as a datagram.

Each tick the server applies the newest input of every player, advances the tick number and
sends each connected session one datagram with the whole state:
``{"tick": N, "you": ID, "players": {ID: {"x": .., "y": .., "inputs": ..}}}``. Datagrams are
never resent or queued up: a lost one is simply superseded by the next tick's.

Players send inputs as datagrams, ``{"seq": N, "dx": .., "dy": ..}``; an input with a ``seq``
not newer than the last one applied (late or reordered) is ignored.

    python game_server.py --host 127.0.0.1 --port 4433
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
from dataclasses import dataclass

from pywebtransport import ServerApp, ServerConfig, WebTransportServer, WebTransportSession
from pywebtransport.exceptions import WebTransportError
from pywebtransport.server.certificate import generate_self_signed_certificate

TICK_RATE = 60


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass
class Player:
    player_id: int
    x: float = 0.0
    y: float = 0.0
    dx: float = 0.0
    dy: float = 0.0
    last_seq: int = -1
    inputs: int = 0


class Game:
    def __init__(self) -> None:
        self.tick = 0
        self.players: dict[WebTransportSession, Player] = {}
        self._ids = itertools.count(1)

    def join(self, session: WebTransportSession) -> Player:
        player = Player(player_id=next(self._ids))
        self.players[session] = player
        return player

    def apply_input(self, player: Player, data: bytes) -> None:
        try:
            message = json.loads(data)
            seq = int(message["seq"])
            dx, dy = float(message["dx"]), float(message["dy"])
        except (ValueError, KeyError, TypeError):
            return  # not an input: ignore it
        if seq <= player.last_seq:
            return  # older than what was applied already
        player.last_seq = seq
        player.inputs += 1
        player.dx, player.dy = max(-1.0, min(1.0, dx)), max(-1.0, min(1.0, dy))

    def step(self) -> None:
        self.tick += 1
        for player in self.players.values():
            player.x += player.dx / TICK_RATE
            player.y += player.dy / TICK_RATE

    async def broadcast(self) -> None:
        state = {
            str(p.player_id): {"x": round(p.x, 3), "y": round(p.y, 3), "inputs": p.inputs}
            for p in self.players.values()
        }
        for session, player in list(self.players.items()):
            if not session.is_ready:
                continue
            payload = {"tick": self.tick, "you": player.player_id, "players": state}
            data = json.dumps(payload, separators=(",", ":")).encode()
            try:
                if len(data) <= session.datagrams.max_datagram_size:
                    await session.datagrams.send(data)
            except WebTransportError:
                pass  # the session is ending; its handler removes the player

    async def run(self) -> None:
        """Tick at TICK_RATE on the loop's clock, skipping ticks rather than bunching them."""
        loop = asyncio.get_running_loop()
        period = 1.0 / TICK_RATE
        next_tick = loop.time()
        while True:
            self.step()
            await self.broadcast()
            next_tick += period
            now = loop.time()
            if next_tick < now:  # fell behind: do not send a burst of stale states
                next_tick = now
            await asyncio.sleep(next_tick - now)


def make_app(config: ServerConfig, game: Game) -> ServerApp:
    app = ServerApp(config=config)

    @app.route("/game")
    async def play(session: WebTransportSession) -> None:
        player = game.join(session)
        say(f"JOIN player={player.player_id}")
        try:
            async for data in session.datagrams:  # ends when the session ends
                game.apply_input(player, data)
        finally:
            del game.players[session]
            say(
                f"LEAVE player={player.player_id} inputs={player.inputs} last_seq={player.last_seq}"
            )

    return app


async def serve(host: str, port: int) -> None:
    bundle = generate_self_signed_certificate()
    config = ServerConfig(certificate=bundle)
    game = Game()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with WebTransportServer(config=config, app=make_app(config, game)) as server:
        await server.listen(host=host, port=port)
        ticker = asyncio.create_task(game.run())
        bound_host, bound_port = server.local_address[:2]
        say(f"READY https://{bound_host}:{bound_port}/game {bundle.sha256.hex()}")
        await stop.wait()
        ticker.cancel()
        await server.close(grace=1.0)
    say("STOPPED")


def main() -> None:
    parser = argparse.ArgumentParser(description="A 60 Hz game state server over datagrams.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433, help="0 picks a free port")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
