"""Approvals: request, decide, expire. PostgreSQL is the truth; Redis holds a TTL key per
pending approval (a fast, shared "is it still open, how long is left" for chat and the web)
that may be lost at any time without changing an outcome.

Decisions lock the row (`select_for_update`), so two people deciding at the same moment get
exactly one winner and the other a clear "already approved by ...". Expiry is decided by
`expires_at` in the database, checked at every decision and swept by the beat task
`agents.expire_approvals`, so it happens on time even if Redis lost its keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jsonschema
import redis
import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import metrics
from agents.models import Approval, AuditEntry, Risk
from agents.registry import UnknownTool, get_tool
from agents.signals import approval_decided, approval_requested
from k8s.names import validate_json

log = structlog.get_logger(__name__)

APPROVER_GROUP = "approvers"
_REDIS_PREFIX = "aiops:approval:"
_redis_client: redis.Redis | None = None


class ApprovalError(Exception):
    """A request or decision was refused; the message says why, for people to read, and `reason`
    what kind of refusal it is (`already_decided`, `expired`, `not_an_approver`,
    `requester_on_high`, `not_found`, `invalid`), for callers that answer machines."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def _redis() -> redis.Redis:
    global _redis_client
    if _redis_client is None:
        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return _redis_client


def _set_ttl_key(approval: Approval) -> None:
    seconds = int((approval.expires_at - timezone.now()).total_seconds())
    try:
        if seconds > 0:
            _redis().set(f"{_REDIS_PREFIX}{approval.pk}", approval.code, ex=seconds)
    except redis.RedisError as exc:  # the database sweep expires it anyway
        log.warning("approval_ttl_key_not_set", approval=approval.pk, error=str(exc))


def _drop_ttl_key(approval_id: int) -> None:
    try:
        _redis().delete(f"{_REDIS_PREFIX}{approval_id}")
    except redis.RedisError as exc:
        log.warning("approval_ttl_key_not_dropped", approval=approval_id, error=str(exc))


def seconds_left(approval: Approval) -> int:
    """Seconds until a pending approval expires: Redis's TTL when it has the key, else the row's."""
    if approval.state != Approval.State.PENDING:
        return 0
    try:
        ttl = _redis().ttl(f"{_REDIS_PREFIX}{approval.pk}")
        if isinstance(ttl, int) and ttl > 0:
            return ttl
    except redis.RedisError:
        pass
    return max(0, int((approval.expires_at - timezone.now()).total_seconds()))


def _audit(approval: Approval | None, *, actor: str, action: str, outcome: str, detail: str = "",
           tool: str = "", arguments: dict[str, Any] | None = None, reason: str = "") -> AuditEntry:
    return AuditEntry.objects.create(
        actor=actor[:200],
        action=action,
        tool=approval.tool if approval else tool,
        risk=approval.risk if approval else "",
        arguments=approval.arguments if approval else (arguments or {}),
        reason=(approval.reason if approval else reason),
        outcome=outcome,
        detail=detail,
        approval=approval,
    )


def _user_label(user: Any) -> str:
    return getattr(user, "username", "") or str(user)


# --- request ---------------------------------------------------------------------------------
# The configured ceilings of the mutating tools (the MCP server enforces the same settings when
# it runs the call): checked before an approval is created, so nobody approves what will be refused.
TOOL_BOUNDS = {
    "scale_deployment": ("replicas", "AIOPS_MAX_SCALE_REPLICAS"),
    "set_hpa_max_replicas": ("max_replicas", "AIOPS_MAX_HPA_REPLICAS"),
}


def beyond_bounds(tool: str, args: dict[str, Any]) -> str | None:
    """Why `args` exceed `tool`'s configured ceiling, or None."""
    if tool not in TOOL_BOUNDS:
        return None
    arg, setting = TOOL_BOUNDS[tool]
    value, ceiling = args.get(arg), getattr(settings, setting)
    if isinstance(value, int) and not isinstance(value, bool) and value > ceiling:
        return f"{arg}={value} is above the configured maximum of {ceiling} ({setting})"
    return None


def request_approval(
    tool: str,
    args: dict[str, Any],
    *,
    reason: str,
    origin: str,
    requested_by: Any = None,
    requester: str = "",
    approvers: list[str] | None = None,
    origin_ref: str = "",
) -> Approval:
    """Ask people to approve one call of `tool` with exactly `args`. Announced by
    `approval_requested` inside this transaction (channels write their outbox rows with it)."""
    if origin not in Approval.Origin.values:
        raise ApprovalError(f"origin {origin!r} is not one of {', '.join(Approval.Origin.values)}")
    if not isinstance(args, dict):
        raise ApprovalError("arguments must be a JSON object")
    if not reason.strip():
        raise ApprovalError("an approval needs a reason people can judge")
    try:
        registered = get_tool(tool)
    except UnknownTool as exc:
        raise ApprovalError(str(exc)) from None
    if registered.risk == Risk.LOW:
        raise ApprovalError(f"{tool} is LOW risk: it runs without an approval")
    try:
        validate_json(args, registered.input_schema or {"type": "object"})
    except jsonschema.ValidationError as exc:
        raise ApprovalError(f"arguments for {tool} are invalid: {exc.message}") from None
    beyond = beyond_bounds(tool, args)
    if beyond:
        raise ApprovalError(beyond)
    if approvers is not None:
        if not isinstance(approvers, list) or not approvers or not all(isinstance(a, str) for a in approvers):
            raise ApprovalError("approvers must be a non-empty list of usernames")
        known = set(get_user_model().objects.filter(username__in=approvers, is_active=True)
                    .values_list("username", flat=True))
        unknown = sorted(set(approvers) - known)
        if unknown:
            raise ApprovalError(f"unknown approvers: {', '.join(unknown)}")
    now = timezone.now()
    requester = requester or (_user_label(requested_by) if requested_by is not None else origin)
    # One transaction: the approval, its audit entry and what the signal's receivers write
    # (outbox rows) commit together or not at all.
    with transaction.atomic():
        for _attempt in range(5):
            try:
                with transaction.atomic():  # a savepoint: a code collision must not spoil the outer block
                    approval = Approval.objects.create(
                        tool=tool,
                        arguments=args,
                        risk=registered.risk,
                        reason=reason,
                        origin=origin,
                        origin_ref=origin_ref[:200],
                        requested_by=requested_by,
                        requester=requester[:200],
                        approvers=sorted(set(approvers or [])),
                        expires_at=now + timedelta(seconds=settings.AIOPS_APPROVAL_TTL),
                    )
                break
            except IntegrityError:  # a code collision (1 in ~900M); draw another
                continue
        else:
            raise ApprovalError("could not allocate an approval code; try again")
        _audit(approval, actor=requester, action=AuditEntry.Action.APPROVAL_REQUESTED, outcome="pending")
        approval_requested.send(sender=Approval, approval=approval)
        transaction.on_commit(lambda: _set_ttl_key(approval))
    metrics.APPROVALS.labels("pending").inc()
    log.info("approval_requested", approval=approval.pk, code=approval.code, tool=tool, risk=approval.risk,
             origin=origin, origin_ref=origin_ref, requester=requester)
    return approval


# --- decide ------------------------------------------------------------------------------------
@dataclass
class _Refusal:
    reason: str
    message: str


def find_approval(ref: int | str) -> Approval | None:
    """By id, or by the code people type (any case)."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return Approval.objects.filter(pk=int(ref)).first()
    return Approval.objects.filter(code=str(ref).strip().upper()).first()


def can_decide(user: Any, approval: Approval) -> bool:
    if user is None or not getattr(user, "is_active", False):
        return False
    if approval.approvers:
        return user.username in approval.approvers
    return bool(user.is_superuser or user.groups.filter(name=settings.AIOPS_APPROVER_GROUP).exists())


def decide_approval(approval_id: int | str, user: Any, decision: str, reason: str = "") -> Approval:
    """Approve or reject. Raises ApprovalError with a reason people can read when refused;
    every refusal is audited. `approval_id` may also be the approval's code."""
    decision = (decision or "").strip().lower()
    if decision not in ("approve", "reject"):
        raise ApprovalError(f"decision must be 'approve' or 'reject', not {decision!r}")
    actor = _user_label(user) if user is not None else "anonymous"
    expired_now = False
    with transaction.atomic():
        found = find_approval(approval_id)
        if found is None:
            raise ApprovalError(f"no approval {approval_id!r}", "not_found")
        approval = Approval.objects.select_for_update().get(pk=found.pk)
        now = timezone.now()
        refusal: _Refusal | None = None
        if approval.state != Approval.State.PENDING:
            by = f" by {approval.decided_by.username}" if approval.decided_by_id else ""
            when = f" at {approval.decided_at:%H:%M:%S} UTC" if approval.decided_at else ""
            refusal = _Refusal("already_decided", f"approval {approval.code} is already {approval.state}{by}{when}")
        elif approval.expires_at <= now:
            _expire(approval, now)
            expired_now = True
            refusal = _Refusal("expired", f"approval {approval.code} expired at {approval.expires_at:%H:%M:%S} UTC")
        elif not can_decide(user, approval):
            who = ", ".join(approval.approvers) if approval.approvers else f"the {settings.AIOPS_APPROVER_GROUP!r} group"
            refusal = _Refusal("not_an_approver", f"{actor} may not decide approval {approval.code} (allowed: {who})")
        elif (decision == "approve" and approval.risk == Risk.HIGH and approval.requested_by_id is not None
              and approval.requested_by_id == user.pk):
            refusal = _Refusal("requester_on_high",
                               f"approval {approval.code} is HIGH risk: it needs an approver other than the requester")
        if refusal is not None:
            _audit(approval, actor=actor, action=AuditEntry.Action.APPROVAL_REFUSED, outcome=refusal.reason,
                   detail=f"{decision}: {refusal.message}")
        else:
            approval.state = Approval.State.APPROVED if decision == "approve" else Approval.State.REJECTED
            approval.decided_by = user
            approval.decided_at = now
            approval.decision_reason = reason[:2000]
            fields = ["state", "decided_by", "decided_at", "decision_reason"]
            if decision == "approve":
                # The window to carry it out starts now: an approval given at the last second
                # must not expire before the waiting step had a chance to run.
                approval.expires_at = now + timedelta(seconds=settings.AIOPS_APPROVAL_TTL)
                fields.append("expires_at")
            approval.save(update_fields=fields)
            _audit(approval, actor=actor, action=AuditEntry.Action.APPROVAL_DECIDED, outcome=approval.state,
                   detail=reason[:2000])
            approval_decided.send(sender=Approval, approval=approval)
            approval_id_ = approval.pk
            transaction.on_commit(lambda: _drop_ttl_key(approval_id_))
            if approval.state == Approval.State.APPROVED and approval.origin in (Approval.Origin.CHAT,
                                                                                 Approval.Origin.LLM):
                from agents.tasks import execute_approval

                transaction.on_commit(lambda: execute_approval.delay(approval_id_))
    if refusal is not None:
        metrics.APPROVAL_DECISIONS_REFUSED.labels(refusal.reason).inc()
        if expired_now:
            metrics.APPROVALS.labels("expired").inc()
        log.info("approval_decision_refused", approval=approval.pk, code=approval.code, user=actor,
                 decision=decision, reason=refusal.reason)
        raise ApprovalError(refusal.message, refusal.reason)
    metrics.APPROVALS.labels(approval.state).inc()
    log.info("approval_decided", approval=approval.pk, code=approval.code, user=actor, state=approval.state)
    return approval


def _expire(approval: Approval, now: Any) -> None:
    """Inside the caller's transaction, with the row locked."""
    approval.state = Approval.State.EXPIRED
    # An approved approval keeps the time (and person) of its decision.
    approval.decided_at = approval.decided_at or now
    approval.save(update_fields=["state", "decided_at"])
    _audit(approval, actor="system", action=AuditEntry.Action.APPROVAL_EXPIRED, outcome="expired",
           detail=f"expired at {approval.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    approval_decided.send(sender=Approval, approval=approval)
    approval_id = approval.pk
    transaction.on_commit(lambda: _drop_ttl_key(approval_id))


def cancel_approval(approval_id: int, reason: str, *, actor: str = "system") -> bool:
    """A pending approval whose reason to exist is gone (its incident resolved or was closed):
    `cancelled`, audited, and `approval_decided` sent so every copy of its message is edited
    and nobody can approve it any more. In the caller's transaction; False if not pending."""
    approval = Approval.objects.select_for_update().filter(pk=approval_id, state=Approval.State.PENDING).first()
    if approval is None:
        return False
    approval.state = Approval.State.CANCELLED
    approval.decided_at = timezone.now()
    approval.decision_reason = reason[:2000]
    approval.save(update_fields=["state", "decided_at", "decision_reason"])
    _audit(approval, actor=actor, action=AuditEntry.Action.APPROVAL_DECIDED, outcome="cancelled", detail=reason[:2000])
    approval_decided.send(sender=Approval, approval=approval)
    transaction.on_commit(lambda: _drop_ttl_key(approval_id))
    transaction.on_commit(lambda: metrics.APPROVALS.labels("cancelled").inc())
    log.info("approval_cancelled", approval=approval.pk, code=approval.code, reason=reason[:300])
    return True


def expire_due(limit: int = 500) -> int:
    """Expire pending approvals past their time, and approved ones nobody used in their window.
    One transaction per approval, so one failing signal receiver cannot hold back the rest;
    rows another process holds (being decided right now) are skipped and taken next sweep."""
    now = timezone.now()
    due = list(
        Approval.objects.filter(expires_at__lte=now, used_at__isnull=True,
                                state__in=[Approval.State.PENDING, Approval.State.APPROVED])
        .order_by("expires_at").values_list("pk", flat=True)[:limit]
    )
    expired = 0
    for pk in due:
        try:
            with transaction.atomic():
                approval = (
                    Approval.objects.select_for_update(skip_locked=True)
                    .filter(pk=pk, expires_at__lte=now, used_at__isnull=True,
                            state__in=[Approval.State.PENDING, Approval.State.APPROVED])
                    .first()
                )
                if approval is None:
                    continue
                _expire(approval, now)
            expired += 1
        except Exception:  # noqa: BLE001  (logged; the next sweep tries again)
            log.exception("approval_expiry_failed", approval=pk)
    if expired:
        metrics.APPROVALS.labels("expired").inc(expired)
        log.info("approvals_expired", count=expired)
    return expired
