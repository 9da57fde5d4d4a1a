"""Upload a file to upload_server.py and check the SHA-256 the server computed.

    python upload.py PATH --url https://127.0.0.1:4433/upload --cert-hash HEX

Progress goes to standard output, one line per step (every 10 % by default); the exit
status is 0 when the server's checksum matches the local one, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path

from pywebtransport import ClientConfig, WebTransportClient

CHUNK = 64 * 1024


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def upload(path: Path, size: int, url: str, cert_hash: str, steps: int) -> bool:
    local = hashlib.sha256()
    config = ClientConfig(server_certificate_hashes=[cert_hash])
    async with WebTransportClient(config=config) as client:
        session = await client.connect(url)
        stream = await session.create_bidirectional_stream()
        header = {"name": path.name, "size": size}
        await stream.write(json.dumps(header).encode() + b"\n")
        sent = 0
        next_report = 1
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                await stream.write(chunk)  # waits while the stream's send buffer is full
                local.update(chunk)
                sent += len(chunk)
                while size and next_report <= steps and sent * steps >= size * next_report:
                    say(f"PROGRESS {sent}/{size} bytes ({100 * sent // size}%)")
                    next_report += 1
        await stream.close()  # end of the upload
        answer = json.loads(await stream.readline())
        await session.close()
    if "error" in answer:
        say(f"FAILED server error: {answer['error']}")
        return False
    if answer["sha256"] != local.hexdigest():
        say(f"MISMATCH local {local.hexdigest()} server {answer['sha256']}")
        return False
    say(f"OK {answer['sha256']}")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description="Upload a file and check its SHA-256.")
    parser.add_argument("path", type=Path)
    parser.add_argument("--url", required=True, help="e.g. https://127.0.0.1:4433/upload")
    parser.add_argument("--cert-hash", required=True, help="the server certificate's SHA-256")
    parser.add_argument("--steps", type=int, default=10, help="progress lines per upload")
    args = parser.parse_args()
    size = args.path.stat().st_size
    ok = asyncio.run(upload(args.path, size, args.url, args.cert_hash, max(1, args.steps)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
