"""Correlation on the sandbox, end to end with the engine's real worker: a NotReady node holding
the pods of three workloads is one parent incident with three linked children, one message per
target, and no restart is asked for the children while the node's run is active."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from agents.models import Approval
from agents.services import decide_approval
from channels.models import ChannelTarget, OutboundMessage
from playbooks.models import Incident, Playbook, PlaybookRun, Rule, Step, StepRun
from playbooks.services.poll import poll
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration]

NODE = "node-crowded"


@pytest.fixture
def restart_rule(engine) -> Rule:  # type: ignore[no-untyped-def]
    """What each workload would get on its own: a rollout restart (MEDIUM, asks for an approval)."""
    playbook = Playbook.objects.create(name="restart_unavailable", description="restart a deployment with no replicas")
    Step.objects.create(playbook=playbook, order=1, name="restart workload", kind="tool", tool="restart_workload",
                        args={"namespace": "{{ namespace }}", "kind": "Deployment", "name": "{{ name }}"})
    return Rule.objects.create(name="restart_unavailable", priority=50, finding_types=["replication_failure"],
                               playbook=playbook, cooldown_seconds=0, auto_run=True)


@pytest.fixture
def targets(engine, chat) -> dict[str, ChannelTarget]:  # type: ignore[no-untyped-def]
    return {
        "web": ChannelTarget.objects.create(name="console", kind="web", address="feed", min_severity="warning"),
        "slack": ChannelTarget.objects.create(name="ops", kind="slack", address="C0CORRELATE", min_severity="warning",
                                              approvals=False),
    }


def _count(name: str, **labels: str) -> float:
    """A counter's value summed over its label sets (or the one `labels` names)."""
    return sum(sample.value for metric in REGISTRY.collect() for sample in metric.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def _restart_requests() -> int:
    return Approval.objects.filter(tool="restart_workload").count()


def _family_sends(target: ChannelTarget, ids: list[int]) -> list[OutboundMessage]:
    return list(OutboundMessage.objects.filter(target=target, operation="send", incident_id__in=ids))


def test_a_not_ready_node_is_the_one_incident_its_workloads_fold_into(engine, restart_rule, targets, chat,  # type: ignore[no-untyped-def]
                                                                      settings) -> None:
    settings.AIOPS_RESOLVE_AFTER = 2
    sandbox = engine.sandbox
    sandbox.reset("empty")
    crowd = sandbox.crowd_node(3, replicas=2, node=NODE)
    sandbox.fault("not_ready_node", NODE)
    sandbox.tick()
    correlated = _count("aiops_incidents_correlated_total", cause="not_ready_node")
    deferred = _count("aiops_runs_deferred_to_parent_total")
    revisions = _count("aiops_chat_family_revisions_total")

    assert poll(engine.cluster).outcome == "ok"
    assert _count("aiops_incidents_correlated_total", cause="not_ready_node") - correlated == 3
    parent = Incident.objects.get(workload_kind="Node", workload_name=NODE)
    children = list(Incident.objects.filter(parent=parent).order_by("namespace", "workload_name"))
    assert [f"{c.namespace}/{c.workload_name}" for c in children] == crowd["deployments"]
    assert Incident.objects.count() == 4  # one parent, three children, nothing else
    assert {c.primary_type for c in children} == {"replication_failure"}
    assert all(c.correlation["cause"] == "not_ready_node" and c.correlation["node"] == NODE for c in children)
    assert sorted(parent.children.values_list("pk", flat=True)) == [c.pk for c in children]  # linked both ways
    for child in children:
        assert child.events.filter(kind="correlated").exists()
        assert child.no_run_reason["code"] == "correlated", child.no_run_reason
        assert not PlaybookRun.objects.filter(incident=child).exists()

    # One message per target, naming the three workloads.
    ids = [parent.pk, *(c.pk for c in children)]
    for target in targets.values():
        sent = _family_sends(target, ids)
        assert len(sent) == 1 and sent[0].incident_id == parent.pk, [(m.incident_id, m.text[:80]) for m in sent]
        assert "3 workloads affected" in sent[0].text, sent[0].text
        for child in children:
            assert child.workload_name in sent[0].text
    slack = wait_for(lambda: chat.slack.channel_messages("C0CORRELATE"), message="the Slack message")
    assert len(slack) == 1 and "3 workloads affected" in slack[0]["text"]

    # The node's run asks to cordon and drain; meanwhile the children ask for nothing, poll after poll.
    node_run = PlaybookRun.objects.get(incident=parent)
    assert node_run.playbook_name == "node_not_ready_remediation"
    approved = []

    def approve_next() -> bool:
        node_run.refresh_from_db()
        if node_run.state == "finished":
            return True
        waiting = StepRun.objects.filter(run=node_run, state="waiting_approval").select_related("approval").first()
        if waiting is not None:
            assert _restart_requests() == 0
            assert poll(engine.cluster).outcome == "ok"
            assert _restart_requests() == 0 and not PlaybookRun.objects.filter(incident__in=children).exists()
            decide_approval(waiting.approval.pk, engine.approvers.alice, "approve", "drain it")
            approved.append(waiting.tool)
        return False

    wait_for(approve_next, timeout=120, interval=0.3, message="the node's run to finish")
    assert approved == ["cordon_node", "drain_node"], approved
    assert _restart_requests() == 0
    assert _count("aiops_runs_deferred_to_parent_total") - deferred >= 3  # each child, at least once

    # The drain moved the pods to the spare node: the children resolve on their own.
    sandbox.tick()
    for _ in range(3):
        poll(engine.cluster)
    for child in children:
        child.refresh_from_db()
        assert child.state == "resolved", list(child.events.values_list("kind", "message"))
        assert not PlaybookRun.objects.filter(incident=child).exists()
    assert _restart_requests() == 0
    # No message about a child of its own, ever: their recovery edits the parent's message.
    for target in targets.values():
        assert not OutboundMessage.objects.filter(target=target, incident_id__in=ids[1:]).exists()
        opened = OutboundMessage.objects.filter(target=target, operation="send", dedupe_key__startswith="incident_opened:")
        assert opened.count() == 1
    assert "3 recovered" in wait_for(lambda: "3 recovered" in chat.slack.channel_messages("C0CORRELATE")[0]["text"]
                                     and chat.slack.channel_messages("C0CORRELATE")[0]["text"], message="the edit")
    assert _count("aiops_chat_family_revisions_total") - revisions >= 2  # per target: linked, then recovered


def test_a_child_still_failing_after_its_parents_run_starts_its_own(engine, restart_rule, targets) -> None:  # type: ignore[no-untyped-def]
    """When the parent's run ends and a child is still failing, its rule runs as if it had just opened."""
    sandbox = engine.sandbox
    sandbox.reset("empty")
    sandbox.crowd_node(1, replicas=1, node=NODE, spare_nodes=0)  # nowhere to drain to: the workload stays down
    sandbox.fault("not_ready_node", NODE)
    sandbox.tick()
    poll(engine.cluster)
    parent = Incident.objects.get(workload_kind="Node")
    child = Incident.objects.get(parent=parent)
    node_run = PlaybookRun.objects.get(incident=parent)
    from playbooks.engine import cancel_run

    cancel_run(node_run.pk, by="test")
    wait_for(lambda: PlaybookRun.objects.get(pk=node_run.pk).state == "finished", message="the node's run to end")
    assert poll(engine.cluster).outcome == "ok"
    run = wait_for(lambda: PlaybookRun.objects.filter(incident=child).first(), message="the child's own run")
    assert run.playbook_name == "restart_unavailable"
    wait_for(_restart_requests, timeout=60, message="the child's restart request")


@pytest.mark.django_db(transaction=True)
def test_the_console_shows_the_family_both_ways(engine, live_server, monkeypatch, settings) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect, sync_playwright

    from channels.startup import ensure_console_feed
    from tests.channels import browser as browser_tools

    settings.AIOPS_STORM_THRESHOLD = 2  # four incidents at once: a storm, so the feed shows its summary too
    ensure_console_feed()
    sandbox = engine.sandbox
    sandbox.reset("empty")
    sandbox.crowd_node(3, replicas=2, node=NODE)
    sandbox.fault("not_ready_node", NODE)
    sandbox.tick()
    poll(engine.cluster)
    parent = Incident.objects.get(workload_kind="Node")
    child = Incident.objects.filter(parent=parent).order_by("workload_name").first()
    assert child is not None

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop in this thread
    expect.set_options(timeout=30_000)  # a loaded 2-core machine: pages may take seconds, not a failure
    with sync_playwright() as playwright:
        browser = browser_tools.launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(f"{live_server.url}/console/login/")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "x")
            page.click("button[type=submit]")

            page.goto(f"{live_server.url}/console/incidents/{child.pk}")
            link = page.locator(".family.child-of a")
            expect(link).to_contain_text(f"{NODE}'s incident #{parent.pk}")
            expect(page.locator(".family.child-of")).to_contain_text("which is not ready")
            expect(page.locator("ol.timeline li[data-kind='Linked']")).to_contain_text(f"child of incident #{parent.pk}")
            expect(page.locator(".no-run")).to_contain_text("waits for run")
            browser_tools.check_page(page, "incident-child")
            link.click()
            expect(page).to_have_url(f"{live_server.url}/console/incidents/{parent.pk}")
            children = page.locator(".family.children")
            expect(children).to_contain_text("3 workloads affected by this incident")
            expect(children.locator("li")).to_have_count(3)
            expect(children).to_contain_text(f"Deployment {child.namespace}/{child.workload_name}")
            browser_tools.check_page(page, "incident-parent")
            for text in (page.inner_text("main"),):
                assert "{'" not in text and "None" not in text and "<" not in text

            # The feed: the node's incident with its workloads, and the storm's one summary.
            page.goto(f"{live_server.url}/console/notifications")
            feed = page.locator("main")
            expect(feed).to_contain_text("3 workloads affected")
            expect(feed).to_contain_text("Incident storm on cluster sandbox: 4 incidents opened")
            expect(feed).to_contain_text(f"Likely common cause: incident #{parent.pk}")
            browser_tools.check_page(page, "feed-storm")
            text = page.inner_text("main")
            assert "{'" not in text and "None" not in text and "**" not in text
        finally:
            browser.close()
            expect.set_options(timeout=5_000)  # Playwright's default, for the tests after this one
