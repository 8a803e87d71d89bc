"""Receivers of the engine: a new incident starts its rule's playbook; a decided approval
resumes or ends the run that waits on it. Both run inside the sender's transaction, so the
run and the event that caused it commit together (tasks are enqueued on commit)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from agents.signals import approval_decided
from playbooks.signals import incident_opened


@receiver(incident_opened, dispatch_uid="playbooks.engine.start_run")
def start_playbook(sender: Any, incident: Any, **kwargs: Any) -> None:
    from playbooks.engine import start_run_for_incident

    start_run_for_incident(incident)


@receiver(approval_decided, dispatch_uid="playbooks.engine.approval_decided")
def resume_or_end_run(sender: Any, approval: Any, **kwargs: Any) -> None:
    from playbooks.engine import on_approval_decided

    on_approval_decided(approval)
