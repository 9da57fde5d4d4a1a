"""The interop matrix of docs/interop.md says what the interop tests show, cell by cell.

Each interop test names the cells it keeps true with ``@pytest.mark.covers(feature, *peers)``.
A collection run of ``tests/interop`` (with ``matrix_plugin``) lists those marks; then every cell
that reads "yes" or "differs" must have a test, and every test's cells must read "yes" or
"differs". A cell reading "n/a" or "untested" must have none (it would then be out of date).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "interop.md"
HEADING = "## The interop matrix"
COLLECT_TIMEOUT = 120.0
KINDS = ("yes", "differs", "n/a", "untested")


def read_matrix() -> dict[tuple[str, str], str]:
    """Return ``{(feature, peer): kind}`` from the matrix table (features in backticks)."""
    text = PAGE.read_text()
    assert HEADING in text, f"{PAGE.name} has no '{HEADING}' section"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip().strip("`") for cell in rows[0].strip("|").split("|")]
    peers = header[1:]
    cells: dict[tuple[str, str], str] = {}
    for line in rows[2:]:  # after the header and its rule
        values = [cell.strip() for cell in line.strip("|").split("|")]
        feature = re.fullmatch(r"`([a-z0-9-]+)`.*", values[0])
        assert feature, f"a matrix row does not start with a `feature`: {line}"
        assert len(values) == len(header), f"row {feature.group(1)} has {len(values)} cells"
        for peer, value in zip(peers, values[1:], strict=True):
            kind = re.match(r"(yes|differs|n/a|untested)\b", value)
            assert kind, f"cell ({feature.group(1)}, {peer}) reads {value!r}, not one of {KINDS}"
            cells[(feature.group(1), peer)] = kind.group(1)
    return cells


def collected_covers() -> dict[tuple[str, str], list[str]]:
    """Return ``{(feature, peer): [node ids]}`` from a collection run of the interop tests."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "tests.docs.matrix_plugin",
            "tests/interop",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COLLECT_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    covers: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in completed.stdout.splitlines():
        if line.startswith("COVERS "):
            _, feature, peer, node = line.split(" ", 3)
            covers[(feature, peer)].append(node)
    return covers


def test_every_matrix_cell_matches_the_tests() -> None:
    cells = read_matrix()
    covers = collected_covers()
    assert covers, "no interop test carries a covers mark"
    unknown = sorted(key for key in covers if key not in cells)
    assert not unknown, f"tests cover cells the matrix does not have: {unknown}"
    claimed = sorted(
        k for k, kind in cells.items() if kind in ("yes", "differs") and k not in covers
    )
    assert not claimed, f"cells read yes/differs but no test covers them: {claimed}"
    stale = sorted(k for k, kind in cells.items() if kind in ("n/a", "untested") and k in covers)
    assert not stale, f"cells read n/a/untested but tests cover them: {stale}"
