"""Shared test fixtures: incidents (loaded by tests/conftest.py)."""

from __future__ import annotations
