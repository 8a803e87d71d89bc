"""The one path to a tool: `call_tool`, with the risk gate inside it; and approvals.

Every caller -- a playbook step, a chat command, the LLM -- calls `call_tool`. A MEDIUM or
HIGH tool runs only with an `Approval` that is approved, unexpired, bound to exactly this
tool and these (canonical) arguments, and not consumed by another caller: the first call
binds the approval to its idempotency key, and only a retry with that same key may use it
again (a crashed worker's retry completes the action; nobody can replay it). Refusals raise
`ToolRefused` after they are audited; tool errors come back as `ok=False`; transport
failures raise `MCPTransportError` (retryable: our mutating tools are idempotent in effect).

Call it outside an open transaction: the gate commits its binding before the tool runs, and
an outer transaction that rolls back would also roll back the audit of what happened.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents import audit, metrics
from agents.approvals import (
    ApprovalError,
    can_decide,
    cancel_approval,
    decide_approval,
    expire_due,
    find_approval,
    request_approval,
    seconds_left,
)
from agents.mcp_client import MCPConfigError, MCPTimeout, MCPTransportError, manager
from agents.models import Approval, AuditEntry, MCPTool, Risk
from agents.registry import UnknownTool, get_tool, server_config
from k8s.names import validate_json

__all__ = [
    "ApprovalError",
    "MCPTransportError",
    "ToolRefused",
    "ToolResult",
    "call_tool",
    "can_decide",
    "cancel_approval",
    "decide_approval",
    "expire_due",
    "find_approval",
    "request_approval",
    "seconds_left",
]

log = structlog.get_logger(__name__)


class ToolRefused(Exception):
    """The gate (or the registry) refused the call; it was audited. `reason` is for people."""

    def __init__(self, reason: str, *, code: str = "refused", audit_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.audit_id = audit_id


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: str
    data: Any
    truncated: bool
    audit_id: int


def cap_output(text: str, limit: int) -> tuple[str, bool]:
    """Keep at most `limit` bytes of UTF-8, cut on a character boundary, and say so."""
    raw = text.encode()
    if len(raw) <= limit:
        return text, False
    kept = raw[:limit].decode(errors="ignore")
    return f"{kept}\n[output truncated: {len(raw) - len(kept.encode())} of {len(raw)} bytes cut]", True


def _parse_data(text: str, structured: Any) -> Any:
    if structured is not None:
        return structured
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
    return None


def _refuse(tool: str, server: str, risk: str, args: Any, *, actor: str, reason: str, code: str, message: str,
            approval: Approval | None, key: str | None) -> ToolRefused:
    entry = AuditEntry.objects.create(
        actor=actor[:200], action=AuditEntry.Action.TOOL_REFUSED, tool=tool[:128], server=server, risk=risk,
        arguments=args if isinstance(args, dict) else {"_invalid": repr(args)[:500]}, reason=reason,
        outcome="refused", detail=f"{code}: {message}", idempotency_key=(key or "")[:200], approval=approval,
    )
    metrics.GATE_REFUSALS.labels(tool[:128], code).inc()
    metrics.TOOL_CALLS.labels(server or "-", tool[:128], "refused").inc()
    log.warning("tool_call_refused", tool=tool, actor=actor, code=code, message=message,
                approval=approval.pk if approval else None)
    return ToolRefused(message, code=code, audit_id=entry.pk)


def _pass_gate(tool: MCPTool, args: dict[str, Any], approval: Approval | int | None, key: str | None, *,
               actor: str, reason: str) -> tuple[Approval, str]:
    """Check and bind the approval, committing the binding before the tool runs. Returns the
    approval and the key the call runs under."""

    def refuse(code: str, message: str, bound: Approval | None = None) -> ToolRefused:
        return _refuse(tool.name, tool.server.name, tool.risk, args, actor=actor, reason=reason, code=code,
                       message=message, approval=bound, key=key)

    if settings.AIOPS_READ_ONLY:
        raise refuse("read_only", f"{tool.name} is {tool.risk} risk and AIOPS_READ_ONLY is on")
    if approval is None:
        raise refuse("no_approval", f"{tool.name} is {tool.risk} risk: it needs an approved approval")
    approval_pk = approval.pk if isinstance(approval, Approval) else int(approval)
    refusal: tuple[str, str] | None = None
    with transaction.atomic():
        locked = Approval.objects.select_for_update().filter(pk=approval_pk).first()
        if locked is None:
            refusal = ("unknown_approval", f"no approval #{approval_pk}")
        elif not locked.matches(tool.name, args):
            refusal = ("mismatch", f"approval {locked.code} is for {locked.tool} with other arguments, not this call")
        elif locked.used_at is not None:
            if not key or key != locked.used_key:
                refusal = ("used", f"approval {locked.code} was already used by another call")
        elif locked.state != Approval.State.APPROVED:
            refusal = ("not_approved", f"approval {locked.code} is {locked.state}, not approved")
        elif locked.expires_at <= timezone.now():
            refusal = ("expired", f"approval {locked.code} expired at {locked.expires_at:%H:%M:%S} UTC unused")
        else:
            # The first caller binds the approval. Without a key of its own the call is
            # single-use: a generated key that nobody else can present.
            key = key or f"once:{uuid.uuid4()}"
            locked.used_at = timezone.now()
            locked.used_key = key[:200]
            locked.save(update_fields=["used_at", "used_key"])
    if refusal is not None:
        raise refuse(*refusal, bound=locked)
    assert locked is not None and key is not None
    return locked, key


def call_tool(
    tool: str,
    args: dict[str, Any],
    *,
    actor: str,
    reason: str,
    approval: Approval | int | None = None,
    idempotency_key: str | None = None,
) -> ToolResult:
    started = time.monotonic()
    try:
        registered = get_tool(tool)
    except UnknownTool as exc:
        raise _refuse(tool, "", "", args, actor=actor, reason=reason, code="unknown_tool", message=str(exc),
                      approval=None, key=idempotency_key) from None
    server = registered.server
    labels = (server.name, registered.name)

    def finish(ok: bool, outcome: str, detail: str, *, data: Any = None, truncated: bool = False,
               bound: Approval | None = None, key: str | None = None) -> ToolResult:
        duration_ms = int((time.monotonic() - started) * 1000)
        entry = AuditEntry.objects.create(
            actor=actor[:200], action=AuditEntry.Action.TOOL_CALL, tool=registered.name, server=server.name,
            risk=registered.risk, arguments=args if isinstance(args, dict) else {}, reason=reason, outcome=outcome,
            detail=detail, duration_ms=duration_ms, idempotency_key=(key or "")[:200], approval=bound,
        )
        metrics.TOOL_CALLS.labels(*labels, outcome).inc()
        log.info("tool_called", tool=registered.name, server=server.name, actor=actor, outcome=outcome,
                 duration_ms=duration_ms, truncated=truncated, approval=bound.pk if bound else None)
        return ToolResult(ok=ok, output=detail, data=data, truncated=truncated, audit_id=entry.pk)

    if not isinstance(args, dict):
        return finish(False, "invalid", f"arguments for {tool} must be a JSON object, not {type(args).__name__}")
    try:
        validate_json(args, registered.input_schema or {"type": "object"})
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(arguments)"
        return finish(False, "invalid", f"arguments for {tool} are invalid at {where}: {exc.message}")
    except jsonschema.SchemaError as exc:
        return finish(False, "invalid", f"{tool} has an invalid input schema in the registry: {exc.message}")

    bound: Approval | None = None
    key = idempotency_key
    if registered.risk != Risk.LOW:
        bound, key = _pass_gate(registered, args, approval, idempotency_key, actor=actor, reason=reason)

    try:
        config = server_config(server)
    except MCPConfigError as exc:
        return finish(False, "error", str(exc), bound=bound, key=key)
    if registered.risk == Risk.LOW:
        return _send(registered, config, args, labels, lambda ok, outcome, detail, **kw: finish(ok, outcome, detail, key=key, **kw))

    # Write-ahead: the `started` row is committed before the call leaves, so a worker killed
    # mid-call leaves a trace that the retry (or the reconciler) completes. See agents.audit.
    assert key is not None
    began, unfinished = audit.begin_call(actor=actor, tool=registered.name, server=server.name, risk=registered.risk,
                                         args=args, reason=reason, key=key, approval=bound)

    def complete(ok: bool, outcome: str, detail: str, *, data: Any = None, truncated: bool = False,
                 **_: Any) -> ToolResult:
        if outcome in ("unavailable", "timeout"):
            # The server may have acted before the connection broke: what happened is not known
            # yet, so the call stays `started` for the retry (or the reconciler) to resolve.
            metrics.TOOL_CALLS.labels(*labels, outcome).inc()
            log.warning("tool_call_outcome_unknown", tool=registered.name, server=server.name, actor=actor,
                        outcome=outcome, detail=detail[:300], audit=began.pk)
            return ToolResult(ok=False, output=detail, data=None, truncated=False, audit_id=began.pk)
        effect = audit.effect_of(outcome, detail, data)
        if unfinished:
            # (A retry that did not reach the tool leaves them for the next one.)
            audit.resolve_unfinished(unfinished, retry=began, retry_effect=effect if outcome == "ok" else None,
                                     by=actor)
        duration_ms = int((time.monotonic() - started) * 1000)
        entry = audit.complete_call(began, outcome=outcome, detail=detail, effect=effect, duration_ms=duration_ms)
        metrics.TOOL_CALLS.labels(*labels, outcome).inc()
        log.info("tool_called", tool=registered.name, server=server.name, actor=actor, outcome=outcome, effect=effect,
                 duration_ms=duration_ms, truncated=truncated, approval=bound.pk if bound else None, audit=began.pk)
        return ToolResult(ok=ok, output=detail, data=data, truncated=truncated,
                          audit_id=entry.pk if entry is not None else began.pk)

    return _send(registered, config, args, labels, complete)


def _send(registered: MCPTool, config: Any, args: dict[str, Any], labels: tuple[str, str],
          done: Any) -> ToolResult:
    call_started = time.monotonic()
    try:
        raw = manager().call_tool(config, registered.remote_name, args)
    except MCPTransportError as exc:
        outcome = "timeout" if isinstance(exc, MCPTimeout) else "unavailable"
        done(False, outcome, str(exc))
        raise
    finally:
        metrics.TOOL_CALL_DURATION.labels(*labels).observe(time.monotonic() - call_started)
    output, truncated = cap_output(raw.text, settings.AIOPS_MCP_OUTPUT_LIMIT)
    data = None if raw.is_error else _parse_data(raw.text, raw.structured)
    return done(not raw.is_error, "error" if raw.is_error else "ok", output, data=data, truncated=truncated)
