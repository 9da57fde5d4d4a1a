"""The layers stay sealed: imports only go down, and no package reaches into another's privates.

The layers, bottom up: the sans-I/O core (``protocol/``), the asyncio layer (the modules at the
package root), the client and the server, the message layer, pub/sub, and the programs on top
(the CLI, the demo's web pieces, the package root's re-exports). Like the no-I/O test, these
tests read the syntax tree of every module instead of importing it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pywebtransport"

#: The layer of each unit (a subpackage, or ``""`` for the modules at the package root).
RANKS = {
    "protocol": 0,
    "": 1,
    "client": 2,
    "server": 2,
    "messaging": 3,
    "pubsub": 4,
    "web": 5,
}
#: Modules at the package root that sit on top of everything (they import the layers below).
TOP_MODULES = {"__init__", "__main__", "cli"}
TOP = max(RANKS.values()) + 1


def modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def unit_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else ""


def rank_of(path: Path, root: Path) -> int:
    if unit_of(path, root) == "" and path.stem in TOP_MODULES:
        return TOP
    return RANKS[unit_of(path, root)]


def imported_units(path: Path, root: Path) -> list[tuple[int, str, int]]:
    """(line, unit, rank) of every module of the package that ``path`` imports."""
    found = []
    package = path.relative_to(root).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = list(package[: len(package) - (node.level - 1)])
            target = base + (node.module.split(".") if node.module else [])
        elif node.module and node.module.split(".")[0] == "pywebtransport":
            target = node.module.split(".")[1:]
        else:
            continue
        names = [alias.name for alias in node.names] if not target else []
        for first in [target[0]] if target else names:
            if (root / first).is_dir():
                found.append((node.lineno, first, RANKS[first]))
            elif first in TOP_MODULES:
                found.append((node.lineno, "", TOP))
            elif (root / f"{first}.py").exists():
                found.append((node.lineno, "", RANKS[""]))
    return found


def upward_imports(root: Path) -> list[str]:
    """Imports of a higher layer, or of another unit of the same layer (client / server)."""
    upward = []
    for path in modules(root):
        own_unit, own_rank = unit_of(path, root), rank_of(path, root)
        for line, unit, rank in imported_units(path, root):
            if rank > own_rank or (rank == own_rank and unit != own_unit):
                upward.append(f"{path.relative_to(root)}:{line} imports {unit or 'the root'}")
    return upward


def private_names_by_unit(root: Path) -> dict[str, set[str]]:
    """Every ``_name`` (not dunder) each unit defines: functions, classes, attributes set."""
    names: dict[str, set[str]] = defaultdict(set)
    for path in modules(root):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            else:
                continue
            if name.startswith("_") and not name.startswith("__"):
                names[unit_of(path, root)].add(name)
    return names


def foreign_privates(root: Path) -> list[str]:
    """``obj._name`` where ``_name`` belongs to another unit (self, cls, super() aside).

    Lines marked ``# aioquic internals`` / ``# qh3 internals`` are the engine modules' reads
    of their engine's own privates, which the engine canaries cover.
    """
    defined = private_names_by_unit(root)
    offenders = []
    for path in modules(root):
        unit = unit_of(path, root)
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") or "internals" in lines[node.lineno - 1]:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
                continue
            owners = {u for u, names in defined.items() if node.attr in names}
            if owners and unit not in owners:
                offenders.append(f"{path.relative_to(root)}:{node.lineno} {ast.unparse(node)}")
    return offenders


def engine_reaches(root: Path) -> list[str]:
    """Above ``protocol/``, the QUIC engine is reached through the core's own methods."""
    offenders = []
    for path in modules(root):
        if unit_of(path, root) == "protocol":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "engine":
                owner = node.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if name == "protocol":
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    return offenders


def test_imports_only_go_down() -> None:
    assert upward_imports(PACKAGE) == []


def test_no_package_reaches_into_another_packages_privates() -> None:
    assert foreign_privates(PACKAGE) == []


def test_only_the_core_talks_to_the_quic_engine() -> None:
    assert engine_reaches(PACKAGE) == []


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """A small package that breaks each rule once is caught by each check."""
    for folder in ("protocol", "server"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "session.py").write_text(
        "class Session:\n    def __init__(self):\n        self._closed = None\n", encoding="utf-8"
    )
    (tmp_path / "protocol" / "core.py").write_text(
        "from ..server import Server\n", encoding="utf-8"
    )
    (tmp_path / "server" / "server.py").write_text(
        "def stop(session, conn):\n"
        "    session._closed.cancel()\n"
        "    conn.protocol.engine.send_ping()\n",
        encoding="utf-8",
    )
    assert upward_imports(tmp_path) == ["protocol/core.py:1 imports server"]
    assert foreign_privates(tmp_path) == ["server/server.py:2 session._closed"]
    assert engine_reaches(tmp_path) == ["server/server.py:3"]
