"""From a sandbox fault to a decision in chat and in the web console, through the real engine:
sandbox -> poll -> incident -> playbook run -> approval -> outbox -> platform fakes -> a press
-> the action on the sandbox -> verify -> the incident resolves."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from agents.models import Approval
from channels.models import ChannelTarget, Identity, MessageState, OutboundMessage
from playbooks.models import Incident, PlaybookRun, StepRun
from playbooks.services.poll import poll
from tests.channels import browser as browser_tools
from tests.channels import platforms
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration]

TG_CHAT, SLACK_CHANNEL, DISCORD_CHANNEL = "-1009876", "C0PAYMENTS", "334455667788990011"


def _approval_for(workload: str) -> Approval:
    def waiting() -> StepRun | None:
        return StepRun.objects.filter(run__incident__workload_name=workload, state="waiting_approval") \
            .select_related("approval").first()

    return wait_for(waiting, timeout=60, message=f"the {workload} run to ask for an approval").approval


def _with_code(messages: list[dict[str, Any]], code: str, field: str = "text") -> dict[str, Any]:
    return next(m for m in messages if code in m[field])


@pytest.fixture
def chat_setup(engine, chat):  # type: ignore[no-untyped-def]
    # One fault instead of the demo's three: one run to wait for. The cart's crash loop (a Go
    # panic in every pod) is one the seeded playbook acts on, with the whole workload's restart;
    # the demo's ledger (a refused database) it rightly hands off to people without asking.
    engine.sandbox.clear("payments/ledger")
    engine.sandbox.clear("data/report-builder")
    engine.sandbox.clear("node-4")
    engine.sandbox.fault("crash_loop", "shop/cart")
    engine.sandbox.tick()
    alice, carol = engine.approvers.alice, engine.approvers.carol
    Identity.objects.create(platform="telegram", platform_user_id="5001", user=alice)
    Identity.objects.create(platform="discord", platform_user_id="6003", user=carol)
    for name, kind, address in (("tg", "telegram", TG_CHAT), ("slack", "slack", SLACK_CHANNEL),
                                ("discord", "discord", DISCORD_CHANNEL)):
        ChannelTarget.objects.create(name=name, kind=kind, address=address, namespace_regex="shop")
    return engine


@pytest.mark.django_db(transaction=True)
def test_a_sandbox_fault_reaches_every_platform_and_approving_it_in_the_console_resolves_it(
    chat_setup, chat, client, live_server, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from channels.startup import ensure_console_feed

    engine = chat_setup
    ensure_console_feed()  # as `make run` does: the console's feed is a target too
    poll(engine.cluster)
    approval = _approval_for("cart")  # crash_loop_remediation: every pod fails -> restart_workload
    assert (approval.tool, approval.arguments["kind"], approval.arguments["name"]) == ("restart_workload", "Deployment", "cart")
    incident = Incident.objects.get(workload_name="cart", state="open")
    assert incident.rca_report["failure_class"] == "app_crash"  # what the restart follows from
    wait_for(lambda: OutboundMessage.objects.filter(approval_id=approval.pk, state=MessageState.DELIVERED).count() == 4,
             message="the approval on all three platforms and the console's feed")

    # Routing: the incident and its approval reached the shop targets, with buttons each.
    assert any(f"Incident #{incident.pk} crash-looping: Deployment shop/cart" in m["text"]
               for m in chat.telegram.chat_messages(TG_CHAT))
    tg = _with_code(chat.telegram.chat_messages(TG_CHAT), approval.code)
    assert tg["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == f"apv:{approval.pk}:approve"
    assert _with_code(chat.slack.channel_messages(SLACK_CHANNEL), approval.code)["blocks"][1]["type"] == "actions"
    dc = _with_code(chat.discord.channel_messages(DISCORD_CHANNEL), approval.code, "content")

    # carol (not an approver) presses Approve on Discord: refused, only she sees why.
    refused = platforms.discord_press(client, chat, dc, f"apv:{approval.pk}:approve", user="6003").json()
    assert refused["data"]["flags"] == 64 and "may not decide" in refused["data"]["content"]
    assert Approval.objects.get(pk=approval.pk).state == "pending"

    # alice signs in to the console, sees the pending approval and approves it; the engine
    # restarts the deployment, verifies, and the page shows the incident resolved.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop in this thread
    with sync_playwright() as playwright:
        browser = browser_tools.launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{live_server.url}/")  # the address `make run` prints
            expect(page).to_have_url(f"{live_server.url}/console/login/?next=/console/")
            browser_tools.check_page(page, "login")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "x")
            page.click("button[type=submit]")

            # The fault is in the incidents list, its approval in the pending ones.
            row = page.locator(f"tr.incident[data-id='{incident.pk}']")
            expect(row).to_have_attribute("data-state", "open")
            expect(row).to_contain_text("Crash-looping: Deployment shop/cart")
            expect(page.locator(f".pending-approval[data-code='{approval.code}']")).to_contain_text("Restart every pod of the Deployment shop/cart")
            browser_tools.check_page(page, "incidents")

            # The chat box answers in place, keeping the reply's line breaks.
            page.fill("#chat-text", "/help")
            page.press("#chat-text", "Enter")
            reply = page.locator("#transcript .line.aiops .text").last
            expect(reply).to_contain_text("/incident list")
            assert reply.locator("br").count() >= 5
            expect(page.locator("#chat-text")).to_have_value("")

            # Open the incident and approve inline; the page is never reloaded.
            row.locator("td.what a").click()
            expect(page).to_have_url(f"{live_server.url}/console/incidents/{incident.pk}")
            page.evaluate("window.walkMarker = 'same page'")  # a reload would lose it
            waiting = page.locator(f".waiting-approval[data-code='{approval.code}']")
            expect(waiting).to_contain_text("Restart every pod of the Deployment shop/cart")
            timeline = page.locator("ol.timeline")
            expect(timeline.locator("li[data-kind='Approval requested']")).to_contain_text(approval.code)
            browser_tools.check_page(page, "incident-waiting")
            waiting.locator("button.approve").click()
            expect(page.locator(".flash.success")).to_contain_text(f"Approved {approval.code}")
            expect(timeline.locator("li[data-kind='Approved']")).to_contain_text("by alice", timeout=30_000)
            expect(timeline.locator("li[data-kind='Action']")).to_contain_text("Restart every pod of the Deployment shop/cart", timeout=90_000)
            expect(timeline.locator("li[data-kind='Action']")).to_contain_text(": done", timeout=90_000)
            expect(timeline.locator("li[data-kind='Verification']")).to_contain_text("done", timeout=90_000)
            expect(timeline.locator("li[data-kind='Resolved']")).to_have_count(1, timeout=90_000)
            expect(page.locator(".incident-head .incident-state")).to_contain_text("resolved")
            expect(page.locator(".report .class")).not_to_be_empty()
            # The log evidence is an excerpt: the matching line highlighted among its neighbours.
            excerpt = page.locator(".report pre.log").first
            expect(excerpt.locator("span.hit")).to_have_count(1)
            assert excerpt.locator(":scope > span").count() > 1
            assert page.evaluate("window.walkMarker") == "same page"
            browser_tools.check_page(page, "incident-resolved")

            page.goto(f"{live_server.url}/console/notifications")
            expect(page.locator(".feed-item").first).to_be_visible()
            browser_tools.check_page(page, "notifications")

            # The admin's pages of the run and its playbook fit the screen: JSON pretty and collapsed.
            User.objects.create_superuser("root", password="root-pw-123")
            admin = browser.new_page(viewport={"width": 1440, "height": 900})
            admin.goto(f"{live_server.url}/admin/login/")
            admin.fill("input[name=username]", "root")
            admin.fill("input[name=password]", "root-pw-123")
            admin.click("input[type=submit]")
            run = PlaybookRun.objects.get(incident=incident)
            for name, url in (("admin-run", f"/admin/playbooks/playbookrun/{run.pk}/change/"),
                              ("admin-playbook", f"/admin/playbooks/playbook/{run.playbook_id}/change/"),
                              ("admin-messages", "/admin/channels/outboundmessage/")):
                admin.goto(f"{live_server.url}{url}")
                admin.wait_for_load_state("load")
                admin.screenshot(path=str(browser_tools.ARTIFACTS / f"{name}-desktop.png"), full_page=True)
                overflow = admin.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{url} is {overflow}px wider than the screen"
            expect(admin.locator("td.field-text_start").first).not_to_be_empty()
        finally:
            browser.close()
    run = PlaybookRun.objects.get(incident=incident)
    assert (run.state, run.outcome) == ("finished", "resolved")
    assert Approval.objects.get(pk=approval.pk).decided_by == engine.approvers.alice

    # Every platform's copy now says who decided, without buttons; the resolution is announced.
    wait_for(lambda: "Approved by alice" in chat.telegram.message(TG_CHAT, tg["message_id"])["text"]
             and "Approved by alice" in chat.discord.messages[dc["id"]]["content"],
             message="the approval messages to show the decision")
    assert "reply_markup" not in chat.telegram.message(TG_CHAT, tg["message_id"])
    # ... and so does the console's copy (an edit delivered like every other platform's).
    wait_for(lambda: OutboundMessage.objects.filter(approval_id=approval.pk, kind="web", operation="edit",
                                                    state=MessageState.DELIVERED).exists(),
             message="the console's copy of the approval to be edited")
    assert "Approved by alice" in OutboundMessage.objects.get(approval_id=approval.pk, kind="web", operation="edit").text
    wait_for(lambda: any(f"Resolved: incident #{incident.pk}" in m["text"] for m in chat.telegram.chat_messages(TG_CHAT)),
             message="the resolution in Telegram")


def test_k8s_reads_run_as_tasks_through_the_tools_and_come_back_as_tables(chat_setup, chat, client) -> None:  # type: ignore[no-untyped-def]
    assert platforms.telegram_message(client, "/k8s pods payments", user_id=5001, chat_id=int(TG_CHAT)).status_code == 200
    reply = wait_for(lambda: next((m for m in chat.telegram.chat_messages(TG_CHAT) if "list_pods" in m["text"]), None),
                     message="the pod list in Telegram")
    assert "namespace=payments" in reply["text"] and "<pre>" in reply["text"] and "ledger-" in reply["text"]
    from agents.models import AuditEntry

    call = AuditEntry.objects.get(action="tool_call", tool="list_pods")
    assert (call.actor, call.outcome, call.arguments) == ("telegram:alice", "ok", {"namespace": "payments"})

    platforms.telegram_message(client, "/k8s logs payments/nonexistent-pod", user_id=5001, chat_id=int(TG_CHAT))
    failed = wait_for(lambda: next((m for m in chat.telegram.chat_messages(TG_CHAT) if "get_pod_logs" in m["text"]), None),
                      message="the failed log read in Telegram")
    assert "failed" in failed["text"]
