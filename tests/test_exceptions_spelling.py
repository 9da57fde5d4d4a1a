"""One spelling for each timeout and connection exception, above the sans-I/O core.

``pywebtransport.exceptions`` defines ``TimeoutError`` and ``ConnectionError``, subclasses of the
builtins of the same names. Imported by name, they would shadow the builtins, and a bare
``TimeoutError`` would mean one class in one module and the other class in the next. So in
every module outside ``protocol/``, a bare ``TimeoutError`` or ``ConnectionError`` is the
builtin, and the library's classes are reached through the module
(``from . import exceptions as errors``, then ``errors.TimeoutError``). The builtins are
spelled bare, not ``builtins.TimeoutError`` or ``asyncio.TimeoutError``. Like the layer tests,
these tests read the syntax tree of every module instead of importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pywebtransport"

#: The names defined twice, once as builtins and once by ``pywebtransport.exceptions``.
AMBIGUOUS = {"TimeoutError", "ConnectionError"}
#: Modules other than ``builtins`` that hand out a builtin under another spelling.
BUILTIN_ALIASES = {"builtins", "asyncio"}
#: Modules exempt from the rule: the one that defines the classes (on top of the builtins), and
#: the package root, which re-exports them as ``pywebtransport.TimeoutError`` and
#: ``pywebtransport.ConnectionError``.
EXEMPT = {Path("exceptions.py"), Path("__init__.py")}


def checked_modules(root: Path) -> list[Path]:
    """Every module under ``root`` except those of ``protocol/`` and the exempt ones."""
    return [
        path
        for path in sorted(root.rglob("*.py"))
        if path.relative_to(root).parts[0] != "protocol" and path.relative_to(root) not in EXEMPT
    ]


def imported_from(node: ast.ImportFrom, path: Path, root: Path) -> list[str]:
    """The module ``node`` imports from, as parts below the package (``[]`` for the root).

    ``["builtins"]`` for ``from builtins import ...``, ``["<other>"]`` for any other module
    outside the package.
    """
    if node.level:
        package = list(path.relative_to(root).parts[:-1])
        base = package[: len(package) - (node.level - 1)]
        return base + (node.module.split(".") if node.module else [])
    parts = (node.module or "").split(".")
    if parts[0] == "pywebtransport":
        return parts[1:]
    if parts == ["builtins"]:
        return parts
    return ["<other>"]


def offences(root: Path) -> list[str]:
    """``path:line`` and what is wrong, for every other spelling of the two exceptions."""
    found: list[tuple[str, int, str]] = []
    for path in checked_modules(root):
        where = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                source = imported_from(node, path, root)
                if source not in (["exceptions"], [], ["builtins"]):
                    continue
                for alias in node.names:
                    if alias.name in AMBIGUOUS:
                        origin = ".".join(["pywebtransport", *source]) if source else "the root"
                        if source == ["builtins"]:
                            origin = "builtins"
                        found.append((where, node.lineno, f"imports {alias.name} from {origin}"))
            elif (
                isinstance(node, ast.Attribute)
                and node.attr in AMBIGUOUS
                and isinstance(node.value, ast.Name)
                and node.value.id in BUILTIN_ALIASES
            ):
                found.append((where, node.lineno, f"spells {node.value.id}.{node.attr}"))
    return [f"{where}:{line} {what}" for where, line, what in sorted(found)]


def test_timeout_and_connection_errors_have_one_spelling() -> None:
    assert offences(PACKAGE) == []


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    """A small package that spells the two classes every other way is caught at each place."""
    for folder in ("client", "protocol"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "__init__.py").write_text(
        "from .exceptions import ConnectionError, TimeoutError\n", encoding="utf-8"
    )
    (tmp_path / "exceptions.py").write_text(
        "import builtins\n\nclass TimeoutError(builtins.TimeoutError):\n    pass\n",
        encoding="utf-8",
    )
    (tmp_path / "session.py").write_text(
        "import asyncio\n"
        "import builtins\n"
        "from .exceptions import SessionError, TimeoutError\n"
        "try:\n"
        "    pass\n"
        "except builtins.TimeoutError:\n"
        "    raise TimeoutError()\n"
        "except asyncio.TimeoutError:\n"
        "    pass\n",
        encoding="utf-8",
    )
    (tmp_path / "client" / "client.py").write_text(
        "from .. import TimeoutError as Late\n"
        "from ..exceptions import ConnectionError as Refused\n"
        "from pywebtransport.exceptions import TimeoutError\n"
        "from builtins import ConnectionError\n",
        encoding="utf-8",
    )
    (tmp_path / "client" / "pooled.py").write_text(
        "from .. import exceptions as errors\n"
        "from ..exceptions import ClientError\n"
        "try:\n"
        "    pass\n"
        "except TimeoutError:\n"
        "    raise errors.TimeoutError() from None\n",
        encoding="utf-8",
    )
    (tmp_path / "protocol" / "core.py").write_text(
        "import builtins\nfrom ..exceptions import TimeoutError\nbuiltins.ConnectionError\n",
        encoding="utf-8",
    )
    assert offences(tmp_path) == [
        "client/client.py:1 imports TimeoutError from the root",
        "client/client.py:2 imports ConnectionError from pywebtransport.exceptions",
        "client/client.py:3 imports TimeoutError from pywebtransport.exceptions",
        "client/client.py:4 imports ConnectionError from builtins",
        "session.py:3 imports TimeoutError from pywebtransport.exceptions",
        "session.py:6 spells builtins.TimeoutError",
        "session.py:8 spells asyncio.TimeoutError",
    ]
