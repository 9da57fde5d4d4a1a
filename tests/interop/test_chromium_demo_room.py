"""The demo page's room with two workers behind one port and Redis between them.

``pywebtransport serve --workers 2 --broker redis://...`` serves the room; two headless Chromium
pages (two tabs) and Python members on both workers join ``lobby``; every member sees every
page's message and the pages see everyone in the presence list.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from pywebtransport.web import demo_page, messaging_module
from tests.conftest import T
from tests.interop.chromium import run_page
from tests.pubsub.test_workers import join_members, serve
from tests.redis_server import RedisServer

PAGE_TIMEOUT = 60.0
SCENARIO_TIMEOUT = 150.0


async def test_two_tabs_and_python_members_share_a_room_across_workers(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        async with (
            asyncio.timeout(SCENARIO_TIMEOUT),
            serve(tmp_path, "--workers", "2", "--broker", redis.url) as served,
            AsyncExitStack() as stack,
        ):
            members = await join_members(stack, [served], 2, min_nodes=2)
            config: dict[str, Any] = {
                "url": f"https://127.0.0.1:{served.udp_port}/echo",
                "certificateHash": served.hash_hex,
                "roomPath": "/room",
                "count": 1,
                "size": 100,
            }
            gets = {"/pywebtransport/messaging.js": (messaging_module(), "text/javascript")}
            reports = await asyncio.gather(
                *(
                    run_page(
                        demo_page(),
                        config,
                        timeout=PAGE_TIMEOUT,
                        log_path=tmp_path / f"chromium-room-{tab}.log",
                        gets=gets,
                    )
                    for tab in range(2)
                )
            )
            names = []
            for report in reports:
                room = report["room"]
                assert room["ok"], json.dumps(room, indent=1)
                assert room["members"] >= len(members) + 1  # the Python members and itself
                names.append(room["name"])
            assert len(set(names)) == 2
            # Each Python member (one on each worker) received both pages' messages.
            for member in members:
                seen: set[str] = set()
                while seen != set(names):
                    message = await member.receive(timeout=4 * T)
                    if message.data.get("text") == f"hello from {message.data.get('from')}":
                        seen.add(message.data["from"])
    finally:
        redis.stop()
