"""The sans-I/O core imports nothing that does I/O, reads the clock or draws random numbers.

The test walks the syntax tree of every module under ``src/pywebtransport/protocol/`` rather than
importing it, so a forbidden import fails here even on a line that never runs (``if
TYPE_CHECKING``, inside a function, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "src" / "pywebtransport" / "protocol"

#: Top-level modules the sans-I/O core must not import.
FORBIDDEN = frozenset({"asyncio", "socket", "time", "random", "selectors", "threading", "ssl"})

#: Calls that import a module named by a string.
_DYNAMIC_IMPORTERS = frozenset({"__import__", "import_module"})


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """Return ``"line: module"`` for each forbidden import in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        for module in _imported_modules(node):
            if module.split(".")[0] in FORBIDDEN:
                found.append(f"{getattr(node, 'lineno', '?')}: {module}")
    return found


def _imported_modules(node: ast.AST) -> list[str]:
    """Return the absolute module names ``node`` imports (none for relative imports)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module] if node.level == 0 and node.module else []
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        first = node.args[0]
        if name in _DYNAMIC_IMPORTERS and isinstance(first, ast.Constant):
            return [str(first.value)]
    return []


def protocol_modules() -> list[Path]:
    return sorted(PROTOCOL_DIR.rglob("*.py"))


def test_protocol_package_has_modules() -> None:
    modules = [path for path in protocol_modules() if path.name != "__init__.py"]
    assert modules, f"no modules besides __init__.py under {PROTOCOL_DIR}"


def test_protocol_modules_import_no_io_clock_or_randomness() -> None:
    offenders = {
        str(path.relative_to(PROTOCOL_DIR)): found
        for path in protocol_modules()
        if (found := forbidden_imports(path.read_text(encoding="utf-8"), str(path)))
    }
    assert offenders == {}, f"the sans-I/O core imports forbidden modules: {offenders}"


# The checker itself: it must catch every spelling, or the test above could pass on anything.


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import socket as s",
        "import os, time",
        "import asyncio.events",
        "from random import randint",
        "from selectors import DefaultSelector",
        "from threading import Lock as L",
        "from ssl import SSLContext",
        "from asyncio.events import AbstractEventLoop",
        "def f():\n    import time\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio\n",
        "try:\n    import ssl\nexcept ImportError:\n    pass\n",
        "m = __import__('time')",
        "import importlib\nm = importlib.import_module('socket')",
    ],
)
def test_checker_finds_forbidden_imports(source: str) -> None:
    assert forbidden_imports(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "from dataclasses import dataclass",
        "from . import time",
        "from .time import now",
        "from .random import choice",
        "import timeit",
        "import sslkeylog",
        "from aioquic.quic.connection import QuicConnection",
        "x = 'import asyncio'",
    ],
)
def test_checker_allows_other_imports(source: str) -> None:
    assert forbidden_imports(source) == []


def test_checker_reports_line_and_module() -> None:
    assert forbidden_imports("import os\nfrom time import monotonic\n") == ["2: time"]


#: The modules that may import a QUIC engine's package, and which one.
ENGINE_MODULES = {"engine_aioquic.py": "aioquic", "engine_qh3.py": "qh3", "packets.py": "aioquic"}
ENGINES = frozenset({"aioquic", "qh3"})


def test_only_the_engine_modules_import_an_engine() -> None:
    """The seam and the core are engine-neutral; each engine's access stays in its module."""
    offenders = {}
    for path in protocol_modules():
        allowed = ENGINE_MODULES.get(path.name)
        tree = ast.parse(path.read_text(), filename=str(path))
        engines = {
            module.split(".")[0]
            for node in ast.walk(tree)
            for module in _imported_modules(node)
            if module.split(".")[0] in ENGINES
        }
        if engines - {allowed}:
            offenders[path.name] = sorted(engines)
    assert offenders == {}
