"""Run the test application in a separate process (for tests that kill the server).

Usage: ``python -m tests.server_process CERTDIR PORT [RETRY]``; prints ``READY <port>`` when
listening (RETRY: the ``ServerConfig.retry`` mode, by default the config's own).
A certificate already in CERTDIR is used again (a restarted server keeps its key), and the port
is bound with SO_REUSEPORT, so a new server can take over a port before the old one is killed.
It runs on the QUIC engine named by ``$PYWEBTRANSPORT_TEST_ENGINE`` (default: aioquic).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pywebtransport import WebTransportServer
from tests.certs import load_cert, make_cert


async def _main(certdir: str, port: int, retry: str | None) -> None:
    from tests.conftest import build_app

    directory = Path(certdir)
    cert = load_cert(directory) if (directory / "key.pem").exists() else make_cert(directory)
    # The engine of the test that started this process (tests/faults.py start_child).
    options: dict[str, object] = {} if retry is None else {"retry": retry}
    app = build_app(cert, engine=os.environ.get("PYWEBTRANSPORT_TEST_ENGINE", "aioquic"), **options)
    server = WebTransportServer(config=app.config, app=app)
    await server.listen(host="127.0.0.1", port=port, reuse_port=True)
    sys.stdout.write(f"READY {server.local_address[1]}\n")
    sys.stdout.flush()
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
