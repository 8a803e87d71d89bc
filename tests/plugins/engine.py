"""Shared test fixtures: engine (loaded by tests/conftest.py).

- `seed_playbooks` (function, needs db): the built-in playbooks and rules of migration 0003,
  seeded again (transactional tests truncate what the migration wrote).
- `no_playbooks` (function, needs db): every rule disabled, for tests of other rooms that open
  incidents and do not want the engine to start runs on them.
- `make_incident(**fields)` (function, needs db): an open `Incident` with sensible defaults.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def seed_playbooks(db) -> None:  # type: ignore[no-untyped-def]
    from playbooks.models import Playbook, Rule, Step

    seed = importlib.import_module("playbooks.migrations.0003_seed_playbooks")
    seed.seed_defaults(Playbook, Step, Rule)


@pytest.fixture
def no_playbooks(db) -> None:  # type: ignore[no-untyped-def]
    from playbooks.models import Rule

    Rule.objects.update(enabled=False)


@pytest.fixture
def make_incident(db) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    from django.utils import timezone

    from playbooks.models import Incident

    def make(**fields: Any) -> Incident:
        now = timezone.now()
        defaults: dict[str, Any] = {
            "workload_kind": "Deployment",
            "namespace": "shop",
            "workload_name": "web",
            "primary_type": "crash_loop",
            "finding_types": ["crash_loop"],
            "severity": "critical",
            "affected_pods": ["web-5d9c7-abcde"],
            "evidence": {"crash_loop": {"container": "app", "restart_count": 7}},
            "title": "web crash-looping",
            "opened_at": now,
            "last_seen_at": now,
        }
        defaults.update(fields)
        return Incident.objects.create(**defaults)

    return make
