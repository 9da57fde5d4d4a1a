"""Small web helpers: the HTTP page server, the browser demo page and the messaging module.

The submodules :mod:`.demo_chat`, :mod:`.demo_room` and :mod:`.demo_live` are the chat, topics
and live statistics demos that ``pywebtransport serve`` runs.
"""

from __future__ import annotations

from importlib import resources

from pywebtransport.web.page_server import GetBody, PageServer, PostCallback

__all__ = ["GetBody", "PageServer", "PostCallback", "demo_page", "messaging_module"]


def demo_page() -> bytes:
    """Return the HTML of the browser demo page shipped with the package."""
    return resources.files(__package__).joinpath("demo.html").read_bytes()


def messaging_module() -> bytes:
    """Return the browser module ``messaging.js`` (the message protocol over ``WebTransport``).

    Serve it with content type ``text/javascript``; pages import it as an ES module.
    """
    return resources.files(__package__).joinpath("messaging.js").read_bytes()
