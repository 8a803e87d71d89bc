"""The engine end to end: sandbox faults -> poll -> incident -> rule -> run -> LOW steps ->
approval -> action on the sandbox -> verify. Real PostgreSQL, Redis, worker, MCP server."""

from __future__ import annotations

from typing import Any

import pytest

from agents.models import Approval, AuditEntry
from agents.services import decide_approval, expire_due
from playbooks.models import Incident, PlaybookRun, Rule, StepRun
from playbooks.services.poll import poll
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration]


def _run(workload: str) -> PlaybookRun:
    return PlaybookRun.objects.select_related("incident").get(incident__workload_name=workload)


def _waiting(run: PlaybookRun) -> StepRun | None:
    return StepRun.objects.filter(run=run, state="waiting_approval").select_related("approval").first()


def _approve_until_finished(engine: Any, runs: list[PlaybookRun], timeout: float = 120) -> dict[str, list[str]]:
    """Approve every approval the runs ask for (alice), until all of them finish."""
    approved: dict[str, list[str]] = {run.playbook_name: [] for run in runs}

    def step() -> bool:
        pending = False
        for run in runs:
            run.refresh_from_db()
            if run.state == "finished":
                continue
            pending = True
            waiting = _waiting(run)
            if waiting is not None:
                decide_approval(waiting.approval.pk, engine.approvers.alice, "approve", "looks right")
                approved[run.playbook_name].append(waiting.tool)
        return not pending

    try:
        wait_for(step, timeout=timeout, interval=0.2, message="every run to finish")
    except BaseException:
        errors = [line[:800] for line in engine.worker.log().splitlines() if '"level":"error"' in line]
        print(_describe(runs), *errors[-5:], sep="\n")
        raise
    return approved


def _describe(runs: list[PlaybookRun]) -> str:
    lines = []
    for run in runs:
        run.refresh_from_db()
        lines.append(f"run {run.pk} {run.playbook_name} {run.state} {run.outcome} {run.summary[:300]}")
        for s in run.steps.order_by("order"):
            lines.append(f"   {s.order} {s.name} {s.state} risk={s.risk} att={s.attempts} err={s.error[:300]!r} out={s.output[:200]!r}")
    return "\n".join(lines)


def _pods(engine: Any, namespace: str, prefix: str) -> list[dict[str, Any]]:
    from kubernetes import client

    api = client.CoreV1Api(engine.sandbox.api_client())
    pods = api.list_namespaced_pod(namespace).to_dict()["items"]
    return [p for p in pods if p["metadata"]["name"].startswith(prefix + "-")]


def test_it_remediates_the_demo_faults_end_to_end(engine) -> None:  # type: ignore[no-untyped-def]
    from kubernetes import client

    ledger_before = {p["metadata"]["name"] for p in _pods(engine, "payments", "ledger")}
    assert poll(engine.cluster).outcome == "ok"
    crash, oom, node = _run("ledger"), _run("report-builder"), _run("node-4")
    assert (crash.playbook_name, oom.playbook_name, node.playbook_name) == (
        "crash_loop_remediation", "oom_kill_remediation", "node_not_ready_remediation")

    approved = _approve_until_finished(engine, [crash, oom, node])
    # ledger's log shows its database refusing connections: a restart would not fix that, so the
    # run hands off with the diagnosis and asks for no approval at all.
    assert approved == {
        "crash_loop_remediation": [],
        "oom_kill_remediation": ["patch_memory_limit"],
        "node_not_ready_remediation": ["cordon_node", "drain_node"],
    }
    for run in (crash, oom, node):
        run.refresh_from_db()
    assert (crash.outcome, oom.outcome, node.outcome) == ("handed_off", "resolved", "mitigated"), _describe(
        [crash, oom, node])

    # LOW steps ran at once, each through call_tool (audited); the actions ran once each.
    steps = {s.name: s for s in crash.steps.all()}
    assert steps["describe pod"].state == "succeeded" and steps["describe pod"].risk == "LOW"
    assert steps["describe pod"].approval is None and steps["describe pod"].audit.outcome == "ok"
    assert steps["root cause"].state == "succeeded"
    assert steps["hand off"].state == "succeeded"
    assert "Not restarting Deployment payments/ledger" in crash.summary
    assert "dependency_failure" in crash.summary and "What to check: Check the dependency" in crash.summary
    assert steps["restart workload"].state == steps["restart pod"].state == steps["verify"].state == "cancelled"
    assert not Approval.objects.filter(step_runs__run=crash).exists()
    assert not AuditEntry.objects.filter(action="tool_call", tool__in=["restart_pod", "restart_workload"]).exists()
    assert AuditEntry.objects.filter(action="tool_call", tool="patch_memory_limit", outcome="ok").count() == 1

    # The incidents: resolved by verify; the ledger's and the node's stay open (they need a person).
    assert Incident.objects.get(pk=crash.incident_id).state == "open"
    assert Incident.objects.get(pk=crash.incident_id).rca_report["failure_class"] == "dependency_failure"
    assert Incident.objects.get(pk=oom.incident_id).state == "resolved"
    assert Incident.objects.get(pk=node.incident_id).state == "open"

    # What the sandbox shows: ledger untouched, a raised memory limit, node-4 cordoned and empty.
    assert {p["metadata"]["name"] for p in _pods(engine, "payments", "ledger")} == ledger_before
    apps = client.AppsV1Api(engine.sandbox.api_client())
    builder = apps.read_namespaced_deployment("report-builder", "data").to_dict()
    assert builder["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"
    assert oom.steps.get(name="raise memory limit").rendered_args == {
        "namespace": "data", "kind": "Deployment", "name": "report-builder", "container": "report-builder",
        "memory": "512Mi"}
    core = client.CoreV1Api(engine.sandbox.api_client())
    assert core.read_node("node-4").spec.unschedulable is True
    left = [p for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-4").items
            if not any(ref.kind == "DaemonSet" for ref in p.metadata.owner_references or [])]
    assert left == []


def test_an_all_pods_crash_loop_is_resolved_with_one_approval_of_a_workload_restart(engine) -> None:  # type: ignore[no-untyped-def]
    from kubernetes import client

    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    before = {p["metadata"]["name"] for p in _pods(engine, "shop", "cart")}
    assert len(before) == 2
    engine.sandbox.fault("crash_loop", "shop/cart")  # every pod of it; its log shows a Go panic
    engine.sandbox.tick(2)
    poll(engine.cluster)
    run = _run("cart")
    approved = _approve_until_finished(engine, [run])
    run.refresh_from_db()
    assert approved == {"crash_loop_remediation": ["restart_workload"]}, _describe([run])
    assert run.outcome == "resolved", _describe([run])
    steps = {s.name: s for s in run.steps.all()}
    assert steps["root cause"].data["failure_class"] == "app_crash"
    assert steps["hand off"].state == "skipped" and "is false" in steps["hand off"].output
    assert steps["restart pod"].state == "skipped"
    assert "pod_count = 2" in steps["restart pod"].output and 'kind = "Deployment"' in steps["restart pod"].output
    restart = steps["restart workload"]
    assert restart.state == "succeeded" and restart.approval.state == "approved"
    assert restart.rendered_args["kind"] == "Deployment" and restart.rendered_args["name"] == "cart"
    assert restart.rendered_args["restarted_at"] == run.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert AuditEntry.objects.filter(action="tool_call", tool="restart_workload", outcome="ok").count() == 1
    assert Incident.objects.get(pk=run.incident_id).state == "resolved"
    template = client.AppsV1Api(engine.sandbox.api_client()).read_namespaced_deployment("cart", "shop").spec.template
    assert template.metadata.annotations["kubectl.kubernetes.io/restartedAt"] == restart.rendered_args["restarted_at"]
    assert not before & {p["metadata"]["name"] for p in _pods(engine, "shop", "cart")}  # every pod replaced


def test_a_bad_rollout_is_rolled_back_and_a_maxed_hpa_raised(engine) -> None:  # type: ignore[no-untyped-def]
    from kubernetes import client

    Rule.objects.exclude(name__in=["bad_rollout", "hpa_maxed"]).update(enabled=False)
    apps = client.AppsV1Api(engine.sandbox.api_client())
    good_image = apps.read_namespaced_deployment("frontend", "shop").spec.template.spec.containers[0].image
    engine.sandbox.fault("replication_failure", "shop/frontend")
    engine.sandbox.fault("hpa_maxed", "shop/cart")
    engine.sandbox.tick()
    poll(engine.cluster)
    rollout, hpa = _run("frontend"), _run("cart")
    # The rollback rule outranks the crash-loop one on a bad rollout.
    assert (rollout.playbook_name, hpa.playbook_name) == ("deployment_rollback", "scale_up_on_load")
    approved = _approve_until_finished(engine, [rollout, hpa])
    assert approved == {"deployment_rollback": ["rollback_deployment"], "scale_up_on_load": ["set_hpa_max_replicas"]}
    rollout.refresh_from_db()
    hpa.refresh_from_db()
    assert (rollout.outcome, hpa.outcome) == ("resolved", "resolved"), _describe([rollout, hpa])
    assert apps.read_namespaced_deployment("frontend", "shop").spec.template.spec.containers[0].image == good_image
    scaler = client.AutoscalingV2Api(engine.sandbox.api_client()).read_namespaced_horizontal_pod_autoscaler("cart", "shop")
    assert scaler.spec.max_replicas == 12  # doubled from 6, within AIOPS_MAX_HPA_REPLICAS
    assert hpa.steps.get(name="raise max replicas").rendered_args == {"namespace": "shop", "name": "cart", "max_replicas": 12}


def test_a_crash_loop_on_a_deployment_rolled_out_days_ago_is_not_rolled_back(engine) -> None:  # type: ignore[no-untyped-def]
    from kubernetes import client

    # checkout has revisions 1-3, the newest 3 days old; every pod of it now crash-loops, so
    # nothing is available (replication_failure) yet the rollout is not the cause: its database
    # refuses connections, which neither a rollback nor a restart fixes.
    apps = client.AppsV1Api(engine.sandbox.api_client())
    image = apps.read_namespaced_deployment("checkout", "shop").spec.template.spec.containers[0].image
    engine.sandbox.fault("crash_loop", "shop/checkout")
    engine.sandbox.tick(3)
    assert poll(engine.cluster).outcome == "ok"
    run = _run("checkout")
    incident = Incident.objects.get(pk=run.incident_id)
    assert {"crash_loop", "replication_failure"} <= set(incident.finding_types)
    assert incident.evidence["replication_failure"]["bad_rollout"] is False
    assert run.playbook_name == "crash_loop_remediation"
    wait_for(lambda: PlaybookRun.objects.get(pk=run.pk).state == "finished", timeout=90, message="the run to end")
    run.refresh_from_db()
    assert run.outcome == "handed_off", _describe([run])
    assert not StepRun.objects.filter(tool="rollback_deployment").exists()
    assert not Approval.objects.filter(step_runs__run=run).exists()
    assert apps.read_namespaced_deployment("checkout", "shop").spec.template.spec.containers[0].image == image


def test_a_rejected_approval_ends_the_run_and_nothing_is_executed(engine) -> None:  # type: ignore[no-untyped-def]
    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    engine.sandbox.fault("crash_loop", "shop/cart")
    engine.sandbox.tick(2)
    before = {p["metadata"]["name"] for p in _pods(engine, "shop", "cart")}
    poll(engine.cluster)
    run = _run("cart")
    waiting = wait_for(lambda: _waiting(run), timeout=90, message="the restart approval")
    assert waiting.tool == "restart_workload"
    decide_approval(waiting.approval.code, engine.approvers.bob, "reject", "not during the sale")
    wait_for(lambda: PlaybookRun.objects.get(pk=run.pk).state == "finished", timeout=30, message="the run to end")
    run.refresh_from_db()
    assert run.outcome == "rejected"
    step = StepRun.objects.get(pk=waiting.pk)
    assert step.state == "rejected" and "rejected by bob: not during the sale" in step.error
    assert run.steps.get(name="verify").state == "cancelled"
    assert not AuditEntry.objects.filter(action="tool_call", tool="restart_workload").exists()
    assert {p["metadata"]["name"] for p in _pods(engine, "shop", "cart")} == before
    assert Incident.objects.get(pk=run.incident_id).state == "open"


def test_an_expired_approval_ends_the_run_as_expired(engine) -> None:  # type: ignore[no-untyped-def]
    Rule.objects.exclude(name="oom_killed").update(enabled=False)
    poll(engine.cluster)
    run = _run("report-builder")
    waiting = wait_for(lambda: _waiting(run), timeout=90, message="the memory approval")
    Approval.objects.filter(pk=waiting.approval_id).update(expires_at=waiting.approval.requested_at)
    assert expire_due() >= 1
    run.refresh_from_db()
    assert (run.state, run.outcome) == ("finished", "expired")
    assert StepRun.objects.get(pk=waiting.pk).state == "expired"
    assert not AuditEntry.objects.filter(action="tool_call", tool="patch_memory_limit").exists()


def _only_playbook(steps: list[dict[str, Any]], finding_type: str = "crash_loop") -> None:
    """Disable the seeded rules; one rule for `finding_type` running these steps."""
    from playbooks.models import Playbook, Step

    Rule.objects.update(enabled=False)
    playbook = Playbook.objects.create(name="test_playbook")
    for order, step in enumerate(steps, start=1):
        Step.objects.create(playbook=playbook, order=order, **step)
    Rule.objects.create(name="test_rule", playbook=playbook, finding_types=[finding_type], priority=1000)


RESTART = {"name": "restart pod", "kind": "tool", "tool": "restart_pod",
           "args": {"namespace": "{{ namespace }}", "name": "{{ pod }}"}, "timeout_seconds": 2}
DESCRIBE = {"name": "describe pod", "kind": "tool", "tool": "describe_pod",
            "args": {"namespace": "{{ namespace }}", "name": "{{ pod }}"}, "timeout_seconds": 2}
VERIFY_FAST = {"name": "verify", "kind": "verify", "args": {"checks": 10, "interval": 1}, "timeout_seconds": 5}


def test_a_worker_killed_mid_step_completes_the_step_once_after_a_restart(engine) -> None:  # type: ignore[no-untyped-def]
    import time

    from prometheus_client import REGISTRY

    from playbooks.engine import reconcile

    def requeued_running() -> float:
        return REGISTRY.get_sample_value("aiops_playbook_steps_reconciled_total", {"found": "running"}) or 0.0

    _only_playbook([RESTART, VERIFY_FAST])
    requeued_before = requeued_running()
    pods_before = {p["metadata"]["name"] for p in _pods(engine, "payments", "ledger")}
    poll(engine.cluster)
    run = _run("ledger")
    waiting = wait_for(lambda: _waiting(run), timeout=60, message="the restart approval")
    decide_approval(waiting.approval.pk, engine.approvers.alice, "approve")
    # SIGKILL the whole worker (main process and pool) the moment it has claimed the step.
    wait_for(lambda: StepRun.objects.get(pk=waiting.pk).state in ("running", "succeeded"), timeout=30, interval=0.01,
             message="the step to be claimed")
    engine.worker.kill()
    step = StepRun.objects.get(pk=waiting.pk)
    killed_in = step.state
    engine.worker.start()
    # Its message died with the worker (acked late, but Redis returns it only after the
    # visibility timeout); the reconciler sees the row quiet past its time limit instead.
    def finished() -> bool:
        reconcile()
        return PlaybookRun.objects.get(pk=run.pk).state == "finished"

    wait_for(finished, timeout=90, interval=1, message="the run to finish after the restart")
    time.sleep(0.5)
    run.refresh_from_db()
    step.refresh_from_db()
    assert run.outcome == "resolved", (killed_in, _describe([run]))
    assert killed_in == "running"  # the kill really happened in the middle of the step
    assert requeued_running() >= requeued_before + 1  # operators see the reconciler pick the step back up
    # One execution asked for the approval, one was killed, one completed it
    # (More when the reconciler re-sent it again while a slow attempt ran: each re-run is a no-op.)
    assert step.state == "succeeded" and step.attempts >= 3
    pods_after = {p["metadata"]["name"] for p in _pods(engine, "payments", "ledger")}
    # The effect happened once: exactly the one approved pod was replaced, however many attempts.
    assert pods_before - pods_after == {waiting.rendered_args["name"]}
    assert len(pods_after) == len(pods_before)


def test_a_flushed_redis_delays_the_run_but_it_still_finishes(engine) -> None:  # type: ignore[no-untyped-def]
    import redis
    from django.conf import settings

    from playbooks.engine import reconcile

    _only_playbook([DESCRIBE, DESCRIBE | {"name": "describe again"}, VERIFY_FAST | {"args": {"checks": 1}}],
                   finding_type="oom_killed")
    poll(engine.cluster)
    run = _run("report-builder")
    wait_for(lambda: run.steps.filter(state="succeeded").exists(), timeout=60, interval=0.02, message="a first step")
    redis.Redis.from_url(settings.REDIS_URL).flushall()

    def finished() -> bool:
        reconcile()
        return PlaybookRun.objects.get(pk=run.pk).state == "finished"

    wait_for(finished, timeout=90, interval=1, message="the run to finish after FLUSHALL")
    run.refresh_from_db()
    assert [s.state for s in run.steps.order_by("order")] == ["succeeded", "succeeded", "failed"]
    # Nothing was changed, so the OOM goes on and verify says so.
    assert run.outcome == "fix_did_not_hold"


def _drive(run: PlaybookRun, limit: int = 40) -> PlaybookRun:
    """Run the queued steps in this process, as the worker would (countdowns skipped)."""
    from playbooks.engine import execute_step

    for _ in range(limit):
        run.refresh_from_db()
        if run.state == "finished":
            return run
        queued = run.steps.filter(state="queued").first()
        if queued is None:
            return run
        execute_step(queued.pk)
    return run


def test_dry_run_records_every_step_and_calls_no_tool(engine, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_DRY_RUN = True
    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    _crash_cart(engine)
    with _no_enqueue():
        poll(engine.cluster)
        run = _drive(_run("cart"))
    assert (run.state, run.outcome, run.dry_run) == ("finished", "dry_run", True)
    restart = run.steps.get(name="restart workload")
    assert restart.state == "skipped" and restart.output.startswith("dry run: restart_workload [MEDIUM]")
    assert restart.rendered_args["namespace"] == "shop" and restart.approval is None
    assert not AuditEntry.objects.filter(action="tool_call").exists()


def test_without_auto_remediation_diagnostics_run_and_no_approval_is_requested(engine, settings) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    def timed_describes() -> float:
        labels = {"kind": "tool", "tool": "describe_pod"}
        return REGISTRY.get_sample_value("aiops_playbook_step_duration_seconds_count", labels) or 0.0

    settings.AIOPS_AUTO_REMEDIATION = False
    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    _crash_cart(engine)
    timed_before = timed_describes()
    with _no_enqueue():
        poll(engine.cluster)
        run = _drive(_run("cart"))
    steps = {s.name: s for s in run.steps.all()}
    assert steps["describe pod"].state == "succeeded"
    assert timed_describes() >= timed_before + 1  # the step's latency is observed under its tool
    restart = steps["restart workload"]
    assert restart.state == "skipped" and "AIOPS_AUTO_REMEDIATION is off" in restart.output
    assert not Approval.objects.exists()
    assert run.outcome == "not_remediated", run.summary


def test_the_hourly_action_budget_stops_requests(engine, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_ACTIONS_PER_HOUR = 0
    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    _crash_cart(engine)
    with _no_enqueue():
        poll(engine.cluster)
        run = _drive(_run("cart"))
    restart = run.steps.get(name="restart workload")
    assert restart.state == "skipped" and "budget of 0 automatic actions per hour" in restart.output
    assert not Approval.objects.exists()


def _crash_cart(engine: Any) -> None:
    """Every pod of shop/cart crash-loops with a Go panic (a process crash: the RCA allows a
    restart), and the demo's ledger crash loop (a dependency: handed off) is cleared."""
    engine.sandbox.fault("crash_loop", "shop/cart")
    engine.sandbox.clear("payments/ledger")
    engine.sandbox.tick(2)


class _no_enqueue:  # noqa: N801 - reads as a statement
    """Route this process's messages to a queue no worker reads: the test drives the steps
    itself, in-process, through the same `execute_step` the task calls."""

    QUEUE = "engine-tests-parked"

    def __enter__(self) -> None:
        from aiops_site.celery import app

        self._previous = app.conf.task_default_queue
        app.conf.task_default_queue = self.QUEUE

    def __exit__(self, *exc: object) -> None:
        import redis
        from django.conf import settings

        from aiops_site.celery import app

        app.conf.task_default_queue = self._previous
        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(self.QUEUE)


def test_a_diagnostic_playbook_stores_the_rca_and_asks_for_a_notification(engine) -> None:  # type: ignore[no-untyped-def]
    from playbooks.signals import notification_requested, rca_ready

    heard: dict[str, list[dict[str, Any]]] = {"rca": [], "notify": []}

    def on_rca(sender: Any, **kwargs: Any) -> None:
        heard["rca"].append(kwargs)

    def on_notify(sender: Any, **kwargs: Any) -> None:
        heard["notify"].append(kwargs)

    rca_ready.connect(on_rca, weak=False)
    notification_requested.connect(on_notify, weak=False)
    try:
        Rule.objects.exclude(name="image_pull_failure").update(enabled=False)
        engine.sandbox.fault("image_pull_failure", "shop/frontend")
        engine.sandbox.tick()
        with _no_enqueue():
            poll(engine.cluster)
            run = _drive(_run("frontend"))
    finally:
        rca_ready.disconnect(on_rca)
        notification_requested.disconnect(on_notify)
    assert (run.playbook_name, run.outcome) == ("image_pull_diagnosis", "handed_off"), _describe([run])
    incident = Incident.objects.get(pk=run.incident_id)
    assert incident.rca_report["failure_class"] == "image_pull_error"
    assert [h["report"]["failure_class"] for h in heard["rca"]] == ["image_pull_error"]
    (notice,) = heard["notify"]
    assert notice["run"].pk == run.pk and notice["severity"] == incident.severity
    assert notice["text"].startswith("Image pull failure: ") and "(Deployment shop/frontend)" in notice["text"]
    assert "Likely cause (image_pull_error)" in notice["text"]
