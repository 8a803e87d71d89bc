"""Shared test fixtures: sandbox (loaded by tests/conftest.py)."""

from __future__ import annotations
