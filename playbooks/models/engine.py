"""Rule, Playbook, Step, PlaybookRun, StepRun (the engine's room)."""

from __future__ import annotations

__all__: list[str] = []
