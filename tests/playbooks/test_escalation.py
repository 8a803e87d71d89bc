"""Memory and escalation end to end: a crash loop that a restart clears only for a while comes
back twice, and the third time the agent hands off with its history instead of restarting again;
the outcome figures show it. Sandbox, real worker, MCP server."""

from __future__ import annotations

from typing import Any

import pytest

from agents.services import decide_approval
from playbooks.models import Incident, PlaybookRun, Rule, Step
from playbooks.services.poll import poll
from tests.conftest import wait_for
from tests.playbooks.test_engine import _drive, _no_enqueue

pytestmark = [pytest.mark.integration]


def _cycle(engine: Any) -> PlaybookRun:
    """Inject the fault, let the poll open an incident, approve what its run asks, wait for the end."""
    engine.sandbox.fault("crash_loop", "shop/cart", pods=1)  # one pod; a restart clears it (for a while)
    engine.sandbox.tick(2)

    def run_opened() -> PlaybookRun | None:
        poll(engine.cluster)
        return PlaybookRun.objects.filter(incident__workload_name="cart", incident__state="open").first()

    run = wait_for(run_opened, timeout=60, interval=0.5, message="an incident with a run")

    def finished() -> bool:
        run.refresh_from_db()
        waiting = run.steps.filter(state="waiting_approval").select_related("approval").first()
        if waiting is not None:
            decide_approval(waiting.approval.pk, engine.approvers.alice, "approve", "try it")
        return run.state == "finished"

    wait_for(finished, timeout=120, interval=0.3, message="the run to finish")
    return run


def test_the_third_time_a_restart_does_not_fix_a_crash_loop_it_is_handed_off_with_the_history(engine, client) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    def escalations() -> float:
        return REGISTRY.get_sample_value("aiops_playbook_escalations_total", {"rule": "crash_loop"}) or 0.0

    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    Rule.objects.filter(name="crash_loop").update(cooldown_seconds=0)  # the history, not a cooldown, must stop it
    Step.objects.filter(playbook__name="crash_loop_remediation", kind="verify").update(args={"checks": 20, "interval": 1})
    for target in ("payments/ledger", "data/report-builder", "node-4"):
        engine.sandbox.clear(target)
    before = escalations()

    first = _cycle(engine)
    assert first.outcome == "resolved", first.summary
    assert first.steps.get(name="restart pod").state == "succeeded"
    second = _cycle(engine)  # it came back: the same restart, resolved again
    assert second.outcome == "resolved", second.summary
    # The RCA cites what fixed this workload last time.
    assert f"run #{first.pk} of crash_loop_remediation) this workload was resolved after the agent restarted a pod" in (
        Incident.objects.get(pk=second.incident_id).rca_report["last_fix"])

    # And again: no third restart. This run is driven in this process (as the worker would), so
    # the escalation counter is read where it moved.
    engine.sandbox.fault("crash_loop", "shop/cart", pods=1)
    engine.sandbox.tick(2)
    with _no_enqueue():
        poll(engine.cluster)
        third = _drive(PlaybookRun.objects.get(incident__workload_name="cart", incident__state="open"))
    assert third.outcome == "handed_off", third.summary
    restart = third.steps.get(name="restart pod")
    assert restart.state == "skipped" and restart.approval is None
    history = (f"restarted a pod 2 times since {first.created_at:%H:%M} UTC (runs #{first.pk}, #{second.pk}); "
               "each time the crash loop came back within ~")
    assert history in third.summary and third.summary.startswith("Handing Deployment shop/cart to a person")
    assert escalations() == before + 1
    incident = Incident.objects.get(pk=third.incident_id)
    assert incident.no_run_reason["code"] == "escalated" and history in incident.no_run_reason["text"]

    # The figures, per workload and per rule, on the incident page and in the admin.
    client.force_login(engine.approvers.alice)
    page = client.get(f"/console/incidents/{incident.pk}").content.decode()
    figures = "3 runs, 2 resolved, 1 handed off, median "
    assert f"This workload: {figures}" in page and f"Rule crash_loop: {figures}" in page
    assert "restarted a pod 2 times since" in page
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)
    admin_page = client.get(f"/admin/playbooks/rule/{third.rule_id}/change/").content.decode()
    assert figures in admin_page
