"""Shared test fixtures: chat (loaded by tests/conftest.py)."""

from __future__ import annotations
