"""The complete examples of the reference pages run, and print what their comments say.

A block counts as a complete example when it ends with ``asyncio.run(main())``. Each runs as a
program in a temporary directory; every ``print(...)  # expected`` line's comment must match the
line the program printed, in order.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["getting-started.md", "messaging.md", "pubsub.md", "session.md"]
RUN_TIMEOUT = 60.0


def examples() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)
        for index, block in enumerate(blocks):
            if block.rstrip().endswith("asyncio.run(main())"):
                found.append((page, index, block))
    return found


def expected_output(block: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"print\(.*\)\s+# (.*)$", block, re.M)]


@pytest.mark.parametrize(
    ("page", "index", "block"), examples(), ids=lambda v: str(v) if len(str(v)) < 20 else ""
)
def test_example_runs(page: str, index: int, block: str, tmp_path: Path) -> None:
    program = tmp_path / "example.py"
    program.write_text(block)
    done = subprocess.run(
        [sys.executable, str(program)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{page} example {index} failed:\n{done.stderr[-3000:]}"
    assert done.stdout.splitlines() == expected_output(block), done.stdout


def test_the_pages_have_examples() -> None:
    assert {page for page, _, _ in examples()} == set(PAGES)
