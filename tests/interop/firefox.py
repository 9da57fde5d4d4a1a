"""Headless Firefox as a WebTransport test peer, driven like Chromium (see chromium.py).

Firefox runs as ``firefox-esr --headless --no-remote --profile <fresh dir> URL``: no automation
package and no display. Each run gets a fresh profile whose ``user.js`` turns off what would make a
run depend on the one before (session restore after a kill) or reach beyond loopback (updates,
telemetry, captive-portal and connectivity checks, safe browsing).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.interop.chromium import Chromium

__all__ = ["Firefox", "find_firefox"]

#: Preferences of every test profile.
PREFERENCES = {
    "browser.sessionstore.resume_from_crash": False,
    "browser.shell.checkDefaultBrowser": False,
    "app.update.enabled": False,
    "app.update.auto": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "extensions.update.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
}


def find_firefox() -> str | None:
    """Return the Firefox executable (``$FIREFOX`` wins over ``PATH``), or ``None``."""
    configured = os.environ.get("FIREFOX")
    if configured:
        return shutil.which(configured)
    for name in ("firefox-esr", "firefox"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _pref(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace('"', '\\"') + '"'


class Firefox(Chromium):
    """A headless Firefox process showing one URL (the same interface as :class:`Chromium`)."""

    name = "firefox"

    def find_executable(self) -> str | None:
        """The Firefox binary (``$FIREFOX`` wins over ``PATH``)."""
        return find_firefox()

    def arguments(self, profile: Path) -> list[str]:
        """``--headless --no-remote --profile <profile>`` with the test preferences written."""
        lines = [f'user_pref("{key}", {_pref(value)});' for key, value in PREFERENCES.items()]
        (profile / "user.js").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return ["--headless", "--no-remote", "--profile", str(profile), *self._extra_args, self.url]
