"""Finding 8 of issue 13, the dependencies: Redis flushed mid-run, Redis restarted mid-run, and the
MCP server killed in the middle of a mutating call. The same invariants as the kill matrix: every
run finishes, no action is doubled, every action has exactly one audit entry that says it
happened. Figures: docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from playbooks.models import StepRun
from tests.chaos.test_kill_matrix import check_invariants, drive, start_trial
from tests.conftest import ROOT, wait_for
from tests.plugins.chaos import hold_response

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _after_first_action(chaos: Any, run: Any) -> None:
    from agents.services import decide_approval

    def done() -> bool:
        for waiting in StepRun.objects.filter(run=run, state="waiting_approval").select_related("approval"):
            if waiting.approval.state == "pending":
                decide_approval(waiting.approval.pk, chaos.approvers.alice, "approve", "chaos trial")
        return StepRun.objects.get(run=run, name="scale up").state == "succeeded"

    wait_for(done, timeout=90, interval=0.05, message="the first action")


def test_redis_flushed_mid_run_delays_it_and_loses_nothing(chaos, settings) -> None:  # type: ignore[no-untyped-def]
    import redis

    # The test process is beat here: its reconciler re-sends a queued step quiet for 3 s, not 60.
    settings.AIOPS_STEP_REQUEUE_AFTER = 3
    run, before = start_trial(chaos)
    _after_first_action(chaos, run)
    flushed_at = time.monotonic()
    redis.Redis.from_url(settings.REDIS_URL).flushall()
    drive(chaos, run)
    run.refresh_from_db()
    figures = check_invariants(chaos, run, before)
    print(f"chaos flushall finished_after={time.monotonic() - flushed_at:.1f}s outcome={run.outcome} {figures}")


def test_redis_restarted_mid_run_loses_nothing(chaos, settings) -> None:  # type: ignore[no-untyped-def]
    import redis

    from aiops_site import embedded

    if os.environ.get("REDIS_URL"):
        pytest.skip("Redis is external here (REDIS_URL): this test restarts the embedded one")
    settings.AIOPS_STEP_REQUEUE_AFTER = 3
    run, before = start_trial(chaos)
    _after_first_action(chaos, run)
    client = redis.Redis.from_url(settings.REDIS_URL)
    port = client.connection_pool.connection_kwargs["port"]
    stopped_at = time.monotonic()
    try:
        client.shutdown()  # saves (append-only file), then exits
    except redis.ConnectionError:
        pass  # it closes the connection as it goes
    wait_for(lambda: not embedded.redis_ready(port), timeout=20, message="Redis to stop")
    # The same server on the same port and data (its append-only file), as supervisord restarts it
    # under `make run`; it dies with this test session (`make test` stopped the old one).
    argv = embedded.redis_argv(Path(settings.RUN_DIR))
    argv[argv.index("--port") + 1] = str(port)
    subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
                     preexec_fn=embedded.die_with_parent(signal.SIGTERM))  # noqa: PLW1509
    wait_for(lambda: embedded.redis_ready(port), timeout=30, message="Redis to accept connections again")
    down_for = time.monotonic() - stopped_at
    restarts = getattr(chaos.worker, "restarts_by_supervision", 0)
    drive(chaos, run)
    run.refresh_from_db()
    figures = check_invariants(chaos, run, before)
    # kombu 5.7's worker can exit on the broker's disappearance ("Unrecoverable error" while it
    # restores unacked messages); supervision brings it back and the database re-sends the step.
    worker_restarted = getattr(chaos.worker, "restarts_by_supervision", 0) - restarts
    print(f"chaos redis restart down_for={down_for:.1f}s finished_after={time.monotonic() - stopped_at:.1f}s "
          f"worker_restarted_by_supervision={worker_restarted} outcome={run.outcome} {figures}")


def _restart_mcp(kube_mcp: Any) -> None:
    """A new server on the same port (the registry's URL), taking over the fixture's process."""
    from aiops_site.embedded import die_with_parent

    port = kube_mcp.url.rsplit(":", 1)[1].split("/")[0]
    env = {**os.environ, "AIOPS_MCP_TOKEN": kube_mcp.token, "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    port_file = Path(kube_mcp.log_path).with_name("port-restarted")
    port_file.unlink(missing_ok=True)
    with open(kube_mcp.log_path, "ab") as log:
        kube_mcp.process = subprocess.Popen(
            [sys.executable, "-m", "k8s.mcp_server", "--http", "--port", port, "--port-file", str(port_file),
             "--kubeconfig", kube_mcp.kubeconfig],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509
        )
    wait_for(port_file.exists, timeout=60, message="the MCP server to listen again")


def test_the_mcp_server_killed_mid_call_the_action_is_done_once_and_audited_once(chaos) -> None:  # type: ignore[no-untyped-def]
    from agents.services import decide_approval

    run, before = start_trial(chaos)
    wait_for(lambda: StepRun.objects.filter(run=run, name="scale up", state="waiting_approval").first(), timeout=90,
             message="the scale approval")
    step = StepRun.objects.get(run=run, name="scale up")
    with hold_response(chaos.sandbox, "PATCH", r"/deployments/ledger/scale$") as hold:
        decide_approval(step.approval.pk, chaos.approvers.alice, "approve", "chaos trial")
        assert hold.applied.wait(60), "the scale never reached the cluster"
        # The cluster scaled; the MCP server waits for the answer. Kill it.
        chaos.mcp.process.kill()
        chaos.mcp.process.wait(10)
        killed_at = time.monotonic()
    _restart_mcp(chaos.mcp)
    drive(chaos, run)
    run.refresh_from_db()
    figures = check_invariants(chaos, run, before)
    print(f"chaos mcp kill finished_after={time.monotonic() - killed_at:.1f}s outcome={run.outcome} {figures}")
    from agents.models import AuditEntry

    # The broken call stayed `started` (and so did a retry sent while the server was still down);
    # the retry that got through found the deployment scaled, so one unanswered call is said to
    # have done it, with what the re-read showed.
    dead = AuditEntry.objects.filter(action="tool_call", tool="scale_deployment", outcome="unknown")
    assert dead.exists() and all("wants 3 replicas" in entry.detail for entry in dead)
    assert dead.filter(effect="changed").count() == 1
