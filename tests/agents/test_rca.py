"""RCA: the deterministic report per failure class, the LLM report with repair and fallback, the command."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command, execute_from_command_line
from prometheus_client import REGISTRY

from agents.rca import FAILURE_CLASSES, BundleError, analyze, normalized_events
from tests.fakes.openai_server import error, json_reply, text


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0

NOW = "2026-11-23T10:00:00Z"


def pod(name: str = "shop-api-7d9f-abcde", *, containers: list[dict[str, Any]] | None = None, phase: str = "Running",
        spec: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": "2026-11-23T09:00:00Z",
                     "labels": {"app": "shop-api"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "shop-api-7d9f", "controller": True}]},
        "spec": spec or {"nodeName": "worker-1", "containers": [{"name": "api", "image": "shop/api:1.4",
                                                                 "resources": {"limits": {"memory": "256Mi"}}}]},
        "status": {"phase": phase, "startTime": "2026-11-23T09:00:00Z", "containerStatuses": containers or [], **status},
    }


def crashing(exit_code: int = 1, reason: str = "Error") -> dict[str, Any]:
    return {"name": "api", "ready": False, "restartCount": 6, "image": "shop/api:1.4",
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": exit_code, "reason": reason, "finishedAt": NOW}}}


PY_CRASH = """[2026-11-23 09:59:01 +0000] [7] [INFO] Booting worker with pid: 7
Traceback (most recent call last):
  File "/app/shop/db.py", line 27, in connect
    return psycopg.connect(settings.DATABASE_URL, connect_timeout=5)
psycopg.OperationalError: connection failed: connection to server at "10.96.0.23", port 5432 failed: Connection refused
[2026-11-23 09:59:02 +0000] [1] [ERROR] Worker (pid:7) exited with code 3"""
GO_PANIC = """{"level":"info","msg":"connecting to cache","addr":"redis:6379"}
panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x8a1c2e]
exit status 2"""

CASES: dict[str, tuple[dict[str, Any], str]] = {
    "oom": ({"pod": pod(containers=[crashing(137, "OOMKilled")]), "events": [], "logs": "", "previous_logs": ""}, "oom_killed"),
    "image": ({"pod": pod(phase="Pending", containers=[{"name": "api", "ready": False, "restartCount": 0, "image": "shop/api:1.5-typo",
                                                         "state": {"waiting": {"reason": "ImagePullBackOff", "message": "manifest unknown"}}}]),
               "events": [{"reason": "Failed", "message": "Failed to pull image \"shop/api:1.5-typo\": not found", "count": 4}]},
              "image_pull_error"),
    "dependency": ({"pod": pod(containers=[crashing(3)]), "events": [], "logs": "", "previous_logs": PY_CRASH}, "dependency_failure"),
    "panic": ({"pod": pod(containers=[crashing(2)]), "previous_logs": GO_PANIC}, "app_crash"),
    "config": ({"pod": pod(phase="Pending", containers=[{"name": "api", "ready": False, "restartCount": 0, "state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": "secret \"shop-db\" not found"}}}])}, "config_error"),
    "unschedulable": ({"pod": pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                               "message": "0/3 nodes are available: 3 Insufficient cpu."}]),
                       "events": [{"reason": "FailedScheduling", "message": "0/3 nodes are available: 3 Insufficient cpu.",
                                   "eventTime": NOW, "series": {"count": 12, "lastObservedTime": NOW}}]}, "resource_exhaustion"),
    "node": ({"node": {"metadata": {"name": "worker-1"}, "status": {"conditions": [
        {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]}},
              "events": [{"reason": "NodeNotReady", "message": "Node worker-1 status is now: NodeNotReady", "count": 1}]}, "node_failure"),
    "probe": ({"pod": pod(containers=[{"name": "api", "ready": False, "restartCount": 0, "state": {"running": {"startedAt": "2026-11-23T09:00:00Z"}}}],
                          spec={"nodeName": "worker-1", "containers": [{"name": "api", "image": "shop/api:1.4", "readinessProbe": {"httpGet": {"path": "/ready"}}}]}),
               "events": [{"reason": "Unhealthy", "message": "Readiness probe failed: HTTP probe failed with statuscode: 503", "count": 40}],
               "logs": '10.244.0.1 - - "GET /ready HTTP/1.1" 503 61 "-" "kube-probe/1.32"'}, "probe_failure"),
    # Killed by the liveness probe (SIGKILL after SIGTERM: 137, reason Error), a hung pool in the log.
    "liveness": ({"pod": pod(containers=[crashing(137)],
                             spec={"nodeName": "worker-1", "containers": [{"name": "api", "image": "shop/api:1.4",
                                                                           "livenessProbe": {"httpGet": {"path": "/healthz"}}}]}),
                  "events": [{"reason": "Unhealthy", "message": 'Liveness probe failed: Get "http://10.244.1.7:8080/healthz": '
                              "context deadline exceeded (Client.Timeout exceeded while awaiting headers)", "count": 18},
                             {"reason": "Killing", "message": "Container api failed liveness probe, will be restarted", "count": 6}],
                  "previous_logs": "[2026-11-23 09:59:01 +0000] [7] [WARNING] connection pool exhausted (size=10, in use=10): "
                                   "waiting for a free connection\n[2026-11-23 09:59:31 +0000] [1] [INFO] Handling signal: term"},
                 "probe_failure"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_deterministic_report_names_the_failure_class(case: str) -> None:
    bundle, expected = CASES[case]
    report = analyze(copy.deepcopy(bundle), use_llm=False)
    assert report["failure_class"] == expected, report
    assert report["method"] == "deterministic"
    assert 0 < report["confidence"] <= 1
    assert report["root_cause"] and report["evidence"] and report["recommended_actions"]
    assert all(item["source"] for item in report["evidence"])


def test_a_dependency_crash_cites_the_log_line() -> None:
    report = analyze({"pod": pod(containers=[crashing(3)]), "previous_logs": PY_CRASH}, use_llm=False)
    cited = [e for e in report["evidence"] if e["source"] == "previous_log"]
    assert cited and cited[0]["line"] == 5
    assert "Connection refused" in cited[0]["detail"]


def test_an_oom_report_names_the_status_field_and_the_playbook() -> None:
    report = analyze(copy.deepcopy(CASES["oom"][0]), use_llm=False)
    assert report["evidence"][0]["field"] == "status.containerStatuses[0].lastState.terminated.reason"
    assert report["recommended_actions"][0]["playbook"] == "oom_kill_remediation"
    assert "256Mi" in report["root_cause"]
    assert "Node/worker-1" in report["related_resources"]


def test_both_event_shapes_are_read() -> None:
    events = normalized_events({"events": [
        {"reason": "BackOff", "message": "old", "count": 7, "firstTimestamp": "2026-11-23T09:00:00Z", "lastTimestamp": "2026-11-23T09:30:00Z"},
        {"reason": "Unhealthy", "note": "new", "eventTime": "2026-11-23T09:10:00.000000Z", "series": {"count": 3, "lastObservedTime": "2026-11-23T09:40:00Z"}},
    ]})
    assert [(e["reason"], e["count"]) for e in events] == [("BackOff", 7), ("Unhealthy", 3)]
    assert events[1]["message"] == "new"


@pytest.mark.parametrize(
    ("bundle", "field"),
    [
        ([], "the bundle must be a JSON object"),
        ({"events": []}, "pod: required"),
        ({"pod": {"status": {}}}, "pod.metadata: must be an object"),
        ({"pod": pod(), "events": [{"reason": 5}]}, "events[0].reason: must be a string"),
        ({"pod": pod(), "events": {}}, "events: must be a list"),
        ({"pod": pod(), "logs": ["x"]}, "logs: must be a string"),
        ({"pod": pod(), "podz": {}}, "unknown field 'podz'"),
    ],
)
def test_a_malformed_bundle_is_refused_naming_the_field(bundle: Any, field: str) -> None:
    with pytest.raises(BundleError) as raised:
        analyze(bundle, use_llm=False)
    assert field in str(raised.value)


# --- with an LLM ---------------------------------------------------------------------------

GOOD = {
    "root_cause": "The API cannot reach PostgreSQL at 10.96.0.23:5432 and exits.",
    "failure_class": "dependency_failure",
    "confidence": 0.8,
    "evidence": [{"source": "previous_log", "line": 5, "detail": "Connection refused"}],
    "recommended_actions": [{"action": "Check the postgres Service", "playbook": None},
                            {"action": "Restart it", "playbook": "fix_everything_playbook"}],
    "related_resources": ["Pod/shop/shop-api-7d9f-abcde"],
}


def test_the_llm_report_is_validated_and_used(fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(json_reply(GOOD))
    report = analyze({"pod": pod(containers=[crashing(3)]), "previous_logs": PY_CRASH})
    assert report["method"] == "llm" and report["failure_class"] == "dependency_failure"
    assert report["repaired"] is False
    assert report["recommended_actions"][1]["playbook"] is None  # made-up playbook names are dropped
    request = fake_llm.completions[0].json
    assert request["response_format"]["type"] == "json_schema"
    assert "5| psycopg.OperationalError" in request["messages"][1]["content"]  # numbered log lines


def test_invalid_output_is_repaired_once(fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(json_reply({**GOOD, "failure_class": "gremlins"}), json_reply(GOOD))
    report = analyze({"pod": pod(containers=[crashing(3)]), "previous_logs": PY_CRASH})
    assert report["method"] == "llm" and report["repaired"] is True
    repair = fake_llm.completions[1].json["messages"][-1]["content"]
    assert "failure_class" in repair and "gremlins" in repair


def test_nonsense_json_falls_back_to_the_deterministic_report_and_says_so(fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(text("I think it is DNS, probably {not json"), text('{"root_cause": 42}'))
    before = _metric("aiops_rca_fallbacks_total", reason="invalid_output")
    report = analyze({"pod": pod(containers=[crashing(3)]), "previous_logs": PY_CRASH})
    assert _metric("aiops_rca_fallbacks_total", reason="invalid_output") == before + 1
    assert report["method"] == "deterministic"
    assert report["failure_class"] == "dependency_failure"
    assert report["fallback"]["reason"] == "invalid_output"
    assert "invalid after one repair" in report["note"]
    assert len(fake_llm.completions) == 2


def test_a_failing_provider_falls_back(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_MAX_RETRIES = 1
    fake_llm.script(error(500), error(503))
    before = _metric("aiops_rca_fallbacks_total", reason="provider_error")
    report = analyze(copy.deepcopy(CASES["oom"][0]))
    assert _metric("aiops_rca_fallbacks_total", reason="provider_error") == before + 1
    assert report["method"] == "deterministic" and report["failure_class"] == "oom_killed"
    assert report["fallback"]["reason"] == "provider_error"


def test_the_compact_prompt_is_a_few_hundred_tokens_of_facts_after_a_fixed_prefix(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_RCA_PROMPT = "compact"
    fake_llm.script(json_reply(GOOD), json_reply(GOOD))
    analyze(copy.deepcopy(CASES["oom"][0]))
    analyze({"pod": pod(containers=[crashing(3)]), "previous_logs": PY_CRASH * 20})
    first, second = (r.messages for r in fake_llm.completions)
    # What does not change per bundle comes first and is the same: llama.cpp reuses it.
    assert first[0] == second[0] and "oom_killed:" in first[0]["content"]
    oom, crash = first[1]["content"], second[1]["content"]
    assert ("container api: waiting CrashLoopBackOff back-off 5m0s restarting failed container; restarts 6; "
            "last: terminated OOMKilled exit 137; memory limit 256Mi") in oom
    assert "Rules suggest: oom_killed" in oom
    assert "psycopg.OperationalError: connection failed" in crash and "earlier lines left out" in crash
    assert len(crash) < 2500  # 100 log lines in, the last 10 go (about 600 tokens in all)


def test_secrets_in_logs_never_reach_the_llm(fake_llm) -> None:  # type: ignore[no-untyped-def]
    logs = PY_CRASH + "\nGET /api Authorization: Bearer s3cr3tT0kenABCDEF123\nDB_PASSWORD=hunter2hunter2 connecting as ops@example.com"
    fake_llm.script(json_reply(GOOD))
    redactions_before = _metric("aiops_llm_redactions_total", purpose="rca")
    analyze({"pod": pod(containers=[crashing(3)]), "previous_logs": logs})
    assert _metric("aiops_llm_redactions_total", purpose="rca") >= redactions_before + 3  # token, password, e-mail
    received = fake_llm.received_text()
    assert "psycopg.OperationalError" in received  # the log did go
    for secret in ("s3cr3tT0kenABCDEF123", "hunter2hunter2", "ops@example.com"):
        assert secret not in received


# --- the command ---------------------------------------------------------------------------


def test_the_command_prints_a_report_and_names_a_bad_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "oom.json"
    good.write_text(json.dumps(CASES["oom"][0]))
    out = io.StringIO()
    call_command("rca", str(good), "--no-llm", stdout=out)
    assert json.loads(out.getvalue())["failure_class"] == "oom_killed"

    with pytest.raises(CommandError, match="no such file"):
        call_command("rca", str(tmp_path / "missing.json"), "--no-llm")
    (tmp_path / "junk.json").write_text("{pod:")
    with pytest.raises(CommandError, match="not JSON"):
        call_command("rca", str(tmp_path / "junk.json"), "--no-llm")

    # As an operator runs it (the CLI entry point, in this process): exit status 1, the field named.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pod": pod(), "events": [{"count": "many"}]}))
    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", "rca", str(bad), "--no-llm"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "events[0].count: must be an integer" in err and "Traceback" not in err


def test_failure_classes_are_the_issue_vocabulary() -> None:
    assert set(FAILURE_CLASSES) == {"oom_killed", "app_crash", "config_error", "dependency_failure", "image_pull_error",
                                    "resource_exhaustion", "node_failure", "probe_failure", "permission_error", "bad_rollout", "unknown"}


# --- against the sandbox cluster, with no LLM ------------------------------------------------

SANDBOX_FAULTS = [
    # (fault, target, workload kind, namespace, name, expected failure class)
    ("crash_loop", "shop/cart", "Deployment", "shop", "cart", "app_crash"),  # Go: a nil pointer panic
    ("crash_loop", "payments/ledger", "Deployment", "payments", "ledger", "dependency_failure"),  # Python: DB refused
    ("oom_killed", "data/report-builder", "Deployment", "data", "report-builder", "oom_killed"),
    ("image_pull_failure", "shop/frontend", "Deployment", "shop", "frontend", "image_pull_error"),
    ("unschedulable", "shop/checkout", "Deployment", "shop", "checkout", "resource_exhaustion"),
    ("not_ready_node", "node-3", "Node", "", "node-3", "node_failure"),
    ("replication_failure", "payments/payments-api", "Deployment", "payments", "payments-api", "bad_rollout"),
    ("probe_failure", "shop/cart", "Deployment", "shop", "cart", "probe_failure"),  # readiness fails
    ("probe_failure:liveness", "shop/frontend", "Deployment", "shop", "frontend", "probe_failure"),  # killed by it
    # checkout has older revisions, but its newest is days old: a readiness failure, not a bad rollout.
    ("probe_failure", "shop/checkout", "Deployment", "shop", "checkout", "probe_failure"),
    ("hpa_maxed", "shop/cart", "Deployment", "shop", "cart", "resource_exhaustion"),
    ("failed_job", "data/nightly-export", "Job", "data", "nightly-export", "config_error"),  # KeyError: EXPORT_BUCKET
    ("evicted", "shop/frontend", "Deployment", "shop", "frontend", "node_failure"),  # the node ran low
]


@pytest.mark.integration
@pytest.mark.parametrize(("fault", "target", "kind", "namespace", "name", "expected"), SANDBOX_FAULTS,
                         ids=[f"{v[0]}-{v[1]}" for v in (getattr(f, "values", f) for f in SANDBOX_FAULTS)])
def test_each_sandbox_fault_gets_the_right_failure_class_without_an_llm(
    sandbox, sandbox_cluster, no_llm, fault, target, kind, namespace, name, expected  # type: ignore[no-untyped-def]
) -> None:
    from agents.rca import gather_bundle

    sandbox.reset("demo")
    fault, _, probe = fault.partition(":")
    sandbox.fault(fault, target, **({"probe": probe} if probe else {}))
    sandbox.tick(3)
    bundle = gather_bundle(sandbox_cluster, {"kind": kind, "namespace": namespace, "name": name})
    report = analyze(bundle)
    assert report["method"] == "deterministic"
    assert report["failure_class"] == expected, (report["root_cause"], report["evidence"])
    assert report["confidence"] >= 0.7
    json.dumps(bundle)  # a bundle is JSON: what `manage.py rca` reads back
