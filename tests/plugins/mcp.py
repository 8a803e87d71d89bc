"""Shared test fixtures: mcp (loaded by tests/conftest.py)."""

from __future__ import annotations
