"""ClusterEvent and Incident (the watch loop's room)."""

from __future__ import annotations

__all__: list[str] = []
