"""Small web helpers: the HTTP page server and the browser demo page."""

from __future__ import annotations

from importlib import resources

from pywebtransport.web.page_server import GetBody, PageServer, PostCallback

__all__ = ["GetBody", "PageServer", "PostCallback", "demo_page"]


def demo_page() -> bytes:
    """Return the HTML of the browser demo page shipped with the package."""
    return resources.files(__package__).joinpath("demo.html").read_bytes()
