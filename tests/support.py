"""Helpers shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (``examples/``, ``envoy/``)."""
