"""Celery tasks of the tools room. Thin: take ids, call one service. Names are stable API."""

from __future__ import annotations

from typing import Any

import structlog
from celery import shared_task
from django.db import transaction
from django.utils import timezone

from agents.mcp_client import MCPTransportError
from agents.models import Approval, AuditEntry
from agents.services import ToolRefused, call_tool, expire_due
from agents.signals import tool_call_finished

log = structlog.get_logger(__name__)


@shared_task(
    name="agents.call_tool",
    autoretry_for=(MCPTransportError,),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=4,
)
def call_tool_task(tool: str, args: dict[str, Any], actor: str, reason: str, approval_id: int | None = None,
                   idempotency_key: str | None = None) -> dict[str, Any]:
    """For callers not already inside a task. Transport failures retry (with the same key,
    so a bound approval lets the retry through); tool errors and refusals do not."""
    try:
        result = call_tool(tool, args, actor=actor, reason=reason, approval=approval_id,
                           idempotency_key=idempotency_key)
    except ToolRefused as exc:
        return {"ok": False, "refused": True, "output": exc.reason, "data": None, "truncated": False,
                "audit_id": exc.audit_id}
    return {"ok": result.ok, "refused": False, "output": result.output, "data": result.data,
            "truncated": result.truncated, "audit_id": result.audit_id}


@shared_task(name="agents.resolve_unfinished_calls", ignore_result=True)
def resolve_unfinished_calls() -> int:
    from agents.audit import resolve_orphaned_calls

    return resolve_orphaned_calls()


@shared_task(name="agents.expire_approvals")
def expire_approvals() -> int:
    return expire_due()


@shared_task(bind=True, name="agents.execute_approval", max_retries=4)
def execute_approval(self: Any, approval_id: int) -> str:
    """Carry out an approved chat/LLM approval and announce the outcome (`tool_call_finished`).
    Idempotent: the call runs under the approval's own key, so a redelivered message retries
    the same bound call, and the announcement is claimed once by `finished_at`."""
    approval = Approval.objects.filter(pk=approval_id).first()
    if approval is None:
        log.info("execute_approval_missing", approval=approval_id)
        return "missing"
    if approval.finished_at is not None:
        return "already finished"
    if approval.origin not in (Approval.Origin.CHAT, Approval.Origin.LLM) or approval.state != Approval.State.APPROVED:
        return f"not runnable ({approval.origin}, {approval.state})"
    actor = f"{approval.origin}:{approval.requester or 'unknown'}"
    try:
        result = call_tool(approval.tool, approval.arguments, actor=actor, reason=approval.reason,
                           approval=approval, idempotency_key=f"approval:{approval.pk}")
        ok, output, audit_id = result.ok, result.output, result.audit_id
    except ToolRefused as exc:
        ok, output, audit_id = False, f"refused: {exc.reason}", exc.audit_id
    except MCPTransportError as exc:
        if self.request.retries < self.max_retries:
            # Same key on the retry: the bound approval lets it through, and nobody else.
            raise self.retry(exc=exc, countdown=min(60, 2 ** (self.request.retries + 1))) from None
        # Out of retries: the requester still hears back, with the failure.
        ok, output = False, f"the tool server could not be reached: {exc}"
        audit_id = (AuditEntry.objects.filter(approval=approval, action=AuditEntry.Action.TOOL_CALL)
                    .order_by("-id").values_list("id", flat=True).first())
    with transaction.atomic():
        claimed = Approval.objects.filter(pk=approval.pk, finished_at__isnull=True).update(finished_at=timezone.now())
        if not claimed:
            return "already finished"
        approval.refresh_from_db()
        audit = AuditEntry.objects.filter(pk=audit_id).first() if audit_id else None
        tool_call_finished.send(sender=Approval, approval=approval, audit=audit, ok=ok, output=output)
    log.info("approval_executed", approval=approval.pk, code=approval.code, ok=ok)
    return "ok" if ok else "failed"


@shared_task(name="agents.sync_mcp_servers")
def sync_mcp_servers() -> dict[str, str]:
    """Refresh the registry: our tools from code, third-party tools from their servers."""
    from agents.registry import sync_all

    return sync_all()
