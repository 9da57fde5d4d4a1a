"""File upload server: receives a file on a bidirectional stream and answers with its SHA-256.

Wire format of one upload (client to server): one JSON line ``{"name": ..., "size": ...}``, then
exactly ``size`` bytes, then the end of the stream. The server answers with one JSON line
``{"name": ..., "size": ..., "sha256": ...}`` (or ``{"error": ...}``) and ends its side.

    python upload_server.py --host 127.0.0.1 --port 4433
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys

from pywebtransport import (
    ServerApp,
    ServerConfig,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.exceptions import WebTransportError
from pywebtransport.server.certificate import generate_self_signed_certificate

MAX_HEADER = 4096


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def receive_file(stream: WebTransportStream) -> None:
    """Read one upload from ``stream`` and answer with the checksum of what arrived."""
    try:
        header_line = await stream.readline()
        if not header_line.endswith(b"\n") or len(header_line) > MAX_HEADER:
            raise ValueError("missing or oversized header line")
        header = json.loads(header_line)
        name = str(header["name"])
        size = int(header["size"])
        digest = hashlib.sha256()
        received = 0
        async for chunk in stream:
            received += len(chunk)
            if received > size:
                raise ValueError(f"more than the announced {size} bytes")
            digest.update(chunk)
        if received != size:
            raise ValueError(f"announced {size} bytes, received {received}")
    except (ValueError, KeyError, TypeError) as exc:
        await stream.write_all(json.dumps({"error": str(exc)}).encode() + b"\n")
        return
    checksum = digest.hexdigest()
    say(f"RECEIVED {name} {size} {checksum}")
    answer = {"name": name, "size": size, "sha256": checksum}
    await stream.write_all(json.dumps(answer).encode() + b"\n")


def make_app(config: ServerConfig) -> ServerApp:
    app = ServerApp(config=config)

    @app.route("/upload")
    async def upload(session: WebTransportSession) -> None:
        tasks: set[asyncio.Task[None]] = set()
        async for stream in session.incoming_streams():
            if isinstance(stream, WebTransportStream):
                task = asyncio.create_task(handle(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def handle(stream: WebTransportStream) -> None:
        try:
            await receive_file(stream)
        except WebTransportError as exc:
            say(f"upload failed: {exc}")

    return app


async def serve(host: str, port: int) -> None:
    bundle = generate_self_signed_certificate()
    config = ServerConfig(certificate=bundle)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with WebTransportServer(config=config, app=make_app(config)) as server:
        await server.listen(host=host, port=port)
        bound_host, bound_port = server.local_address[:2]
        say(f"READY https://{bound_host}:{bound_port}/upload {bundle.sha256.hex()}")
        await stop.wait()
        await server.close(grace=1.0)
    say("STOPPED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433, help="0 picks a free port")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
