"""Rule, Playbook, Step, PlaybookRun, StepRun (the engine's room).

A `Rule` decides which `Playbook` an incident gets; a `PlaybookRun` is one execution of it
against one incident, and its `StepRun`s are a snapshot of the playbook's steps taken when the
run was created, so editing a playbook never changes a run that is already under way. Both run
models are state machines moved only by conditional updates (`UPDATE ... WHERE state = ...`),
which is what makes any number of workers, a redelivered message and the reconciler safe.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from k8s.names import FullMatchValidator

__all__ = ["Severity", "Rule", "Playbook", "Step", "PlaybookRun", "StepRun"]

PLAYBOOK_NAME = FullMatchValidator(
    r"^[a-z0-9][a-z0-9_-]{0,99}$",
    "Use lowercase letters, digits, '_' and '-', starting with a letter or digit.",
)


class Severity(models.TextChoices):
    INFO = "info", "info"
    WARNING = "warning", "warning"
    CRITICAL = "critical", "critical"

    @classmethod
    def rank(cls, value: str) -> int:
        return {"info": 0, "warning": 1, "critical": 2}.get(value, -1)


class Playbook(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[PLAYBOOK_NAME])
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Step(models.Model):
    class Kind(models.TextChoices):
        TOOL = "tool", "tool call"
        RCA = "rca", "root-cause analysis"
        NOTIFY = "notify", "notify"
        VERIFY = "verify", "verify"
        HANDOFF = "handoff", "hand off to a person (notify, end the run)"

    class OnFailure(models.TextChoices):
        STOP = "stop", "stop the run"
        CONTINUE = "continue", "continue with the next step"

    playbook = models.ForeignKey(Playbook, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.TOOL)
    tool = models.CharField(max_length=128, blank=True, help_text="tool steps: the MCP tool to call.")
    args = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            'Arguments; strings may hold templates such as "{{ namespace }}", "{{ pod }}", "{{ node }}", '
            '"{{ evidence.container|default:\\"app\\" }}". notify: {"text": ...}; verify: {"checks": N, "interval": S}.'
        ),
    )
    when = models.TextField(
        blank=True,
        max_length=2000,
        help_text=(
            "Run the step only when this CEL condition holds, e.g. "
            'rca.failure_class in ["app_crash", "unknown"] && pod_count > 1. Empty = always.'
        ),
    )
    on_failure = models.CharField(max_length=10, choices=OnFailure.choices, default=OnFailure.STOP)
    timeout_seconds = models.PositiveIntegerField(
        default=180,
        validators=[MinValueValidator(1), MaxValueValidator(86400)],
        help_text="A step queued or running longer than this without progress is re-enqueued by the reconciler.",
    )

    class Meta:
        ordering = ["playbook", "order"]
        constraints = [
            models.UniqueConstraint(fields=["playbook", "order"], name="playbooks_step_unique_order"),
            models.CheckConstraint(
                condition=~models.Q(kind="tool") | ~models.Q(tool=""),
                name="playbooks_step_tool_named",
                violation_error_message="A tool step needs a tool.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.order}. {self.name}"

    def clean(self) -> None:
        from playbooks.rules import validate_step

        # Names of earlier steps are checked with the whole playbook (the admin's step formset,
        # the YAML import: `playbook_condition_errors`); alone, a step checks everything else.
        errors = validate_step(kind=self.kind, tool=self.tool, args=self.args, when=self.when, name=self.name)
        if errors:
            raise ValidationError(errors)


class Rule(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[PLAYBOOK_NAME])
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=100, help_text="The highest-priority matching rule wins.")
    finding_types = models.JSONField(
        default=list, blank=True, help_text="Matches when any of the incident's current finding types is listed."
    )
    alert_names = models.JSONField(default=list, blank=True, help_text="Alertmanager alertnames that match.")
    evidence = models.JSONField(
        default=dict,
        blank=True,
        help_text='Conditions on the incident\'s evidence, key path -> value, e.g. {"bad_rollout": true}.',
    )
    namespace_regex = models.CharField(max_length=300, blank=True, help_text="Python regex the namespace must fully match.")
    label_selector = models.CharField(
        max_length=500, blank=True, help_text="Kubernetes label selector on the workload's labels (app=web,tier!=db)."
    )
    min_severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.INFO)
    clusters = models.ManyToManyField("k8s.Cluster", blank=True, help_text="Empty = every cluster.")
    cooldown_seconds = models.PositiveIntegerField(
        default=600, help_text="No new run from this rule for the same workload within this many seconds."
    )
    playbook = models.ForeignKey(Playbook, on_delete=models.PROTECT, related_name="rules")
    approver_group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Who may approve this rule's risky steps; empty = the default approvers group.",
    )
    approvers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="+", help_text="People who may approve (instead of the group)."
    )
    escalate_after = models.PositiveSmallIntegerField(
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text=(
            "Hand off instead of asking for the same action again once it failed this many times for the "
            "workload within the escalation window (fix did not hold, or the incident came back)."
        ),
    )
    escalation_window_seconds = models.PositiveIntegerField(
        default=6 * 3600,
        validators=[MinValueValidator(60), MaxValueValidator(30 * 86400)],
        help_text="How far back the workload's history counts for escalation (default 6 h).",
    )
    auto_run = models.BooleanField(
        default=True, help_text="Start the run at once; off = the run is proposed and waits for a person to start it."
    )
    in_maintenance = models.CharField(
        max_length=8, choices=[("wait", "wait for the window to end"), ("handoff", "hand off to a person")],
        default="wait", help_text="A MEDIUM/HIGH step due during a maintenance window: wait for its end, or hand off.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from playbooks.rules import validate_rule

        errors = validate_rule(
            finding_types=self.finding_types,
            alert_names=self.alert_names,
            evidence=self.evidence,
            namespace_regex=self.namespace_regex,
            label_selector=self.label_selector,
        )
        if errors:
            raise ValidationError(errors)


class PlaybookRun(models.Model):
    class State(models.TextChoices):
        PROPOSED = "proposed", "proposed (waits for a person to start it)"
        RUNNING = "running"
        WAITING_APPROVAL = "waiting_approval", "waiting for an approval"
        FINISHED = "finished"

    class Outcome(models.TextChoices):
        RESOLVED = "resolved", "resolved (verified healthy)"
        MITIGATED = "mitigated", "mitigated (workloads healthy; the cause needs a human)"
        FIX_DID_NOT_HOLD = "fix_did_not_hold", "fix did not hold"
        NOT_REMEDIATED = "not_remediated", "not remediated (actions skipped; still failing)"
        COMPLETED = "completed", "completed (diagnostic playbook)"
        DRY_RUN = "dry_run", "dry run (nothing called)"
        REJECTED = "rejected", "approval rejected"
        EXPIRED = "expired", "approval expired"
        FAILED = "failed", "a step failed"
        HANDED_OFF = "handed_off", "handed off to a person (the diagnosis says not to act)"
        CANCELLED = "cancelled"

    incident = models.ForeignKey("playbooks.Incident", on_delete=models.CASCADE, related_name="runs")
    cluster = models.ForeignKey("k8s.Cluster", on_delete=models.CASCADE, related_name="+")
    rule = models.ForeignKey(Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    playbook = models.ForeignKey(Playbook, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    playbook_name = models.CharField(max_length=100, help_text="Kept when the playbook is deleted.")
    state = models.CharField(max_length=20, choices=State.choices, default=State.RUNNING)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    dry_run = models.BooleanField(default=False, help_text="AIOPS_DRY_RUN when the run was created.")
    # Facts steps pass on (e.g. the workloads on a node before it is drained).
    context = models.JSONField(default=dict, blank=True)
    summary = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["cluster", "created_at"], name="playbooks_run_cluster_time"),
            models.Index(fields=["state"], name="playbooks_run_state"),
        ]
        constraints = [
            # One active run per incident, whoever creates it and however many workers race.
            models.UniqueConstraint(
                fields=["incident"],
                condition=~models.Q(state="finished"),
                name="playbooks_one_active_run_per_incident",
            ),
            models.CheckConstraint(
                condition=(models.Q(state="finished") & ~models.Q(outcome="") & models.Q(finished_at__isnull=False))
                | (~models.Q(state="finished") & models.Q(outcome="")),
                name="playbooks_run_outcome_iff_finished",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} {self.playbook_name} ({self.outcome or self.state})"

    @property
    def active(self) -> bool:
        return self.state != self.State.FINISHED


class StepRun(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        WAITING_APPROVAL = "waiting_approval", "waiting for an approval"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"
        REJECTED = "rejected"
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    DONE_STATES = ("succeeded", "failed", "skipped", "rejected", "expired", "cancelled")

    run = models.ForeignKey(PlaybookRun, on_delete=models.CASCADE, related_name="steps")
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Snapshot of the step when the run was created.
    order = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Step.Kind.choices)
    tool = models.CharField(max_length=128, blank=True)
    args_template = models.JSONField(default=dict, blank=True)
    when = models.TextField(blank=True)
    on_failure = models.CharField(max_length=10, choices=Step.OnFailure.choices, default=Step.OnFailure.STOP)
    timeout_seconds = models.PositiveIntegerField(default=180)
    # What happened.
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    risk = models.CharField(max_length=6, blank=True, help_text="Read from the tool registry when the step ran.")
    rendered_args = models.JSONField(null=True, blank=True)
    output = models.TextField(blank=True)
    data = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    approval = models.ForeignKey(
        "agents.Approval", null=True, blank=True, on_delete=models.PROTECT, related_name="step_runs"
    )
    audit = models.ForeignKey(
        "agents.AuditEntry", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # A running step's worker renews this while it works (AIOPS_STEP_LEASE); once it lapses the
    # worker is taken for dead and the reconciler sends the step again, long before its timeout.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Held by a maintenance window: queued again for its end (the reconciler leaves it until then).
    not_before = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "order"]
        constraints = [
            models.UniqueConstraint(fields=["run", "order"], name="playbooks_steprun_unique_order"),
        ]
        indexes = [models.Index(fields=["state", "updated_at"], name="playbooks_steprun_state_time")]

    def __str__(self) -> str:
        return f"{self.order}. {self.name} ({self.state})"

    @property
    def done(self) -> bool:
        return self.state in self.DONE_STATES
