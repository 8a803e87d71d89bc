"""Shared test fixtures: engine (loaded by tests/conftest.py)."""

from __future__ import annotations
