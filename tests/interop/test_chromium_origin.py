"""Headless Chromium against ``origin_allowlist``: the browser's real ``origin`` header decides.

A page served from ``http://127.0.0.1:<port>`` opens a WebTransport session to two of our servers:
one whose allow-list holds the page's origin (the session opens and echoes), one whose allow-list
does not (the page's ``ready`` rejects, and the server answered 403). Both servers record the
``origin`` header Chromium sent, so the test also shows what a browser puts there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import ServerApp, ServerConfig, WebTransportServer, WebTransportSession
from pywebtransport.server import origin_allowlist
from pywebtransport.server.certificate import generate_self_signed_certificate
from pywebtransport.server.echo import echo_handler
from pywebtransport.web import PageServer
from tests.interop.chromium import Chromium, load_page
from tests.interop.conftest import AccessRecords

pytestmark = [pytest.mark.interop]

TEST_TIMEOUT = 45.0
PAGE_TIMEOUT = 30.0

PAGE = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>origin check</title></head>
<body><pre id="log"></pre><script src="/common.js"></script><script>
"use strict";
// Reads /config.json ({targets: {name: url}, hash}); for each target opens a WebTransport session,
// echoes one message on a bidirectional stream, and POSTs {name: {ok, echo | error}} to /report.
// hexToBytes and withTimeout come from the pages' shared common.js.
async function attempt(url, hash) {
  const wt = new WebTransport(url, {
    serverCertificateHashes: [{ algorithm: "sha-256", value: hexToBytes(hash) }],
  });
  wt.closed.catch(() => {});
  try {
    await withTimeout(wt.ready, 10000, "ready");
  } catch (error) {
    return { ok: false, error: `${error.name}: ${error.message}` };
  }
  const stream = await wt.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  await writer.write(new TextEncoder().encode("hello origin"));
  await writer.close();
  const reader = stream.readable.getReader();
  let text = "";
  for (;;) {
    const { value, done } = await withTimeout(reader.read(), 10000, "echo");
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  wt.close({ closeCode: 0, reason: "done" });
  return { ok: true, echo: text };
}
async function main() {
  const report = {};
  try {
    const config = await (await fetch("/config.json")).json();
    for (const [name, url] of Object.entries(config.targets)) {
      report[name] = await attempt(url, config.hash);
    }
  } catch (error) {
    report.pageError = `${error}`;
  }
  await fetch("/report", { method: "POST", body: JSON.stringify(report) });
}
main();
</script></body></html>
"""


@asynccontextmanager
async def guarded_server(
    config: ServerConfig, allowed: list[str], seen: list[str | None]
) -> AsyncIterator[str]:
    """Our echo server behind ``origin_allowlist(allowed, require=True)``; yields its base URL."""
    app = ServerApp(config=config)
    app.route("/echo")(echo_handler)

    async def record_origin(session: WebTransportSession) -> None:
        seen.append(session.headers.get("origin"))

    app.add_middleware(record_origin)
    app.add_middleware(origin_allowlist(allowed, require=True))
    server = WebTransportServer(config=config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    try:
        yield f"https://127.0.0.1:{server.local_address[1]}"
    finally:
        await server.close()


@pytest.mark.covers("origin", "chromium")
async def test_browser_origin_allowed_and_rejected(tmp_path: Path, access: AccessRecords) -> None:
    await origin_checked(tmp_path, access, Chromium)


async def origin_checked(tmp_path: Path, access: AccessRecords, browser: type[Chromium]) -> None:
    """A page served from one origin opens a session on a server listing that origin and on
    one that does not; the browser's real ``origin`` header decides both."""
    bundle = generate_self_signed_certificate()
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    bundle.write(certfile=str(certfile), keyfile=str(keyfile))
    config = ServerConfig(certfile=str(certfile), keyfile=str(keyfile))
    seen_allowed: list[str | None] = []
    seen_denied: list[str | None] = []
    async with asyncio.timeout(TEST_TIMEOUT), PageServer() as pages:
        page_origin = pages.url.rstrip("/")
        async with (
            guarded_server(config, [page_origin], seen_allowed) as allowed_url,
            guarded_server(config, ["https://app.example.com"], seen_denied) as denied_url,
        ):
            page_config: dict[str, Any] = {
                "targets": {
                    "allowed": allowed_url + "/echo?server=allowed",
                    "denied": denied_url + "/echo?server=denied",
                },
                "hash": bundle.sha256.hex(),
            }
            pages.add_get("/", PAGE)
            pages.add_get("/common.js", load_page("common.js"), content_type="text/javascript")
            pages.add_get(
                "/config.json", json.dumps(page_config).encode(), content_type="application/json"
            )
            pages.add_post("/report")
            log = tmp_path / f"{browser.name}.log"
            async with browser(pages.url, log_path=log) as running:
                report = await running.wait_for_post(pages, "/report", timeout=PAGE_TIMEOUT)

    assert "pageError" not in report, json.dumps(report, indent=1)
    assert report["allowed"] == {"ok": True, "echo": "hello origin"}, report
    assert report["denied"]["ok"] is False, report
    assert report["denied"]["error"].startswith("WebTransportError"), report
    # The browser sent its page's origin to both servers; only the one listing it let it in.
    assert seen_allowed == [page_origin]
    assert seen_denied == [page_origin]
    outcomes = {record.path: record.status for record in access.records}  # type: ignore[attr-defined]
    assert outcomes == {"/echo?server=allowed": 200, "/echo?server=denied": 403}
