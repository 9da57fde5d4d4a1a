"""Run the test application in a separate process (for tests that kill the server).

Usage: ``python -m tests.server_process CERTDIR PORT``; prints ``READY <port>`` when listening.
A certificate already in CERTDIR is used again (a restarted server keeps its key), and the port
is bound with SO_REUSEPORT, so a new server can take over a port before the old one is killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pywebtransport import WebTransportServer
from tests.certs import load_cert, make_cert


async def _main(certdir: str, port: int) -> None:
    from tests.conftest import build_app

    directory = Path(certdir)
    cert = load_cert(directory) if (directory / "key.pem").exists() else make_cert(directory)
    app = build_app(cert)
    server = WebTransportServer(config=app.config, app=app)
    await server.listen(host="127.0.0.1", port=port, reuse_port=True)
    sys.stdout.write(f"READY {server.local_address[1]}\n")
    sys.stdout.flush()
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
