"""Approvals: who may decide, once, in time -- on real PostgreSQL and Redis, with a real
worker for the sweep and for carrying out chat/LLM approvals."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import redis
from django.db import connections
from django.utils import timezone
from prometheus_client import REGISTRY

from agents.models import Approval, AuditEntry, MCPTool
from agents.services import ApprovalError, decide_approval, request_approval, seconds_left
from agents.signals import approval_decided, approval_requested, tool_call_finished
from tests.conftest import wait_for


class Received:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, sender, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append(kwargs)


@pytest.fixture
def received():  # type: ignore[no-untyped-def]
    requested, decided = Received(), Received()
    approval_requested.connect(requested)
    approval_decided.connect(decided)
    yield requested, decided
    approval_requested.disconnect(requested)
    approval_decided.disconnect(decided)


def _redis(settings) -> redis.Redis:  # type: ignore[no-untyped-def]
    return redis.Redis.from_url(settings.REDIS_URL)


def _request(requested_by=None, tool: str = "fake__set_value", **kwargs) -> Approval:  # type: ignore[no-untyped-def]
    args = kwargs.pop("args", {"key": "k", "value": "v"})
    return request_approval(tool, args, reason="pod keeps crashing", origin=kwargs.pop("origin", "playbook"),
                            requested_by=requested_by, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_a_request_gets_a_typed_code_a_deadline_a_ttl_key_and_a_signal(fake_mcp, received, settings) -> None:  # type: ignore[no-untyped-def]
    approval = _request(origin_ref="steprun:12")
    assert len(approval.code) == 6 and approval.code.isalnum() and approval.code.isupper()
    assert not set(approval.code) & set("01OIL")
    assert approval.state == "pending" and approval.risk == "HIGH"
    assert abs((approval.expires_at - timezone.now()).total_seconds() - settings.AIOPS_APPROVAL_TTL) < 5
    ttl = _redis(settings).ttl(f"aiops:approval:{approval.pk}")
    assert settings.AIOPS_APPROVAL_TTL - 5 < ttl <= settings.AIOPS_APPROVAL_TTL
    assert received[0].calls[0]["approval"].pk == approval.pk
    assert AuditEntry.objects.get(approval=approval).action == "approval_requested"


def test_bad_requests_are_refused_and_write_nothing(fake_mcp) -> None:  # type: ignore[no-untyped-def]
    MCPTool.objects.filter(name="fake__echo").update(risk="LOW")
    cases = [
        (dict(tool="fake__echo", args={"text": "x"}), "LOW risk: it runs without an approval"),
        (dict(tool="nope"), "no enabled tool named 'nope'"),
        (dict(args={"key": 1, "value": "v"}), "arguments for fake__set_value are invalid: 1 is not of type 'string'"),
        (dict(origin="cron"), "origin 'cron' is not one of playbook, chat, llm"),
        (dict(approvers=["ghost"]), "unknown approvers: ghost"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ApprovalError, match=message):
            _request(**kwargs)
    assert not Approval.objects.exists() and not AuditEntry.objects.exists()


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("aiops_approval_decisions_refused_total", {"reason": reason}) or 0.0


def test_only_approvers_decide_and_every_refusal_is_audited(fake_mcp, approvers) -> None:  # type: ignore[no-untyped-def]
    approval = _request(requested_by=approvers.carol)
    refused_before = {reason: _refused(reason) for reason in ("not_an_approver", "already_decided")}
    with pytest.raises(ApprovalError, match="carol may not decide approval .* \\(allowed: the 'approvers' group\\)"):
        decide_approval(approval.pk, approvers.carol, "approve")
    with pytest.raises(ApprovalError, match="decision must be 'approve' or 'reject', not 'maybe'"):
        decide_approval(approval.pk, approvers.alice, "maybe")
    decided = decide_approval(approval.code.lower(), approvers.alice, "approve", "looks right")  # by its code
    assert (decided.state, decided.decided_by, decided.decision_reason) == ("approved", approvers.alice, "looks right")
    with pytest.raises(ApprovalError, match=f"approval {approval.code} is already approved by alice at"):
        decide_approval(approval.pk, approvers.bob, "reject")
    assert list(AuditEntry.objects.filter(approval=approval).order_by("id").values_list("action", "outcome")) == [
        ("approval_requested", "pending"), ("approval_refused", "not_an_approver"),
        ("approval_decided", "approved"), ("approval_refused", "already_decided"),
    ]
    for reason, before in refused_before.items():  # each refusal is counted once, by its reason
        assert _refused(reason) == before + 1


def test_a_named_approver_list_replaces_the_group(fake_mcp, approvers) -> None:  # type: ignore[no-untyped-def]
    approval = _request(approvers=["carol"])
    with pytest.raises(ApprovalError, match="alice may not decide .* \\(allowed: carol\\)"):
        decide_approval(approval.pk, approvers.alice, "approve")
    assert decide_approval(approval.pk, approvers.carol, "approve").state == "approved"


def test_high_risk_needs_an_approver_other_than_the_requester(fake_mcp, approvers) -> None:  # type: ignore[no-untyped-def]
    high = _request(requested_by=approvers.alice)
    before = _refused("requester_on_high")
    with pytest.raises(ApprovalError, match="HIGH risk: it needs an approver other than the requester"):
        decide_approval(high.pk, approvers.alice, "approve")
    assert _refused("requester_on_high") == before + 1
    assert decide_approval(high.pk, approvers.bob, "approve").state == "approved"
    MCPTool.objects.filter(name="fake__set_value").update(risk="MEDIUM")
    medium = _request(requested_by=approvers.alice)
    assert decide_approval(medium.pk, approvers.alice, "approve").state == "approved"


def test_an_expired_approval_cannot_be_decided(fake_mcp, approvers, received) -> None:  # type: ignore[no-untyped-def]
    approval = _request()
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApprovalError, match=f"approval {approval.code} expired at"):
        decide_approval(approval.pk, approvers.alice, "approve")
    approval.refresh_from_db()
    assert approval.state == "expired"
    assert received[1].calls[0]["approval"].state == "expired"
    with pytest.raises(ApprovalError, match="is already expired"):
        decide_approval(approval.pk, approvers.bob, "approve")


@pytest.mark.django_db(transaction=True)
def test_two_people_deciding_at_the_same_moment_get_one_outcome(fake_mcp, approvers) -> None:  # type: ignore[no-untyped-def]
    approval = _request()
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def decide(user, decision: str) -> None:  # type: ignore[no-untyped-def]
        try:
            barrier.wait()
            results[user.username] = decide_approval(approval.pk, user, decision).state
        except ApprovalError as exc:
            results[user.username] = str(exc)
        finally:
            connections.close_all()  # each thread had its own connection

    threads = [threading.Thread(target=decide, args=(approvers.alice, "approve")),
               threading.Thread(target=decide, args=(approvers.bob, "reject"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    approval.refresh_from_db()
    winner = approval.decided_by.username
    loser = "bob" if winner == "alice" else "alice"
    assert results[winner] == approval.state
    assert results[loser].startswith(f"approval {approval.code} is already {approval.state} by {winner}")
    assert AuditEntry.objects.filter(approval=approval, action="approval_decided").count() == 1
    assert AuditEntry.objects.filter(approval=approval, action="approval_refused").count() == 1


@pytest.mark.django_db(transaction=True)
def test_with_redis_flushed_approvals_can_be_decided_and_still_expire_on_time(fake_mcp, approvers, settings,
                                                                            celery_worker) -> None:  # type: ignore[no-untyped-def]
    from agents.tasks import expire_approvals

    soon = timezone.now() + timedelta(seconds=2)
    decided, left = _request(), _request()
    Approval.objects.filter(pk__in=[decided.pk, left.pk]).update(expires_at=soon)
    _redis(settings).flushall()
    left.refresh_from_db()
    assert 0 < seconds_left(left) <= 2  # from the row, now that Redis forgot

    assert decide_approval(decided.pk, approvers.alice, "approve").state == "approved"
    time.sleep(max(0.0, (soon - timezone.now()).total_seconds()) + 0.1)
    assert expire_approvals.delay().get(timeout=20) == 1  # the beat task, in the real worker
    left.refresh_from_db()
    assert left.state == "expired" and left.decided_at >= soon
    assert AuditEntry.objects.get(approval=left, action="approval_expired").actor == "system"
    decided.refresh_from_db()
    assert decided.state == "approved"  # its window to be used restarted when it was approved


@pytest.mark.django_db(transaction=True)
def test_an_approved_chat_request_is_carried_out_and_announced(fake_mcp, fake_calls, approvers,
                                                               celery_worker) -> None:  # type: ignore[no-untyped-def]
    finished = Received()
    tool_call_finished.connect(finished)
    try:
        approval = _request(origin="chat", origin_ref="slack:C1:1700000000.1", requester="slack:U123",
                            args={"key": "from-chat", "value": "1"})
        decide_approval(approval.pk, approvers.alice, "approve", "go")
        wait_for(lambda: Approval.objects.get(pk=approval.pk).finished_at, message="the worker to run the approval")
    finally:
        tool_call_finished.disconnect(finished)
    assert fake_calls("from-chat") == 1
    approval.refresh_from_db()
    assert approval.used_key == f"approval:{approval.pk}"
    call = AuditEntry.objects.get(approval=approval, action="tool_call")
    assert (call.actor, call.outcome, call.detail) == ("chat:slack:U123", "ok", "set from-chat=1")
    # The signal fired in the worker process (its receivers, e.g. channels, write there).
    assert finished.calls == []
    from agents.tasks import execute_approval

    assert execute_approval.delay(approval.pk).get(timeout=20) == "already finished"
    assert fake_calls("from-chat") == 1


def test_a_failing_receiver_leaves_no_half_written_approval(fake_mcp) -> None:  # type: ignore[no-untyped-def]
    def broken(sender, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("outbox is down")

    approval_requested.connect(broken)
    try:
        with pytest.raises(RuntimeError, match="outbox is down"):
            _request()
    finally:
        approval_requested.disconnect(broken)
    assert not Approval.objects.exists() and not AuditEntry.objects.exists()
