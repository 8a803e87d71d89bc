"""An investigated RCA report on the incident page, in Chromium: each piece of evidence a tool
returned names the call behind it in words (tool and arguments), never a raw dict."""

from __future__ import annotations

import pytest

from tests.channels import browser as browser_tools

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REPORT = {
    "root_cause": "The ledger container exceeds its 256Mi memory limit: its working set climbed to 255Mi before each kill.",
    "failure_class": "oom_killed", "confidence": 0.85, "method": "llm", "model": "gemma3-270m",
    "evidence": [
        {"source": "tool", "ref": "T2", "detail": "container_memory_working_set_bytes rose from 180Mi to 255Mi over 40 minutes",
         "tool": "query_prometheus", "arguments": {"query": 'container_memory_working_set_bytes{pod="ledger-6f7d9-abcde"}',
                                                   "range": "1h"}, "audit_id": 41},
        {"source": "tool", "ref": "T1", "detail": "java.lang.OutOfMemoryError: Java heap space", "tool": "get_pod_logs",
         "arguments": {"namespace": "payments", "name": "ledger-6f7d9-abcde", "previous": True}, "audit_id": 40},
        {"source": "status", "field": "status.containerStatuses[0].lastState.terminated.reason", "detail": "OOMKilled"},
    ],
    "recommended_actions": [{"action": "Raise the memory limit of payments/ledger", "playbook": "oom_kill_remediation"}],
    "related_resources": ["Pod/payments/ledger-6f7d9-abcde"],
    "investigation": {"rounds": 2, "output_chars": 3120, "calls": [
        {"ref": "T1", "tool": "get_pod_logs", "arguments": {"namespace": "payments", "name": "ledger-6f7d9-abcde", "previous": True},
         "outcome": "ran", "audit_id": 40, "chars": 2400},
        {"ref": "T2", "tool": "query_prometheus", "arguments": {"query": "container_memory_working_set_bytes", "range": "1h"},
         "outcome": "ran", "audit_id": 41, "chars": 720}]},
}


def test_the_incident_page_shows_the_tool_call_behind_each_piece_of_evidence(
    live_server, approvers, make_incident, no_playbooks, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    incident = make_incident(namespace="payments", workload_name="ledger", primary_type="oom_killed",
                             finding_types=["oom_killed"], title="ledger OOM-killed", rca_report=REPORT)
    with sync_playwright() as playwright:
        browser = browser_tools.launch(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{live_server.url}/console/login/?next=/console/incidents/{incident.pk}")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "x")
            page.click("button[type=submit]")
            evidence = page.locator(".evidence")
            expect(evidence.first).to_contain_text("Tool result · query_prometheus(query=container_memory_working_set_bytes")
            expect(evidence.nth(1)).to_contain_text(
                "get_pod_logs(name=ledger-6f7d9-abcde, namespace=payments, previous=yes)")
            expect(page.locator("body")).to_contain_text("the LLM (gemma3-270m), after 2 tool calls")
            text = page.locator("body").inner_text()
            assert "{'" not in text and "audit_id" not in text and "True" not in text
            browser_tools.check_page(page, "incident-rca-investigated")
        finally:
            browser.close()
