"""The documentation site builds with MkDocs in strict mode.

Strict mode turns every warning into an error: a link to a missing page or anchor, a page left out
of the nav, or a docstring the API pages cannot parse fails the build.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 120.0
EXPECTED_PAGES = [
    "index.html",
    "getting-started/index.html",
    "tutorial-chat/index.html",
    "howto/certificates/index.html",
    "howto/testing/index.html",
    "server/index.html",
    "api/client/index.html",
    "api/server/index.html",
    "api/session-and-streams/index.html",
    "architecture/index.html",
]


def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-5000:]
    missing = [page for page in EXPECTED_PAGES if not (site / page).is_file()]
    assert not missing, missing
    api_client = (site / "api/client/index.html").read_text()
    assert 'id="pywebtransport.client.WebTransportClient"' in api_client
    assert 'id="pywebtransport.client.ReconnectingClient.get_session"' in api_client
