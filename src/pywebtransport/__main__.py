"""Entry point for ``python -m pywebtransport``."""

from __future__ import annotations

from pywebtransport.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
