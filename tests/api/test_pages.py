"""The API's pages in a real browser under the site's CSP: the Swagger UI docs render the schema,
and the console's API tokens page creates a token (shown once), lists it and revokes it."""

from __future__ import annotations

from typing import Any

import pytest

from api.models import ApiToken, digest
from tests.channels import browser as browser_tools

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _watch_csp(page: Any, violations: list[str]) -> None:
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text else None)


def test_the_docs_render_in_chromium_under_the_csp(live_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    violations: list[str] = []
    with sync_playwright() as playwright:
        browser = browser_tools.launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            _watch_csp(page, violations)
            response = page.goto(f"{live_server.url}/api/v1/docs/")
            assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("AIOps agent API", timeout=30_000)
            expect(page.locator(".opblock-summary-path").first).to_be_visible()
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("/api/v1/approvals/{id}/decide/" in p.replace("\u200b", "") for p in paths)
            browser_tools.ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(browser_tools.ARTIFACTS / "api-docs-desktop.png"), full_page=False)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(browser_tools.ARTIFACTS / "api-docs-phone.png"), full_page=False)
        finally:
            browser.close()
    assert violations == [], violations


def test_a_person_creates_and_revokes_a_token_in_the_console(live_server, approvers, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    violations: list[str] = []
    with sync_playwright() as playwright:
        browser = browser_tools.launch(playwright)
        try:
            page = browser.new_page()
            _watch_csp(page, violations)
            page.goto(f"{live_server.url}/console/login/?next=/console/tokens")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "x")
            page.click("button[type=submit]")
            page.click("text=API tokens")
            page.fill("input[name=name]", "ci pipeline")
            page.check("input[value=decide]")
            page.click("text=Create token")
            clear = page.locator("#new-token").inner_text().strip()
            token = ApiToken.objects.get(user=approvers.alice)
            assert token.digest == digest(clear) and token.scopes == ["decide", "read"]
            expect(page.locator("table")).to_contain_text("ci pipeline")
            browser_tools.check_page(page, "console-api-tokens")
            page.goto(f"{live_server.url}/console/tokens")  # shown once: not on the next visit
            assert clear not in page.content()
            page.click("button.reject")
            expect(page.locator(".flash.success")).to_contain_text(f"Revoked token {token.prefix}")
            token.refresh_from_db()
            assert token.state == "revoked"
        finally:
            browser.close()
    assert violations == [], violations


def test_bad_token_requests_in_the_console_are_refused_with_the_reason(client, approvers) -> None:  # type: ignore[no-untyped-def]
    client.force_login(approvers.carol)
    refused = client.post("/console/tokens", {"name": "x", "scopes": ["root"], "days": "30"})
    assert refused.status_code == 400 and "scopes must be some of read, decide, write, admin" in refused.content.decode()
    too_long = client.post("/console/tokens", {"name": "x", "scopes": ["read"], "days": "9999"})
    assert too_long.status_code == 400 and "1 to 365 days" in too_long.content.decode()
    assert not ApiToken.objects.exists()
    other = ApiToken.issue(approvers.alice, "alice's", ["read"], 5)[0]
    assert client.post(f"/console/tokens/{other.pk}/revoke").status_code == 404  # only one's own


def test_an_admin_issues_a_token_for_someone_and_sees_it_once(client, approvers) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import User

    root = User.objects.create_superuser("root", password="x")
    client.force_login(root)
    response = client.post("/admin/api/apitoken/add/", {"user": approvers.bob.pk, "name": "status page",
                                                        "scopes": ["read"], "days": "30"}, follow=True)
    assert response.status_code == 200
    token = ApiToken.objects.get(user=approvers.bob)
    shown = [str(m) for m in response.context["messages"]]
    assert any(f"aiops_{token.prefix}_" in m and "shown only this once" in m for m in shown)
    listing = client.get("/admin/api/apitoken/").content.decode()
    assert token.prefix in listing and f"aiops_{token.prefix}_" not in listing
    client.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.state == "revoked"
