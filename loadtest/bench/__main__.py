"""``python -m loadtest.bench`` (what ``scripts/bench`` runs)."""

from __future__ import annotations

import sys

from loadtest.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
