"""Celery time limits for tasks that do LLM work, outside `agents.llm` (whose package imports the
`openai` SDK: ~500 modules a process that only enqueues such a task, the watcher, need not load)."""

from __future__ import annotations


def task_limits(budget_s: float) -> dict[str, int]:
    """Celery soft/hard limits for a task whose LLM work has this budget: a little above it, so
    the work ends by its own deadline (with a clean message or a fallback), not by a kill."""
    soft = int(budget_s) + 30
    return {"soft_time_limit": soft, "time_limit": soft + 30}
