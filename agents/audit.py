"""The write-ahead audit of mutating tool calls, and the resolution of calls a dead worker left.

A mutating call is two rows, never an updated one (the table is append-only): a `tool_started`
row committed before the call is sent, and one `tool_call` row that completes it (a unique
one-to-one: one completion per call, whoever races to write it). A worker killed in between
leaves a started row without a completion. It is resolved

- by the retry (same idempotency key), which links its own started row to it (`retry_of`),
  sends the call, and then completes the dead worker's row with outcome `unknown`: our mutating
  tools are idempotent in effect, so the retry's own result says who acted -- if the retry
  changed the cluster, the dead call had not; if the retry found nothing to do, the dead call
  had done it. A re-read of the cluster says what holds now, in words;
- or, when no retry comes (a chat call whose task was lost), by `resolve_orphaned_calls` (beat),
  once no live call could still be running: outcome `unknown`, effect from the re-read.

So every change to a cluster has exactly one completion whose `effect` is `changed`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import metrics
from agents.models import Approval, AuditEntry, Effect

log = structlog.get_logger(__name__)

Started = AuditEntry.Action.TOOL_STARTED
# Our tools say this when the cluster already was as asked (k8s/mcp_server/kube_write.py).
NOTHING_TO_DO = "nothing to do"


def effect_of(outcome: str, output: str, data: Any = None) -> str:
    """What a finished call did, from its outcome and what the tool answered."""
    if outcome == "ok":
        if isinstance(data, dict) and "evicted" in data:  # drain_node answers a report
            changed = bool(data.get("evicted")) or NOTHING_TO_DO not in str(data.get("cordon", ""))
            return Effect.CHANGED if changed else Effect.UNCHANGED
        return Effect.UNCHANGED if NOTHING_TO_DO in output else Effect.CHANGED
    if outcome == "invalid":  # refused before anything reached the cluster
        return Effect.UNCHANGED
    return Effect.UNKNOWN  # a tool error may come after a partial change


def begin_call(*, actor: str, tool: str, server: str, risk: str, args: dict[str, Any], reason: str, key: str,
               approval: Approval | None) -> tuple[AuditEntry, list[AuditEntry]]:
    """Commit the `tool_started` row (call outside a transaction: it must be durable before the
    call is sent). Returns it and the unfinished earlier calls of the same key it retries."""
    orphans = list(
        AuditEntry.objects.filter(action=Started, idempotency_key=key[:200], tool=tool, completion__isnull=True)
        .order_by("id")
    ) if key else []
    retried = orphans[-1] if orphans else _last_unknown(key, tool)
    entry = AuditEntry.objects.create(
        actor=actor[:200], action=Started, tool=tool, server=server, risk=risk, arguments=args, reason=reason,
        outcome="started", detail="sent to the tool server", idempotency_key=key[:200], approval=approval,
        retry_of=retried,
    )
    if orphans:
        log.warning("tool_call_retrying_unfinished", tool=tool, key=key, audit=entry.pk,
                    unfinished=[o.pk for o in orphans])
    return entry, orphans


def _last_unknown(key: str, tool: str) -> AuditEntry | None:
    """A retry that comes after the reconciler resolved the dead call still links to it."""
    if not key:
        return None
    return (AuditEntry.objects.filter(action=Started, idempotency_key=key[:200], tool=tool,
                                      completion__outcome="unknown").order_by("-id").first())


def complete_call(started: AuditEntry, *, outcome: str, detail: str, effect: str,
                  duration_ms: int | None = None, actor: str | None = None) -> AuditEntry | None:
    """Write the one completion of `started`; None (logged) if another writer completed it first."""
    try:
        with transaction.atomic():
            return AuditEntry.objects.create(
                actor=(actor or started.actor)[:200], action=AuditEntry.Action.TOOL_CALL, tool=started.tool,
                server=started.server, risk=started.risk, arguments=started.arguments, reason=started.reason,
                outcome=outcome, detail=detail, duration_ms=duration_ms, idempotency_key=started.idempotency_key,
                approval=started.approval, completes=started, effect=effect,
            )
    except IntegrityError:
        # The reconciler (or a retry) decided this call was dead while it was only slow.
        log.warning("tool_call_completion_discarded", audit=started.pk, tool=started.tool, outcome=outcome,
                    effect=effect, detail=detail[:500])
        return None


def resolve_unfinished(orphans: list[AuditEntry], *, retry: AuditEntry, retry_effect: str | None, by: str) -> None:
    """After the retry's call: complete the dead calls it retried. When the retry succeeded its
    result decides who acted (idempotent tools); otherwise the re-read does. Either way the
    re-read says what holds now."""
    for n, orphan in enumerate(orphans):
        effect: str | None
        if retry_effect == Effect.CHANGED:
            effect, why = Effect.UNCHANGED, f"the retry (entry #{retry.pk}) made the change, so this call had not"
        elif retry_effect == Effect.UNCHANGED and n == len(orphans) - 1:
            effect, why = Effect.CHANGED, (f"the retry (entry #{retry.pk}) found nothing left to do, so this call "
                                           f"had made the change{' (or one of the earlier unfinished ones)' if n else ''}")
        elif retry_effect == Effect.UNCHANGED:
            effect, why = Effect.UNKNOWN, f"a later attempt than this one made the change (entry #{retry.pk} retried)"
        else:
            effect, why = None, f"the retry (entry #{retry.pk}) did not succeed, so the cluster decides"
        _resolve(orphan, effect=effect, why=why, by=by)


def _resolve(orphan: AuditEntry, *, effect: str | None, why: str, by: str) -> AuditEntry | None:
    seen, observed = observe(orphan)
    effect = effect or observed
    if effect == Effect.CHANGED:
        # Inferred, not answered: when another call of the same action already says it made the
        # change, this one did not (the tools are idempotent: one change per action). Attempts
        # overlap when a step's lease lapses while its worker still runs (a starved machine):
        # the chaos matrix found two `changed` entries for one scale without this.
        earlier = (AuditEntry.objects.filter(action=AuditEntry.Action.TOOL_CALL, tool=orphan.tool,
                                             idempotency_key=orphan.idempotency_key, effect=Effect.CHANGED)
                   .exclude(completes=orphan).order_by("id").first()) if orphan.idempotency_key else None
        if earlier is not None:
            effect = Effect.UNCHANGED
            why = f"entry #{earlier.pk} already records the change this action made, so this call had not"
    detail = f"the call got no answer (its worker died, or the tool server did not reply); {why}. Re-read of the cluster: {seen}"
    entry = complete_call(orphan, outcome="unknown", detail=detail, effect=effect, actor=by)
    if entry is not None:
        metrics.UNFINISHED_CALLS_RESOLVED.labels(orphan.tool, effect).inc()
        log.warning("tool_call_resolved_unknown", audit=orphan.pk, completion=entry.pk, tool=orphan.tool,
                    effect=effect, key=orphan.idempotency_key, seen=seen)
    return entry


def orphan_grace() -> timedelta:
    """After this, no live call can still run: the MCP call's own timeout has passed, with room
    for a step's retry (within its lease) to resolve it first."""
    return timedelta(seconds=settings.AIOPS_MCP_TIMEOUT + settings.AIOPS_ORPHAN_GRACE)


def resolve_orphaned_calls(now: Any = None) -> int:
    """Beat: complete started calls that no worker finished and no retry resolved."""
    now = now or timezone.now()
    found = (AuditEntry.objects.filter(action=Started, completion__isnull=True, created_at__lt=now - orphan_grace())
             .order_by("id")[:100])
    resolved = 0
    for orphan in found:
        if _resolve(orphan, effect=None, why="no retry came, so the cluster decides", by="system:reconciler"):
            resolved += 1
    return resolved


# --- Re-reading the cluster: what a mutating call's target looks like now ---------------------

Observer = Callable[[dict[str, Any], Any], tuple[str, str]]


def _read(tool: str, args: dict[str, Any]) -> Any:
    """A LOW read through the gate (audited like any read). Raises on transport failure."""
    from agents.services import call_tool

    result = call_tool(tool, args, actor="system:reconciler", reason="re-read after a call a dead worker left")
    return result if result.ok else result.output


def _where(args: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: args[k] for k in (*keys, "cluster") if k in args}


def _pod_deleted(args: dict[str, Any], _: Any) -> tuple[str, str]:
    found = _read("describe_pod", _where(args, "namespace", "name"))
    name = f"pod {args.get('namespace')}/{args.get('name')}"
    if isinstance(found, str):
        if "not found" in found:
            return f"{name} is gone: the deletion took effect", Effect.CHANGED
        return f"{name} could not be read: {found[:300]}", Effect.UNKNOWN
    if ((found.data or {}).get("summary") or {}).get("reason") == "Terminating":
        return f"{name} is terminating: the deletion took effect", Effect.CHANGED
    return f"{name} still exists: the deletion did not take effect", Effect.UNCHANGED


def _deployment(args: dict[str, Any], check: Callable[[dict[str, Any]], tuple[str, str]]) -> tuple[str, str]:
    found = _read("describe_deployment", _where(args, "namespace", "name"))
    if isinstance(found, str):
        return f"deployment {args.get('namespace')}/{args.get('name')} could not be read: {found[:300]}", Effect.UNKNOWN
    return check(found.data or {})


def _scaled(args: dict[str, Any], _: Any) -> tuple[str, str]:
    def check(d: dict[str, Any]) -> tuple[str, str]:
        now = (d.get("summary") or {}).get("replicas")
        ok = now == args.get("replicas")
        return (f"deployment {args.get('namespace')}/{args.get('name')} wants {now} replicas "
                f"(asked: {args.get('replicas')})", Effect.CHANGED if ok else Effect.UNCHANGED)

    return _deployment(args, check)


def _memory_set(args: dict[str, Any], _: Any) -> tuple[str, str]:
    if not args.get("name"):
        return "the deployment was named by a pod; not re-read", Effect.UNKNOWN

    def check(d: dict[str, Any]) -> tuple[str, str]:
        containers = d.get("containers") or []
        target = next((c for c in containers if c.get("name") == args.get("container")), containers[0] if containers else {})
        limit = ((target.get("resources") or {}).get("limits") or {}).get("memory")
        return (f"container {target.get('name')} has a memory limit of {limit} (asked: {args.get('memory')})",
                Effect.CHANGED if limit == args.get("memory") else Effect.UNCHANGED)

    return _deployment(args, check)


def _node(args: dict[str, Any], want: bool) -> tuple[str, str]:
    found = _read("describe_node", _where(args, "name"))
    if isinstance(found, str):
        return f"node {args.get('name')} could not be read: {found[:300]}", Effect.UNKNOWN
    summary = (found.data or {}).get("summary") or {}
    now = bool(summary.get("unschedulable"))
    words = "cordoned" if now else "schedulable"
    return f"node {args.get('name')} is {words}", Effect.CHANGED if now == want else Effect.UNCHANGED


def _hpa_max(args: dict[str, Any], _: Any) -> tuple[str, str]:
    found = _read("get_hpa", _where(args, "namespace", "name"))
    if isinstance(found, str):
        return f"HPA {args.get('namespace')}/{args.get('name')} could not be read: {found[:300]}", Effect.UNKNOWN
    now = (found.data or {}).get("max_replicas")
    return (f"HPA {args.get('namespace')}/{args.get('name')} has maxReplicas={now} (asked: {args.get('max_replicas')})",
            Effect.CHANGED if now == args.get("max_replicas") else Effect.UNCHANGED)


def _drained(args: dict[str, Any], _: Any) -> tuple[str, str]:
    found = _read("describe_node", _where(args, "name"))
    if isinstance(found, str):
        return f"node {args.get('name')} could not be read: {found[:300]}", Effect.UNKNOWN
    data = found.data or {}
    cordoned = bool((data.get("summary") or {}).get("unschedulable"))
    pods = len(data.get("pods") or [])
    # Cordoning alone is a change; whether evictions happened too cannot be told afterwards.
    return (f"node {args.get('name')} is {'cordoned' if cordoned else 'schedulable'} with {pods} pod(s) on it",
            Effect.CHANGED if cordoned else Effect.UNCHANGED)


OBSERVERS: dict[str, Observer] = {
    "restart_pod": _pod_deleted,
    "delete_pod_force": _pod_deleted,
    "scale_deployment": _scaled,
    "patch_memory_limit": _memory_set,
    "cordon_node": lambda args, _: _node(args, True),
    "uncordon_node": lambda args, _: _node(args, False),
    "set_hpa_max_replicas": _hpa_max,
    "drain_node": _drained,
}


def observe(entry: AuditEntry) -> tuple[str, str]:
    """(what the cluster shows now, in words; the effect that implies). Never raises."""
    observer = OBSERVERS.get(entry.tool)
    if observer is None:
        return f"{entry.tool} has no re-read; what it did is unknown", Effect.UNKNOWN
    try:
        return observer(entry.arguments or {}, entry)
    except Exception as exc:  # noqa: BLE001 - a failed re-read is recorded as unknown, not raised
        return f"the re-read failed ({type(exc).__name__}: {str(exc)[:300]})", Effect.UNKNOWN
