"""The process that opens an incident (the watcher, most often) runs the `incident_opened`
receivers: the engine starts the rule's playbook run and enqueues its first step, channels
writes an outbox row per target. Neither needs a chat platform's client library nor the LLM SDK
to do that, and loading them there cost the watcher ~35 MB and seconds on its first incident
(~930 modules: openai, python-telegram-bot, aiohttp, ...). A fresh process proves they stay out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from channels.models import ChannelTarget, OutboundMessage
from k8s.models import Cluster
from playbooks.models import Incident, PlaybookRun
from tests.conftest import ROOT, worker_env

SCRIPT = """
import sys
import django
django.setup()
from k8s.detectors import Finding
from k8s.models import Cluster
from playbooks.services.incidents import ingest_workload_findings
cluster = Cluster.objects.get(name="imports-check")
finding = Finding("crash_loop", "critical", "Pod", "shop", "web-1", "Deployment", "web",
                  "Container app of pod shop/web-1 is in CrashLoopBackOff", {"labels": {"app": "web"}}, pod="web-1")
result = ingest_workload_findings(cluster, {("Deployment", "shop", "web")}, [finding])
loaded = sorted({name.split(".")[0] for name in sys.modules} & {"openai", "telegram", "slack_sdk", "aiohttp", "httpx"})
print("OPENED", len(result.opened), "LOADED", ",".join(loaded) or "-")
"""


@pytest.mark.django_db(transaction=True)
def test_opening_an_incident_loads_no_chat_or_llm_client_library(chat, seed_playbooks) -> None:  # type: ignore[no-untyped-def]
    Cluster.objects.create(name="imports-check", kubeconfig_path="/nonexistent/kubeconfig", enabled=False)
    ChannelTarget.objects.create(name="oncall", kind="telegram", address="-100999", min_severity="warning",
                                 enabled=True, approvals=False)
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=worker_env({"AIOPS_LOG_LEVEL": "WARNING"}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OPENED 1 LOADED -" in done.stdout, done.stdout + done.stderr[-3000:]
    # The receivers did their work in that process: a run for the seeded rule, a message for the target.
    incident = Incident.objects.get(workload_name="web")
    assert PlaybookRun.objects.filter(incident=incident).exists()
    assert OutboundMessage.objects.filter(incident_id=incident.pk, address="-100999").exists()
