"""Finding 8's small ones of #13 (What to build 7): login throttling, audited refusals, CSP and
HSTS, Flower's password off the command line, chat requests within the tools' bounds.

Before: 30 wrong passwords in 14 s met no lockout; refusals of unknown chat users left no audit
entry; no Content-Security-Policy, no HSTS with Secure cookies; `ps` showed
`--basic-auth=flower:<password>`; `/k8s scale ns/x 500` created an approval the tool refused later.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from agents.models import Approval, AuditEntry
from channels.models import Identity, OutboundMessage
from tests.channels import platforms
from tests.conftest import ROOT, free_port, wait_for, worker_env

pytestmark = pytest.mark.django_db


def _login(client: Any, password: str, path: str = "/console/login/") -> Any:
    return client.post(path, {"username": "alice", "password": password}, REMOTE_ADDR="203.0.113.7")


def test_repeated_wrong_passwords_lock_the_user_out_and_the_lockout_is_audited(client, approvers, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 5
    for _ in range(4):
        assert _login(client, "wrong").status_code == 200  # the form again, with its error
    locked = _login(client, "wrong")
    assert locked.status_code == 429
    assert b"Too many failed sign-ins" in locked.content and b"Traceback" not in locked.content
    # Locked out: even the right password is refused now, on the admin's login as well.
    assert _login(client, "x").status_code == 429
    assert _login(client, "x", "/admin/login/").status_code == 429
    entry = AuditEntry.objects.filter(action="access_refused", actor="login:alice").first()
    assert entry is not None and entry.outcome == "refused" and "203.0.113.7" in entry.reason
    # Another address is not locked out by this one's failures.
    assert client.post("/console/login/", {"username": "alice", "password": "x"},
                       REMOTE_ADDR="198.51.100.9").status_code == 302


def test_a_success_resets_the_count(client, approvers, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 3
    _login(client, "wrong")
    _login(client, "wrong")
    assert _login(client, "x").status_code == 302
    client.logout()
    _login(client, "wrong")
    _login(client, "wrong")
    assert _login(client, "x").status_code == 302


def test_refusals_of_unknown_chat_users_are_audited(client, chat) -> None:  # type: ignore[no-untyped-def]
    assert platforms.slack_message(client, "!k8s restart shop/web", user="U0STRANGER").status_code == 200
    assert platforms.telegram_message(client, "what is broken?", user_id=777001).status_code == 200
    assert platforms.telegram_message(client, "approve ABCDEF", user_id=777001).status_code == 200
    entries = list(AuditEntry.objects.filter(action="access_refused").order_by("pk"))
    assert [e.actor for e in entries] == ["slack:U0STRANGER", "telegram:777001", "telegram:777001"]
    assert "/k8s" in entries[0].reason and "assistant" in entries[1].reason and "approve" in entries[2].reason
    assert all(e.outcome == "refused" and "no account is linked" in e.detail for e in entries)
    # /help is for everyone, and no refusal.
    platforms.slack_message(client, "!help", user="U0STRANGER")
    assert AuditEntry.objects.filter(action="access_refused").count() == 3


def test_every_page_carries_a_content_security_policy(client, approvers) -> None:  # type: ignore[no-untyped-def]
    for path in ("/console/login/", "/admin/login/", "/health"):
        policy = client.get(path)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-eval" not in policy
    assert "Strict-Transport-Security" not in client.get("/health", secure=True)  # cookies not Secure: no HSTS


def test_secure_cookies_turn_on_hsts() -> None:
    script = ("import django, os; django.setup(); from django.test import Client; "
              "r = Client().get('/health', secure=True, HTTP_HOST='127.0.0.1'); "
              "print(r.status_code, r.headers.get('Strict-Transport-Security'))")
    env = worker_env({"AIOPS_SECURE_COOKIES": "true", "DJANGO_SETTINGS_MODULE": "aiops_site.settings"})
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["200", "max-age=31536000"], out.stdout + out.stderr[-2000:]


@pytest.fixture
def scale_tools(db):  # type: ignore[no-untyped-def]
    from agents.registry import register_builtin

    return register_builtin("http://127.0.0.1:9/mcp")


def test_a_chat_request_beyond_a_tools_bounds_creates_no_approval(client, chat, approvers, scale_tools, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_MAX_SCALE_REPLICAS = 20
    Identity.objects.create(platform="slack", platform_user_id="U0ALICE", user=approvers.alice)

    def said(text: str) -> str:
        before = set(OutboundMessage.objects.values_list("pk", flat=True))
        assert platforms.slack_message(client, text, user="U0ALICE").status_code == 200
        return " ".join(m.text for m in OutboundMessage.objects.exclude(pk__in=before))

    assert "above the configured maximum of 20 (AIOPS_MAX_SCALE_REPLICAS)" in said("!k8s scale shop/web 500")
    assert "whole number" in said("!k8s scale shop/web \uff15")  # a fullwidth digit is no number to us
    assert not Approval.objects.exists()
    said("!k8s scale shop/web 20")
    assert Approval.objects.get().arguments == {"namespace": "shop", "name": "web", "replicas": 20}


def _flower_line() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("flower:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no flower line in the Procfile")


@pytest.mark.integration
def test_flowers_password_is_in_its_environment_not_its_command_line(tmp_path: Path) -> None:
    password = "flower-secret-" + os.urandom(6).hex()
    port = free_port()
    env = worker_env({"FLOWER_BASIC_AUTH": f"flower:{password}", "AIOPS_FLOWER_PORT": str(port)})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "flower.log"
    # The Procfile's line, run the way `make run` runs it (through /bin/sh).
    process = subprocess.Popen(["/bin/sh", "-c", f"exec {_flower_line()}"], cwd=ROOT, env=env,
                               stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        def answers() -> int | None:
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code
            except httpx.TransportError:
                return None

        assert wait_for(answers, timeout=90, message="Flower to answer") == 401
        assert httpx.get(f"http://127.0.0.1:{port}/workers", auth=("flower", password), timeout=10).status_code == 200
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        for proc in tree:
            assert not any(password in arg for arg in proc.cmdline()), proc.cmdline()
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_console_works_in_chromium_under_its_content_security_policy(live_server, approvers, chat, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The policy must not break the console: htmx loads, a chat message goes out and its
    answer comes back without a reload, and the browser reports no CSP violation."""
    from playwright.sync_api import expect, sync_playwright

    from tests.channels import browser as browser_tools

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop in this thread
    violations: list[str] = []
    with sync_playwright() as playwright:
        browser = browser_tools.launch(playwright)
        try:
            page = browser.new_page()
            page.on("console", lambda message: violations.append(message.text)
                    if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text else None)
            page.goto(f"{live_server.url}/console/login/")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "x")
            page.click("button[type=submit]")
            expect(page.locator("form.chat")).to_be_visible()
            assert page.evaluate("typeof htmx") == "object"
            page.evaluate("window.walkMarker = 'same page'")
            page.fill("#chat-text", "/help")
            page.press("#chat-text", "Enter")
            expect(page.locator("#transcript")).to_contain_text("/k8s restart", timeout=30_000)
            assert page.evaluate("window.walkMarker") == "same page"  # htmx swapped it in: no reload
            admin = browser.new_page()
            admin.on("console", lambda message: violations.append(message.text)
                     if "Content Security Policy" in message.text else None)
            admin.goto(f"{live_server.url}/admin/login/")
            expect(admin.locator("#id_username")).to_be_visible()
        finally:
            browser.close()
    assert violations == [], violations
