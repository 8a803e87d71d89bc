"""ModelAlias, UserPreference, Conversation, Message (the LLM room)."""

from __future__ import annotations

__all__: list[str] = []
