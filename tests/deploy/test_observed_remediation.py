"""Issue 9's check: after a sandbox fault is remediated end to end, Prometheus's API shows the
incident, run, approval and message counters moved.

The worker runs the way the image runs it (multiprocess metrics, its own metrics port); this
test process plays the web role (it polls and decides the approval, as a beat-fired poll task
and a chat button would) and serves its metrics the way the gunicorn master does."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import prometheus_client
import pytest

from tests.conftest import Worker, free_port, wait_for, worker_env
from tests.deploy.test_metrics_scrape import PROMETHEUS, Process, _get, _query, _value
from tests.plugins.engine import restart_pods_regardless

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus (Debian package) is not installed"),
]
TG_CHAT = "-100424242"
# The counters the remediation must move, judged by their change during the test.
COUNTERS = (
    'sum(aiops_incidents_opened_total{job="aiops-web",type="crash_loop"})',
    'sum(aiops_incidents_resolved_total{type="crash_loop"})',
    'sum(aiops_playbook_runs_finished_total{job="aiops-worker",playbook="crash_loop_remediation",outcome="resolved"})',
    'sum(aiops_approvals_total{job="aiops-worker",state="pending"})',
    'sum(aiops_approvals_total{job="aiops-web",state="approved"})',
    'sum(aiops_tool_calls_total{job="aiops-worker",tool="restart_pod",outcome="ok"})',
    'sum(aiops_chat_messages_sent_total{job="aiops-worker",platform="telegram"})',
    'sum(aiops_celery_tasks_total{job="aiops-worker",outcome="success"})',
    'sum(aiops_playbook_rule_matches_total{result="matched"})',
    'sum(aiops_playbook_runs_started_total{playbook="crash_loop_remediation"})',
    'sum(aiops_playbook_steps_total{job="aiops-worker",state="succeeded"})',
    'sum(aiops_rca_reports_total{job="aiops-worker"})',
    'sum(aiops_mcp_sessions_opened_total{job="aiops-worker"})',
    'sum(aiops_playbook_decision_to_action_seconds_count{tool="restart_pod"})',
)



def test_prometheus_shows_the_remediation_of_a_sandbox_fault(  # type: ignore[no-untyped-def]
    transactional_db, sandbox_cluster, kube_mcp, approvers, seed_playbooks, chat, monkeypatch, tmp_path
) -> None:
    from agents.registry import register_builtin
    from agents.services import decide_approval
    from aiops_site.celery import app
    from aiops_site.metrics import scrape_registry
    from channels.models import ChannelTarget
    from playbooks.models import Incident, PlaybookRun, Rule, StepRun
    from playbooks.services.poll import poll

    # A worker of our own on a queue of our own, started as the image starts it.
    queue = f"deploy-e2e-{uuid.uuid4().hex[:8]}"
    previous_queue = app.conf.task_default_queue  # Celery's Settings cannot be monkeypatched
    app.conf.task_default_queue = queue
    monkeypatch.setenv("AIOPS_MCP_TOKEN", kube_mcp.token)
    register_builtin(kube_mcp.url)
    # One fault is enough to see every counter move; the demo's other two would only compete
    # for the worker's two processes.
    Rule.objects.exclude(playbook__name="crash_loop_remediation").update(enabled=False)
    restart_pods_regardless()  # ledger's crash is a dependency failure, which the seeded playbook hands off
    ChannelTarget.objects.create(name="tg-payments", kind="telegram", address=TG_CHAT, namespace_regex="payments")
    (tmp_path / "worker-metrics").mkdir()
    worker_port, web_port, prometheus_port = free_port(), free_port(), free_port()
    worker = Worker(tmp_path / "worker.log", worker_env({
        "AIOPS_CELERY_QUEUE": queue, "AIOPS_MCP_TOKEN": kube_mcp.token,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "worker-metrics"),
        "AIOPS_WORKER_METRICS_PORT": str(worker_port), "AIOPS_METRICS_ADDRESS": "127.0.0.1",
    }))
    web_server, _ = prometheus_client.start_http_server(
        web_port, addr="127.0.0.1", registry=scrape_registry(include_queues=True, include_state=True)
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n"
        f"  - job_name: aiops-web\n    static_configs: [{{targets: ['127.0.0.1:{web_port}']}}]\n"
        f"  - job_name: aiops-worker\n    static_configs: [{{targets: ['127.0.0.1:{worker_port}']}}]\n"
    )
    prometheus = Process("prometheus", [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                        f"--web.listen-address=127.0.0.1:{prometheus_port}"], {}, tmp_path)
    url = f"http://127.0.0.1:{prometheus_port}"
    try:
        wait_for(lambda: prometheus.alive() and _get(url + "/-/ready")[0] == 200, timeout=30, message="Prometheus")
        # Counters of this process (the web role) already moved in earlier tests of the session:
        # take what Prometheus holds before the fault is polled and judge the counters by their
        # change. Wait for a scrape of each target that started after this point.
        started = time.time()

        def scraped_since_start() -> bool:
            scrapes = _query(url, "timestamp(up == 1)")  # when each target was last scraped, if up
            return len(scrapes) == 2 and all(float(sample["value"][1]) > started for sample in scrapes)

        wait_for(scraped_since_start, timeout=30, message="a first scrape of both targets")
        baseline = {promql: _value(url, promql) or 0.0 for promql in COUNTERS}

        # Sense -> decide -> ask: the demo's crash-looping ledger becomes an incident and a run
        # that waits for approval of restart_pod, announced on Telegram.
        assert poll(sandbox_cluster).outcome == "ok"
        run = PlaybookRun.objects.get(incident__workload_name="ledger")

        def waiting() -> StepRun | None:
            return StepRun.objects.filter(run=run, state="waiting_approval").select_related("approval").first()

        step = wait_for(waiting, timeout=60, message="the ledger run to ask for approval")
        assert step.approval.tool == "restart_pod"
        wait_for(lambda: any(step.approval.code in m["text"] for m in chat.telegram.chat_messages(TG_CHAT)),
                 timeout=30, message="the approval on Telegram")

        # Act -> verify: approved, restarted, verified, resolved.
        decide_approval(step.approval.pk, approvers.alice, "approve", "restart it")
        wait_for(lambda: PlaybookRun.objects.get(pk=run.pk).state == "finished", timeout=60,
                 message="the run to finish")
        run.refresh_from_db()
        assert run.outcome == "resolved", run.summary
        assert Incident.objects.get(pk=run.incident_id).state == "resolved"

        counters = {
            'sum(aiops_incidents_opened_total{job="aiops-web",type="crash_loop"})': lambda v: v >= 1,
            'sum(aiops_incidents_resolved_total{type="crash_loop"})': lambda v: v >= 1,
            'sum(aiops_playbook_runs_finished_total{job="aiops-worker",playbook="crash_loop_remediation",'
            'outcome="resolved"})': lambda v: v == 1,
            'sum(aiops_approvals_total{job="aiops-worker",state="pending"})': lambda v: v >= 1,
            'sum(aiops_approvals_total{job="aiops-web",state="approved"})': lambda v: v == 1,
            'sum(aiops_tool_calls_total{job="aiops-worker",tool="restart_pod",outcome="ok"})': lambda v: v == 1,
            'sum(aiops_chat_messages_sent_total{job="aiops-worker",platform="telegram"})': lambda v: v >= 1,
            'sum(aiops_celery_tasks_total{job="aiops-worker",outcome="success"})': lambda v: v >= 3,
            # The engine's and the agents' own: the rule matched, the run started, steps ran,
            # the RCA was written, an MCP session opened, the decision became an action.
            'sum(aiops_playbook_rule_matches_total{result="matched"})': lambda v: v >= 1,
            'sum(aiops_playbook_runs_started_total{playbook="crash_loop_remediation"})': lambda v: v == 1,
            'sum(aiops_playbook_steps_total{job="aiops-worker",state="succeeded"})': lambda v: v >= 3,
            'sum(aiops_rca_reports_total{job="aiops-worker"})': lambda v: v >= 1,
            'sum(aiops_mcp_sessions_opened_total{job="aiops-worker"})': lambda v: v >= 1,
            'sum(aiops_playbook_decision_to_action_seconds_count{tool="restart_pod"})': lambda v: v == 1,
        }
        assert set(counters) == set(COUNTERS)
        gauges = {
            # Resolved, so no open crash_loop incident is left (the series is gone: `or vector(0)`).
            'sum(aiops_incidents_open{job="aiops-web",type="crash_loop"}) or vector(0)': lambda v: v == 0,
            'aiops_database_up{job="aiops-web"}': lambda v: v == 1,
        }

        def moved() -> bool:
            for promql, check in counters.items():
                value = _value(url, promql)
                if value is None or not check(value - baseline[promql]):
                    return False
            return all((value := _value(url, promql)) is not None and check(value) for promql, check in gauges.items())

        try:
            wait_for(moved, timeout=30, interval=0.5, message="Prometheus to show the remediation")
        except BaseException:
            seen = {promql: (_value(url, promql), baseline.get(promql)) for promql in [*counters, *gauges]}
            raise AssertionError(f"Prometheus holds (now, before) {seen}; targets: {_query(url, 'up')}\n"
                                 f"{worker.log()[-3000:]}") from None
    finally:
        app.conf.task_default_queue = previous_queue
        prometheus.terminate()
        web_server.shutdown()
        worker.stop()
        prometheus.stop()
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue)
