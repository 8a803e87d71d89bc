"""Everything a person reads, rendered from awkward but real data (nulls in reports, dicts in
arguments and tables, node and alert incidents, an image-pull error quoted everywhere), and
scanned for what must never reach a person: `{'`, `['`, `None`, `Node//`.

The outbox rows every other test writes are scanned too (tests/plugins/texts.py); here every
kind of message, command reply and console page is produced on purpose."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agents.models import Approval, arguments_digest
from channels import messages
from channels.commands import format_result
from channels.models import ChannelTarget, OutboundMessage
from channels.startup import ensure_console_feed
from channels.telegram.formatting import to_html as telegram_html
from channels.web.formatting import to_html as web_html
from k8s.models import Cluster
from playbooks.models import ClusterEvent, PlaybookRun, StepRun
from tests.plugins.texts import unreadable

pytestmark = pytest.mark.django_db

# As a kubelet words it: the container status and the event quote the registry with their own
# prefixes and endings (see k8s/sandbox/kubelet.py).
IMAGE = "registry.local/shop/cart:9.9"
REGISTRY_ERROR = (f'failed to pull and unpack image "{IMAGE}": failed to resolve reference "{IMAGE}": '
                  f"{IMAGE}: not found")
EVENT = (f'Failed to pull image "{IMAGE}": rpc error: code = NotFound desc = failed to pull and unpack image '
         f'"{IMAGE}": not found')

AWKWARD_REPORT: dict[str, Any] = {
    "root_cause": f"Container app cannot pull its image {IMAGE}: {REGISTRY_ERROR}",
    "failure_class": "image_pull_error",
    "confidence": 0.9,
    "evidence": [
        {"source": "status", "field": "status.containerStatuses[0].state.waiting.reason",
         "detail": f"ErrImagePull: {REGISTRY_ERROR}"},
        {"source": "event", "detail": f"Failed: {EVENT}", "count": 4},
        {"source": "log", "line": 3, "detail": "ERROR upstream answered 502", "pattern": "error",
         "excerpt": {"first": 1, "lines": ["starting", "connecting to db", "ERROR upstream answered 502"]}},
        {"source": "node", "detail": None},
    ],
    "recommended_actions": [
        {"action": "Fix the image tag of Deployment shop/cart", "playbook": None},
        {"action": "Roll back", "playbook": "deployment_rollback"},
        "Tell the team",
        {"description": "an old-style action"},
    ],
    "related_resources": ["Deployment/shop/cart", None],
    "method": "llm", "model": "tiny", "note": None,
}


@pytest.fixture
def world(make_incident, no_playbooks, approvers) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Incidents of every shape, with runs, steps, approvals, events and messages."""
    cluster = Cluster.objects.create(name="prod", in_cluster=True)
    now = timezone.now()
    image = make_incident(cluster=cluster, workload_name="cart", primary_type="image_pull_failure",
                          finding_types=["image_pull_failure", "replication_failure"], severity="warning",
                          affected_pods=["cart-7f-abcde", "cart-7f-fghij"], rca_report=AWKWARD_REPORT,
                          title=f"Container app of pod shop/cart-7f-abcde cannot pull image: {REGISTRY_ERROR}",
                          evidence={"image_pull_failure": {"container": "app", "reason": "ErrImagePull",
                                                           "waiting_message": REGISTRY_ERROR, "restart_count": None,
                                                           "seen_on": ["Pod/shop/cart-7f-abcde"]}})
    node = make_incident(cluster=cluster, workload_kind="Node", namespace="", workload_name="node-4",
                         primary_type="not_ready_node", finding_types=["not_ready_node"], affected_pods=[],
                         evidence={"not_ready_node": {"conditions": {"Ready": "Unknown"}, "taints": None}},
                         title="Node node-4 is NotReady")
    alert = make_incident(source="alertmanager", alertname="KubeQuotaExceeded", fingerprint="c0ffee", workload_kind="",
                          namespace="", workload_name="", primary_type="", finding_types=[], affected_pods=[],
                          title="", alerts={"c0ffee": "KubeQuotaExceeded"}, evidence={"KubeQuotaExceeded": {"labels": {}}})
    for incident in (image, node, alert):
        ClusterEvent.objects.create(incident=incident, cluster=incident.cluster, kind="detected",
                                    finding_type=incident.primary_type, alertname=incident.alertname,
                                    message=incident.title, data={"raw": {"a": None}})
    ClusterEvent.objects.create(incident=alert, kind="alert_fired", alertname="KubeQuotaExceeded", message="")

    approval = Approval.objects.create(
        tool="rollback_deployment", arguments={"namespace": "shop", "name": "cart", "revision": None},
        arguments_digest=arguments_digest("rollback_deployment", {"namespace": "shop", "name": "cart"}),
        risk="MEDIUM", reason="run 1 step 3 (rollback) for incident #1", origin="playbook",
        expires_at=now + timedelta(minutes=10),
    )
    decided = Approval.objects.create(
        tool="cordon_node", arguments={"name": "node-4", "extra": {"k": [1, None]}},
        arguments_digest=arguments_digest("cordon_node", {"name": "node-4"}), risk="HIGH", reason="node down",
        origin="playbook", expires_at=now + timedelta(minutes=10), state="rejected", decided_by=approvers.alice,
        decided_at=now, decision_reason="not now",
    )
    run = PlaybookRun.objects.create(incident=image, cluster=cluster, playbook_name="deployment_rollback",
                                     state="waiting_approval", started_at=now)
    steps = [
        ("describe", "tool", "describe_deployment", "succeeded", "LOW", '{"replicas": 2, "image": null}', None),
        ("root cause", "rca", "", "succeeded", "", f"image_pull_error: The image cannot be pulled: {REGISTRY_ERROR}", None),
        ("rollback", "tool", "rollback_deployment", "waiting_approval", "MEDIUM", "", approval),
        ("verify", "verify", "", "pending", "", "", None),
    ]
    for order, (name, kind, tool, state, risk, output, step_approval) in enumerate(steps, start=1):
        StepRun.objects.create(run=run, order=order, name=name, kind=kind, tool=tool, state=state, risk=risk,
                               rendered_args={"namespace": "shop", "name": "cart", "revision": None} if tool else None,
                               output=output, approval=step_approval, started_at=now, finished_at=now)
    node_run = PlaybookRun.objects.create(
        incident=node, cluster=cluster, playbook_name="node_not_ready_remediation", state="finished",
        outcome="mitigated", finished_at=now, started_at=now,
        summary="node node-4 not Ready; its workloads run healthy elsewhere (Deployment/shop/web)")
    StepRun.objects.create(run=node_run, order=1, name="cordon", kind="tool", tool="cordon_node", state="rejected",
                           risk="HIGH", rendered_args={"name": "node-4"}, approval=decided, finished_at=now)
    StepRun.objects.create(run=node_run, order=2, name="verify", kind="verify", state="succeeded",
                           output="Node//node-4: no findings", finished_at=now)
    # A step its condition skipped was never rendered: its arguments are still templates.
    StepRun.objects.create(run=node_run, order=3, name="restart_pod", kind="tool", tool="restart_pod", state="skipped",
                           risk="MEDIUM", rendered_args=None,
                           args_template={"namespace": "{{ namespace }}", "name": "{{ pod }}"},
                           output='skipped: `rca.failure_class == "app_crash"` is false', finished_at=now)
    verified = PlaybookRun.objects.create(
        incident=image, cluster=cluster, playbook_name="diagnose", state="finished", outcome="resolved",
        finished_at=now, summary=f"{image.workload_key}: no findings")
    return {"image": image, "node": node, "alert": alert, "approval": approval, "decided": decided, "run": run,
            "node_run": node_run, "verified": verified, "alice": approvers.alice}


def _clean(label: str, text: str) -> None:
    found = unreadable(text)
    assert not found, f"{label} shows {found}:\n{text[:3000]}"


def test_every_message_reads_as_words(world) -> None:  # type: ignore[no-untyped-def]
    image, node, alert = world["image"], world["node"], world["alert"]
    texts = {
        "opened image": messages.incident_opened(image),
        "opened node": messages.incident_opened(node),
        "opened alert": messages.incident_opened(alert),
        "resolved node": messages.incident_resolved(node),
        "approval": messages.approval_request(world["approval"]),
        "decided": messages.approval_decided(world["decided"]),
        "tool finished": messages.tool_finished(world["decided"], False, "conflict"),
        "rca": messages.rca_ready(image, AWKWARD_REPORT),
        "rca of nothing": messages.rca_ready(node, {}),
        "run node": messages.run_finished(world["node_run"]),
        "run verified": messages.run_finished(world["verified"]),
        "table": format_result("list_pods", {"namespace": "shop", "label": None}, True, "",
                               {"items": [{"name": "a", "ready": True, "node": None, "labels": {"app": "x"},
                                           "ports": [80, None]}]}, False),
        "failed tool": format_result("get_pod_logs", {"namespace": "shop"}, False, "pod not found", None, False),
    }
    for label, text in texts.items():
        _clean(label, text)
        _clean(f"{label} (telegram)", telegram_html(text))
    # Plain words first, the codes after; no empty path segment for a node.
    assert f"Incident #{node.pk} node not Ready: Node node-4**" in texts["opened node"]
    assert "alert KubeQuotaExceeded" in texts["opened alert"]
    assert texts["approval"].startswith("🔐 **Approval needed: Roll back the deployment shop/cart** (MEDIUM risk)")
    # The registry's error is said once in the RCA, not once per piece of evidence.
    assert texts["rca"].count("failed to pull and unpack") == 1, texts["rca"]
    assert "- Fix the image tag of Deployment shop/cart\n" in texts["rca"] + "\n"
    assert "(playbook `deployment_rollback`)" in texts["rca"] and "an old-style action" in texts["rca"]
    # A run summary does not repeat the workload its title names.
    assert "Deployment/shop/cart: no findings" not in texts["run verified"]
    assert texts["run verified"].endswith("\nno findings")


def test_every_command_reply_and_console_page_reads_as_words(client, world) -> None:  # type: ignore[no-untyped-def]
    alice = world["alice"]
    ensure_console_feed()
    ChannelTarget.objects.filter(kind="web").update(min_severity="info")
    from playbooks.signals import incident_opened, rca_ready

    for incident in (world["image"], world["node"], world["alert"]):
        incident_opened.send(sender=type(incident), incident=incident)
    rca_ready.send(sender=PlaybookRun, incident=world["image"], report=AWKWARD_REPORT, run=world["run"])
    client.force_login(alice)
    for command in ("/help", "/incident list", f"/incident show {world['image'].pk}", f"/incident show {world['node'].pk}",
                    f"/incident show {world['alert'].pk}", "/approval list", "/alert list", "/whoami", "/nonsense",
                    "/k8s scale shop/cart many"):
        assert client.post("/console/chat", {"text": command}).status_code == 302
    replies = OutboundMessage.objects.filter(kind="web").exclude(address="feed")
    assert replies.count() >= 10
    for reply in replies:
        _clean(f"reply {reply.text[:40]!r}", reply.text)
        _clean(f"reply {reply.text[:40]!r} (web)", web_html(reply.text))

    pages = {
        "login": "/console/login/",
        "home": "/console/",
        "filtered": "/console/?state=open&severity=warning&cluster=prod&namespace=shop&type=image_pull_failure&q=cart",
        "approvals": "/console/approvals",
        "incidents": "/console/incidents?page=2",
        "feed": "/console/notifications",
        "chat": "/console/chat/messages",
        **{f"incident {key}": f"/console/incidents/{world[key].pk}" for key in ("image", "node", "alert")},
    }
    for label, url in pages.items():
        if label == "login":
            client.logout()
        response = client.get(url)
        client.force_login(alice)
        assert response.status_code == 200, (label, response.status_code)
        _clean(label, response.content.decode())

    image_page = client.get(f"/console/incidents/{world['image'].pk}").content.decode()
    # The RCA as a report: the class in words, the log line highlighted with its number.
    assert "The image cannot be pulled" in image_page and "<code>image_pull_error</code>" in image_page
    assert '<span class="hit"><span class="no">3</span>ERROR upstream answered' in image_page
    # alice may decide the waiting approval: the buttons are on the page.
    assert f'data-code="{world["approval"].code}"' in image_page and "✔ Approve" in image_page
    node_page = client.get(f"/console/incidents/{world['node'].pk}").content.decode()
    assert "Rejected Cordon the node node-4 by alice: not now" in node_page


def test_the_list_filters_searches_pages_and_refuses_bad_filters(client, world, make_incident) -> None:  # type: ignore[no-untyped-def]
    client.force_login(world["alice"])
    for n in range(30):
        make_incident(workload_name=f"batch-{n}", namespace="jobs", primary_type="failed_job",
                      finding_types=["failed_job"], severity="info")
    page = client.get("/console/?namespace=jobs").content.decode()
    assert "Page 1 of 2 (30 incidents)" in page and page.count('class="incident"') == 25
    second = client.get("/console/incidents?namespace=jobs&page=2").content.decode()
    assert second.count('class="incident"') == 5
    found = client.get("/console/incidents?q=CART").content.decode()
    assert f'data-id="{world["image"].pk}"' in found and found.count('class="incident"') == 1
    by_source = client.get("/console/incidents?source=alertmanager").content.decode()
    assert f'data-id="{world["alert"].pk}"' in by_source and by_source.count('class="incident"') == 1
    by_type = client.get("/console/incidents?type=replication_failure").content.decode()
    assert f'data-id="{world["image"].pk}"' in by_type
    refused = client.get("/console/?state=maybe")
    assert refused.status_code == 400 and "state must be one of open, resolved; not 'maybe'" in refused.content.decode()
    # A live region asked again with what it shows gets 204: htmx leaves the page alone.
    partial = client.get("/console/incidents?namespace=jobs", HTTP_HX_REQUEST="true").content.decode()
    digest = partial.split("v=", 1)[1].split('"', 1)[0]
    again = client.get(f"/console/incidents?namespace=jobs&page=1&v={digest}", HTTP_HX_REQUEST="true")
    assert again.status_code == 204


def test_root_goes_to_the_console_and_actions_need_an_approver(client, world) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/").url == "/console/"
    assert client.get("/console/").url == "/console/login/?next=/console/"
    carol = world["alice"].__class__.objects.get(username="carol")
    client.force_login(carol)
    refused = client.post(f"/console/incidents/{world['image'].pk}/close", HTTP_HX_REQUEST="true")
    assert "Refused: carol may not close incident" in refused.content.decode()
    client.force_login(world["alice"])
    closed = client.post(f"/console/incidents/{world['image'].pk}/close", {"reason": "known issue"},
                         HTTP_HX_REQUEST="true")
    assert f"Closed incident #{world['image'].pk} (known issue)." in closed.content.decode()
    assert closed["HX-Trigger"] == "console-refresh"
    world["image"].refresh_from_db()
    assert world["image"].state == "resolved"


def test_the_notification_feed_is_paged_newest_first(client, world) -> None:  # type: ignore[no-untyped-def]
    for n in range(35):
        OutboundMessage.objects.create(kind="web", address="feed", text=f"note number {n:02d}", state="delivered")
    client.force_login(world["alice"])
    first = client.get("/console/notifications").content.decode()
    assert first.count('class="feed-item"') == 30 and "Page 1 of 2" in first
    assert first.index("note number 34") < first.index("note number 33")  # newest first
    second = client.get("/console/notifications?page=2").content.decode()
    assert second.count('class="feed-item"') == 5 and "note number 00" in second
    assert client.get("/console/notifications?page=oops").status_code == 200  # the first page, not an error


def test_a_proposed_playbook_can_be_started_only_by_an_approver(client, world) -> None:  # type: ignore[no-untyped-def]
    proposed = PlaybookRun.objects.create(incident=world["node"], cluster=world["node"].cluster,
                                          playbook_name="node_not_ready_remediation", state="proposed")
    url = f"/console/incidents/{world['node'].pk}"
    client.force_login(world["alice"].__class__.objects.get(username="carol"))
    page = client.get(url).content.decode()
    assert "Start playbook" not in page and "Approvers can close this incident" in page
    refused = client.post(f"/console/runs/{proposed.pk}/start", HTTP_HX_REQUEST="true").content.decode()
    assert "carol may not start playbooks" in refused
    client.force_login(world["alice"])
    page = client.get(url).content.decode()
    assert "▶ Start playbook node_not_ready_remediation" in page and "waits for a person to start it" in page
    finished = client.post(f"/console/runs/{world['node_run'].pk}/start", HTTP_HX_REQUEST="true").content.decode()
    assert "is not waiting to be started" in finished
