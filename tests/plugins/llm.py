"""Shared test fixtures: llm (loaded by tests/conftest.py)."""

from __future__ import annotations
