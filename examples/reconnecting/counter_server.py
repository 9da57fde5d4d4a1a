"""Counter server: acknowledges every counter value a client sends on a bidirectional stream.

Each value arrives on its own stream as decimal text; the server answers ``ack N`` and ends
the stream. With ``--state-dir`` the certificate is kept in that folder (created on the first
start, loaded on later ones), so a restarted server has the same certificate hash and the
same stateless-reset key, and clients that pinned the hash reconnect to it.

    python counter_server.py --host 127.0.0.1 --port 4433 --state-dir state
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
from pathlib import Path

from pywebtransport import (
    ServerApp,
    ServerConfig,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.exceptions import WebTransportError
from pywebtransport.server.certificate import (
    CertificateBundle,
    generate_self_signed_certificate,
)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def load_certificate(state_dir: Path | None) -> CertificateBundle:
    """A certificate made in memory, kept in ``state_dir`` when one is given."""
    if state_dir is None:
        return generate_self_signed_certificate()
    certfile, keyfile = state_dir / "cert.pem", state_dir / "key.pem"
    if certfile.exists() and keyfile.exists():
        return CertificateBundle.from_pem(certfile.read_bytes(), keyfile.read_bytes())
    state_dir.mkdir(parents=True, exist_ok=True)
    bundle = generate_self_signed_certificate()
    bundle.write(certfile=certfile, keyfile=keyfile)
    return bundle


async def answer(stream: WebTransportStream) -> None:
    try:
        value = int(await stream.read_all(max_size=32))
        say(f"GOT {value}")
        await stream.write_all(f"ack {value}".encode())
    except (ValueError, WebTransportError):
        await stream.abort(code=1)


def make_app(config: ServerConfig) -> ServerApp:
    app = ServerApp(config=config)

    @app.route("/counter")
    async def counter(session: WebTransportSession) -> None:
        tasks: set[asyncio.Task[None]] = set()
        async for stream in session.incoming_streams():
            if isinstance(stream, WebTransportStream):
                task = asyncio.create_task(answer(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    return app


async def serve(host: str, port: int, state_dir: Path | None, reuse_port: bool) -> None:
    bundle = load_certificate(state_dir)
    # Derived from the private key, so that a restart with the same key keeps the same one.
    reset_key = hashlib.sha256(b"counter-server stateless reset\0" + bundle.key_pem).digest()
    config = ServerConfig(certificate=bundle, stateless_reset_key=reset_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with WebTransportServer(config=config, app=make_app(config)) as server:
        await server.listen(host=host, port=port, reuse_port=reuse_port)
        bound_host, bound_port = server.local_address[:2]
        say(f"READY https://{bound_host}:{bound_port}/counter {bundle.sha256.hex()}")
        await stop.wait()
        await server.close(grace=1.0)
    say("STOPPED")


def main() -> None:
    parser = argparse.ArgumentParser(description="Acknowledge counter values.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433, help="0 picks a free port")
    parser.add_argument("--state-dir", type=Path, help="keep the certificate here")
    parser.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.state_dir, args.reuse_port))


if __name__ == "__main__":
    main()
