"""A pytest plugin for collection runs: prints the interop matrix cells each test covers.

Loaded by ``test_interop_matrix.py`` in a ``pytest --collect-only`` child: one line
``COVERS <feature> <peer> <node id>`` per peer named by a test's ``covers`` marks.
"""

from __future__ import annotations

import sys

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    for item in session.items:
        for mark in item.iter_markers("covers"):
            feature, *peers = mark.args
            for peer in peers:
                sys.stdout.write(f"COVERS {feature} {peer} {item.nodeid}\n")
