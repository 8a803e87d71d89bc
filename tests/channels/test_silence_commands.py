"""`/silence` on every platform (signed as each platform signs) and in the console: create, list,
expire; clear reasons for bad input; and the console's pages in a real browser."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from channels.models import Identity, OutboundMessage
from playbooks.models import Incident, MaintenanceWindow, Silence
from tests.channels import platforms
from tests.plugins.texts import unreadable

pytestmark = pytest.mark.django_db

CHANNEL = "C0OPS"


@pytest.fixture
def people(approvers):  # type: ignore[no-untyped-def]
    for user, number in ((approvers.alice, "1"), (approvers.carol, "3")):
        Identity.objects.create(platform="slack", platform_user_id=f"U0{user.username.upper()}", user=user)
        Identity.objects.create(platform="telegram", platform_user_id=f"500{number}", user=user)
        Identity.objects.create(platform="discord", platform_user_id=f"600{number}", user=user)
    return approvers


def _replies(before: set[int], kind: str) -> list[str]:
    return [m.text for m in OutboundMessage.objects.filter(kind=kind).exclude(pk__in=before).order_by("pk")]


def said(client: Any, text: str, user: str = "U0ALICE") -> list[str]:
    before = set(OutboundMessage.objects.values_list("pk", flat=True))
    assert platforms.slack_message(client, text, user=user, channel=CHANNEL).status_code == 200
    return _replies(before, "slack")


def test_silence_create_list_and_expire_in_slack(client, chat, people, make_incident, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    cart = make_incident(workload_name="cart")
    [created] = said(client, "!silence shop/cart 2h upgrading the cart's database")
    silence = Silence.objects.get()
    assert created.startswith(f'🔕 Silence #{silence.pk} created: namespace="shop", workload="cart", silenced by '
                              f"#{silence.pk} until ")
    assert "(upgrading the cart's database; slack:alice)" in created and "holds 1 open incident now" in created
    assert timedelta(hours=2) - (silence.ends_at - silence.starts_at) < timedelta(seconds=1)
    assert Incident.objects.get(pk=cart.pk).silenced_by == silence

    [listing] = said(client, "!silence list")
    assert listing.startswith("**Silences** (1)")
    assert f'#{silence.pk} namespace="shop", workload="cart" until ' in listing
    assert "holds 1 open incident, by slack:alice: upgrading the cart's database" in listing

    [refused] = said(client, f"!silence expire {silence.pk}", user="U0CAROL")
    assert refused == "Refused: carol may not expire silences: only approvers can."
    [expired] = said(client, f"!silence expire {silence.pk}")
    assert expired.startswith(f"Silence #{silence.pk} expired.")
    assert Incident.objects.get(pk=cart.pk).silenced_by is None
    assert said(client, "!silence list") == ["No silences are active."]
    assert said(client, f"!silence expire {silence.pk}")[0].startswith(f"Refused: silence #{silence.pk} already ended")


@pytest.mark.parametrize("command, expected", [
    ("!silence", "Usage: `/silence <namespace>/<workload> <duration> <reason>`"),
    ("!silence shop/cart 2h", "Usage: `/silence <namespace>/<workload>"),
    ("!silence cart 2h upgrade", "Give the workload as `<namespace>/<name>`, not `cart`."),
    ("!silence shop/cart soon upgrade", "'soon' is not a duration: write e.g. 30m, 2h, 1h30m or 3d."),
    ("!silence shop/cart 100d upgrade", "'100d' is longer than 90 days."),
    ('!silence namespace=~".*" 1h everything', "Refused: at least one matcher must match something other than an "
                                               "empty value"),
    ("!silence expire twelve", "Usage: `/silence expire <id>`"),
    ("!silence expire 999999", "Refused: there is no silence #999999."),
])
def test_bad_silence_commands_get_a_reason_and_silence_nothing(client, chat, people, command, expected) -> None:  # type: ignore[no-untyped-def]
    [reply] = said(client, command)
    assert reply.startswith(expected), reply
    assert not Silence.objects.exists()


def test_only_approvers_create_silences(client, chat, people) -> None:  # type: ignore[no-untyped-def]
    [reply] = said(client, "!silence shop/cart 1h nope", user="U0CAROL")
    assert reply == "Refused: carol may not create silences: only approvers can."
    assert not Silence.objects.exists()


def test_matchers_and_every_platform(client, chat, people) -> None:  # type: ignore[no-untyped-def]
    [slack] = said(client, "!silence namespace=shop,app=~web.* 30m load test")
    assert 'namespace="shop", app=~"web.*"' in slack

    before = set(OutboundMessage.objects.values_list("pk", flat=True))
    assert platforms.telegram_message(client, "/silence payments/ledger 1h30m migrating", user_id=5001).status_code == 200
    [telegram] = _replies(before, "telegram")
    assert 'namespace="payments", workload="ledger"' in telegram and "telegram:alice" in telegram

    before = set(OutboundMessage.objects.values_list("pk", flat=True))
    response = platforms.discord_command(client, chat, "silence list", user="6001", channel="700000000000000001")
    assert response.json() == {"type": 5}
    [discord] = _replies(before, "discord")
    assert discord.startswith("**Silences** (2)") and "by telegram:alice: migrating" in discord
    for text in (slack, telegram, discord):
        assert not unreadable(text)
    assert {s.created_by_name for s in Silence.objects.all()} == {"slack:alice", "telegram:alice"}


# --- the console ------------------------------------------------------------------------------


def test_console_lists_silences_and_windows_and_silences_an_incident(client, approvers, make_incident,  # type: ignore[no-untyped-def]
                                                                     no_playbooks) -> None:
    cart = make_incident(workload_name="cart")
    client.force_login(approvers.alice)
    response = client.post(f"/console/incidents/{cart.pk}/silence", {"duration": "2h", "reason": "db upgrade"})
    assert response.status_code == 302
    silence = Silence.objects.get()
    assert silence.created_by_name == "web:alice"
    page = client.get(f"/console/incidents/{cart.pk}").content.decode()
    assert f"Silenced by #{silence.pk} until " in page and "(db upgrade; web:alice)" in page
    assert f"Expire silence #{silence.pk}" in page
    listed = client.get("/console/").content.decode()
    assert f'data-id="{cart.pk}" data-state="open"' in listed and "🔕 silenced" in listed

    MaintenanceWindow.objects.create(name="weekly", namespace="shop", schedule="0 2 * * 6", duration_minutes=120,
                                     time_zone="Europe/Berlin", created_by_name="admin:alice")
    listing = client.get("/console/silences").content.decode()
    assert f"#{silence.pk}" in listing and "namespace=&quot;shop&quot;, workload=&quot;cart&quot;" in listing
    assert "web:alice" in listing and "weekly" in listing and "next Sat" in listing
    assert not unreadable(listing)

    bad = client.post("/console/silences", {"matchers": 'workload=~"("', "duration": "1h", "reason": "x"})
    assert bad.status_code == 400 and "not a valid regular expression" in bad.content.decode()
    assert client.post(f"/console/incidents/{cart.pk}/silence", {"duration": "forever"}).status_code == 400
    assert client.post("/console/silences", {"matchers": 'namespace="payments"', "duration": "30m",
                                             "reason": "migration"}).status_code == 302
    assert Silence.objects.count() == 2

    client.force_login(approvers.carol)  # not an approver: refused, nothing expired
    client.post(f"/console/silences/{silence.pk}/expire")
    assert Silence.objects.get(pk=silence.pk).ends_at > timezone.now()
    client.force_login(approvers.alice)
    client.post(f"/console/silences/{silence.pk}/expire")
    assert Silence.objects.get(pk=silence.pk).expired_by == "web:alice"


def test_admin_creates_and_expires_silences(admin_client, make_incident, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    cart = make_incident(workload_name="cart")
    bad = admin_client.post("/admin/playbooks/silence/add/", {"matchers_text": "cart", "duration": "1h", "reason": "x"})
    assert bad.status_code == 200 and "cannot read a matcher" in bad.content.decode()
    response = admin_client.post("/admin/playbooks/silence/add/",
                                 {"matchers_text": 'workload="cart"', "duration": "1h", "reason": "upgrade"})
    assert response.status_code == 302
    silence = Silence.objects.get()
    assert silence.created_by_name == "admin:admin" and Incident.objects.get(pk=cart.pk).silenced_by == silence
    listing = admin_client.get("/admin/playbooks/silence/").content.decode()
    assert "workload=&quot;cart&quot;" in listing and "admin:admin" in listing
    admin_client.post("/admin/playbooks/silence/", {"action": "expire_now", "_selected_action": [silence.pk]})
    assert Silence.objects.get(pk=silence.pk).expired_by == "admin:admin"
    bad_window = admin_client.post("/admin/playbooks/maintenancewindow/add/", {
        "name": "w", "schedule": "0 25 * * *", "duration_minutes": "60", "time_zone": "Mars/Base",
        "notifications": "mark", "enabled": "on"})
    text = bad_window.content.decode()
    assert "not a valid cron expression" in text and "not a known time zone" in text
    assert admin_client.post("/admin/playbooks/maintenancewindow/add/", {
        "name": "w", "schedule": "0 2 * * 6", "duration_minutes": "60", "time_zone": "UTC",
        "notifications": "hold", "enabled": "on"}).status_code == 302
    assert MaintenanceWindow.objects.get().created_by_name == "admin:admin"
    assert "On now / next" in admin_client.get("/admin/playbooks/maintenancewindow/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_silence_pages_in_a_real_browser(live_server, approvers, make_incident, no_playbooks, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The incident page says who silenced it and until when, the list shows silences and windows
    with who made them and when they end; both at desktop and phone widths, without a repr."""
    from playwright.sync_api import expect, sync_playwright

    from playbooks.services.silences import create_silence
    from tests.channels import browser as browser_tools

    cart = make_incident(workload_name="cart")
    now = timezone.now()
    MaintenanceWindow.objects.create(name="shop upgrade", namespace="shop", schedule=f"{now.minute} {now.hour} * * *",
                                     duration_minutes=90, time_zone="UTC", created_by_name="admin:alice",
                                     reason="monthly database upgrade")
    MaintenanceWindow.objects.create(name="weekly", schedule="0 2 * * 6", duration_minutes=120,
                                     time_zone="Europe/Berlin", notifications="hold", created_by_name="admin:bob")
    silence = create_silence(matchers_input='namespace="shop", workload="cart"', duration=timedelta(hours=2),
                             reason="upgrading the cart's database", user=approvers.alice, via="web")
    create_silence(matchers_input='namespace=~"payments|billing", app!="ledger"', starts_at=now + timedelta(hours=1),
                   ends_at=now + timedelta(hours=3), reason="migration", user=approvers.bob, via="slack")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop in this thread
    with sync_playwright() as playwright:
        browser = browser_tools.launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{live_server.url}/console/login/")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "x")
            page.click("button[type=submit]")
            page.goto(f"{live_server.url}/console/incidents/{cart.pk}")
            expect(page.locator(".silenced")).to_contain_text(f"Silenced by #{silence.pk} until ")
            expect(page.locator(".in-maintenance")).to_contain_text("In maintenance window shop upgrade")
            expect(page.locator(".timeline")).to_contain_text(f"Silenced by #{silence.pk}")
            expect(page.locator(".no-run")).to_contain_text("no notification and no run until it ends")
            assert not unreadable(page.inner_text("main"))
            browser_tools.check_page(page, "incident-silenced")

            page.goto(f"{live_server.url}/console/")
            expect(page.locator(f"tr.incident[data-id='{cart.pk}']")).to_contain_text("🔕 silenced")
            browser_tools.check_page(page, "incidents-silenced")

            page.click("header nav >> text=Silences")
            expect(page.locator(f"tr[data-silence='{silence.pk}']")).to_contain_text("web:alice")
            expect(page.locator("table.silences")).to_contain_text("⏳ from")
            expect(page.locator("table.windows")).to_contain_text("on now, until")
            assert not unreadable(page.inner_text("main"))
            browser_tools.check_page(page, "silences")

            page.click(f"tr[data-silence='{silence.pk}'] >> text=Expire now")
            expect(page.locator("#flash")).to_contain_text(f"Silence #{silence.pk} expired")
            assert Silence.objects.get(pk=silence.pk).expired_by == "web:alice"

            # Not silenced any more: the incident page offers to silence the workload.
            page.goto(f"{live_server.url}/console/incidents/{cart.pk}")
            expect(page.locator(".silence-workload")).to_contain_text("Silence this workload for")
            expect(page.locator(".timeline")).to_contain_text(f"Silence #{silence.pk} expired early by web:alice")
            browser_tools.check_page(page, "incident-silence-form")
            page.select_option("#silence-duration", "4h")
            page.fill("#silence-reason", "rolling the cart back")
            page.click(".silence-workload button")
            expect(page.locator("#flash")).to_contain_text("this workload is silenced until")
            assert Silence.objects.filter(reason="rolling the cart back", created_by_name="web:alice").exists()
        finally:
            browser.close()
