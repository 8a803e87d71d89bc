"""MCPServer, MCPTool, Approval, AuditEntry (the tools and risk gate room).

The gate's state lives here: an `Approval` is bound to one tool and one canonical set of
arguments (by digest), and `AuditEntry` is append-only -- refused by the model, its queryset
and a PostgreSQL trigger (migration 0002), so even raw SQL cannot rewrite history.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import orjson
from django.conf import settings
from django.db import models

from k8s.names import FullMatchValidator

__all__ = ["MCPServer", "MCPTool", "Approval", "AuditEntry", "Effect", "Risk", "canonical_arguments", "arguments_digest"]

NAME_VALIDATOR = FullMatchValidator(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "Use lowercase letters, digits and '-', starting and ending with a letter or digit.",
)
# Codes people type in chat: no 0/O/1/I/L, so a code read aloud or retyped cannot be confused.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6


class Risk(models.TextChoices):
    LOW = "LOW", "Low (runs at once)"
    MEDIUM = "MEDIUM", "Medium (needs an approval)"
    HIGH = "HIGH", "High (needs an approver other than the requester)"


def canonical_arguments(arguments: dict[str, Any]) -> bytes:
    """One byte string per set of arguments, whatever the key order: what an approval binds."""
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)


def arguments_digest(tool: str, arguments: dict[str, Any]) -> str:
    return hashlib.sha256(tool.encode() + b"\0" + canonical_arguments(arguments)).hexdigest()


class MCPServer(models.Model):
    class Transport(models.TextChoices):
        STDIO = "stdio", "stdio (a local command)"
        STREAMABLE_HTTP = "streamable-http", "Streamable HTTP"
        SSE = "sse", "SSE (legacy)"

    name = models.CharField(max_length=63, unique=True, validators=[NAME_VALIDATOR])
    description = models.CharField(max_length=300, blank=True)
    transport = models.CharField(max_length=20, choices=Transport.choices, default=Transport.STDIO)
    command = models.CharField(max_length=500, blank=True, help_text="stdio: the executable to start.")
    args = models.JSONField(default=list, blank=True, help_text="stdio: list of arguments.")
    env = models.JSONField(
        default=dict, blank=True, help_text='stdio: extra environment; a value "${VAR}" is read from our environment.'
    )
    url = models.URLField(max_length=500, blank=True, help_text="streamable-http / sse: the endpoint URL.")
    headers = models.JSONField(
        default=dict,
        blank=True,
        help_text='HTTP headers; a value may hold "${VAR}" read from our environment, so secrets stay out of the database.',
    )
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds per call; empty = AIOPS_MCP_TIMEOUT.")
    enabled = models.BooleanField(default=True)
    builtin = models.BooleanField(
        default=False, editable=False, help_text="Our own Kubernetes MCP server: tools come from its code."
    )
    last_sync_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP server"
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(transport="stdio") | ~models.Q(command=""),
                name="agents_mcpserver_stdio_has_command",
                violation_error_message="A stdio server needs a command.",
            ),
            models.CheckConstraint(
                condition=models.Q(transport="stdio") | ~models.Q(url=""),
                name="agents_mcpserver_http_has_url",
                violation_error_message="An HTTP or SSE server needs a URL.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MCPTool(models.Model):
    """A tool callers can name; `name` is unique across servers (third-party ones are prefixed)."""

    server = models.ForeignKey(MCPServer, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=128, unique=True, help_text="The name callers use.")
    remote_name = models.CharField(max_length=128, help_text="The tool's name on its server.")
    description = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict, blank=True)
    risk = models.CharField(max_length=6, choices=Risk.choices, default=Risk.HIGH)
    risk_set_by_admin = models.BooleanField(
        default=False, help_text="Keep this risk class across syncs (an admin lowered or raised it)."
    )
    verbs = models.JSONField(default=list, blank=True)
    resources = models.JSONField(default=list, blank=True)
    read_only_hint = models.BooleanField(default=False)
    destructive_hint = models.BooleanField(default=True)
    enabled = models.BooleanField(default=True)
    available = models.BooleanField(default=True, help_text="Listed by its server at the last sync.")
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["server__name", "name"]
        verbose_name = "MCP tool"
        constraints = [
            models.UniqueConstraint(fields=["server", "remote_name"], name="agents_mcptool_unique_per_server"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # An admin who edits the risk in the form takes it over from the sync.
        if self.pk and "update_fields" not in kwargs:
            old = type(self).objects.filter(pk=self.pk).values_list("risk", flat=True).first()
            if old is not None and old != self.risk:
                self.risk_set_by_admin = True
        super().save(*args, **kwargs)


def new_approval_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


class Approval(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"
        CANCELLED = "cancelled", "cancelled (its incident is no longer open)"

    class Origin(models.TextChoices):
        PLAYBOOK = "playbook", "Playbook step"
        CHAT = "chat", "Chat command"
        LLM = "llm", "LLM proposal"

    code = models.CharField(max_length=12, unique=True, default=new_approval_code, editable=False)
    tool = models.CharField(max_length=128)
    arguments = models.JSONField(default=dict)
    arguments_digest = models.CharField(max_length=64, editable=False)
    risk = models.CharField(max_length=6, choices=Risk.choices)
    reason = models.TextField()
    origin = models.CharField(max_length=10, choices=Origin.choices)
    origin_ref = models.CharField(max_length=200, blank=True, help_text="e.g. the StepRun id or chat message id.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requester = models.CharField(max_length=200, blank=True, help_text="Who asked, as shown to people.")
    approvers = models.JSONField(
        default=list, blank=True, help_text="Usernames allowed to decide; empty = members of the approvers group."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    requested_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    # The gate: the first call binds its idempotency key; only that key may use it again.
    used_at = models.DateTimeField(null=True, blank=True)
    used_key = models.CharField(max_length=200, blank=True)
    # Chat/LLM approvals are carried out by this app; set once the outcome was announced.
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [
            models.Index(fields=["state", "expires_at"], name="agents_appr_state_exp"),
            models.Index(fields=["origin", "origin_ref"], name="agents_appr_origin"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(state__in=["pending", "approved", "rejected", "expired", "cancelled"]),
                name="agents_approval_state_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(state="pending") | models.Q(decided_at__isnull=False),
                name="agents_approval_decided_has_time",
            ),
            models.CheckConstraint(
                condition=models.Q(used_at__isnull=True) | (models.Q(state="approved") & ~models.Q(used_key="")),
                name="agents_approval_used_only_when_approved",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.tool} ({self.state})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.arguments_digest:
            self.arguments_digest = arguments_digest(self.tool, self.arguments)
        super().save(*args, **kwargs)

    def matches(self, tool: str, arguments: dict[str, Any]) -> bool:
        return self.tool == tool and self.arguments_digest == arguments_digest(tool, arguments)


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise PermissionError("the audit log is append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("the audit log is append-only")


class Effect(models.TextChoices):
    """What a completed mutating call did to the cluster: the one `changed` entry per action is
    the entry that says the action happened."""

    CHANGED = "changed", "Changed the cluster"
    UNCHANGED = "unchanged", "Changed nothing"
    UNKNOWN = "unknown", "Unknown"


class AuditEntry(models.Model):
    class Action(models.TextChoices):
        TOOL_CALL = "tool_call"
        TOOL_STARTED = "tool_started", "Tool call started"
        TOOL_REFUSED = "tool_refused"
        APPROVAL_REQUESTED = "approval_requested"
        APPROVAL_DECIDED = "approval_decided"
        APPROVAL_REFUSED = "approval_refused", "Approval decision refused"
        APPROVAL_EXPIRED = "approval_expired"
        CONFIG_CHANGE = "config_change", "Rule or playbook changed"
        INCIDENT_CLOSED = "incident_closed", "Incident closed by hand"
        RUN_STARTED = "run_started", "Playbook started by hand"
        RUN_CANCELLED = "run_cancelled", "Playbook run cancelled by hand"
        ACCESS_REFUSED = "access_refused", "Access refused (unknown chat user, login lockout)"
        API_TOKEN = "api_token", "API token created or revoked"
        API_CALL = "api_call", "Change made through the REST API"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=200, help_text="Who: a user, a rule (playbook:...), the LLM (llm:...).")
    action = models.CharField(max_length=20, choices=Action.choices)
    tool = models.CharField(max_length=128, blank=True)
    server = models.CharField(max_length=63, blank=True)
    risk = models.CharField(max_length=6, blank=True)
    arguments = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True, help_text="Why the actor asked.")
    outcome = models.CharField(max_length=20, help_text="ok, error, refused, approved, rejected, expired, ...")
    detail = models.TextField(blank=True, help_text="The refusal reason, the error, or the output (capped).")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    approval = models.ForeignKey(Approval, null=True, blank=True, on_delete=models.PROTECT, related_name="audit")
    # Write-ahead: a mutating call is a `tool_started` row committed before the call is sent,
    # then exactly one `tool_call` row that completes it (rows are never updated; the unique
    # one-to-one is what makes "one completion per call" hold against racing writers).
    completes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="completion",
        help_text="The tool_started entry this entry completes.",
    )
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="retries",
        help_text="The earlier call (left unfinished by a dead worker) that this call retries.",
    )
    effect = models.CharField(
        max_length=10, choices=Effect.choices, blank=True,
        help_text="Completions of mutating calls: did this call change the cluster?",
    )

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["tool", "created_at"], name="agents_audit_tool_time"),
            # Finding the started calls of one idempotency key (a retry) and the unfinished ones.
            models.Index(fields=["idempotency_key", "created_at"], name="agents_audit_started_key",
                         condition=models.Q(action="tool_started")),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.tool} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None or not self._state.adding:
            raise PermissionError("the audit log is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("the audit log is append-only")
