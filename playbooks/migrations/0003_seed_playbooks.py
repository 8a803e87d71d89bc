"""Seed the built-in playbooks and the rules that trigger them.

Idempotent by name: an existing playbook or rule (an operator may have edited it) is left as it
is. `seed_defaults` is importable so tests that truncate tables can seed again.
"""

from django.db import migrations

NS, POD, NODE, DEPLOY = "{{ namespace }}", "{{ pod }}", "{{ node }}", "{{ deployment }}"
VERIFY = {"name": "verify", "kind": "verify", "args": {"checks": 12, "interval": 5}, "timeout_seconds": 120}


def _rca(on_failure="continue"):
    return {"name": "root cause", "kind": "rca", "args": {}, "on_failure": on_failure, "timeout_seconds": 300}


def _notify(text):
    return {"name": "notify", "kind": "notify", "args": {"text": text}, "on_failure": "continue"}


DIAGNOSIS_TEXT = (
    "{{ incident.title }} ({{ kind }} {{ namespace }}/{{ name }}). "
    'Likely cause ({{ rca.failure_class|default:"unknown" }}): {{ rca.root_cause|default:"no RCA report" }}'
)

PLAYBOOKS = [
    {
        "name": "crash_loop_remediation",
        "description": "A container keeps crashing: collect the pod, its logs and their analysis, explain the cause, "
        "then restart the pod (MEDIUM, approved by a person) and verify the workload recovers.",
        "steps": [
            {"name": "describe pod", "kind": "tool", "tool": "describe_pod",
             "args": {"namespace": NS, "name": POD}, "on_failure": "continue"},
            {"name": "previous logs", "kind": "tool", "tool": "get_pod_logs",
             "args": {"namespace": NS, "name": POD, "previous": True, "tail": 200}, "on_failure": "continue"},
            {"name": "analyze logs", "kind": "tool", "tool": "analyze_pod_logs",
             "args": {"namespace": NS, "name": POD, "previous": True}, "on_failure": "continue"},
            _rca(),
            {"name": "restart pod", "kind": "tool", "tool": "restart_pod", "args": {"namespace": NS, "name": POD}},
            VERIFY,
        ],
    },
    {
        "name": "oom_kill_remediation",
        "description": "A container is OOM-killed: describe it, explain the cause, raise the owning deployment's "
        "memory limit by a bounded factor (HIGH), verify.",
        "steps": [
            {"name": "describe pod", "kind": "tool", "tool": "describe_pod",
             "args": {"namespace": NS, "name": POD}, "on_failure": "continue"},
            _rca(),
            {"name": "raise memory limit", "kind": "tool", "tool": "patch_memory_limit",
             # The deployment, not a pod: its pods may be replaced (or evicted) before this runs.
             "args": {"namespace": NS, "name": DEPLOY, "container": "{{ container }}",
                      "memory": "{{ evidence.memory_limit|scale_quantity:2 }}"}},
            VERIFY,
        ],
    },
    {
        "name": "deployment_rollback",
        "description": "A rollout left a deployment with no available replicas while an older revision worked: "
        "show the history, roll back (HIGH), watch the rollout, verify.",
        "steps": [
            {"name": "rollout history", "kind": "tool", "tool": "rollout_history",
             "args": {"namespace": NS, "name": DEPLOY}, "on_failure": "continue"},
            {"name": "roll back", "kind": "tool", "tool": "rollback_deployment", "args": {"namespace": NS, "name": DEPLOY}},
            {"name": "rollout status", "kind": "tool", "tool": "rollout_status",
             "args": {"namespace": NS, "name": DEPLOY}, "on_failure": "continue"},
            VERIFY,
        ],
    },
    {
        "name": "node_not_ready_remediation",
        "description": "A node is NotReady: describe it, cordon it (MEDIUM), drain it (HIGH), and verify its "
        "workloads run healthy elsewhere. The node itself needs a person; its incident stays open until it is Ready.",
        "steps": [
            {"name": "describe node", "kind": "tool", "tool": "describe_node", "args": {"name": NODE},
             "on_failure": "continue"},
            {"name": "cordon node", "kind": "tool", "tool": "cordon_node", "args": {"name": NODE}},
            {"name": "drain node", "kind": "tool", "tool": "drain_node", "args": {"name": NODE}, "timeout_seconds": 300},
            VERIFY,
        ],
    },
    {
        "name": "scale_up_on_load",
        "description": "An HPA is at its maximum and wants more: show it, double maxReplicas within "
        "AIOPS_MAX_HPA_REPLICAS (MEDIUM), verify.",
        "steps": [
            {"name": "show hpa", "kind": "tool", "tool": "get_hpa", "args": {"namespace": NS, "name": "{{ hpa }}"},
             "on_failure": "continue"},
            {"name": "raise max replicas", "kind": "tool", "tool": "set_hpa_max_replicas",
             "args": {"namespace": NS, "name": "{{ hpa }}", "max_replicas": "{{ evidence.max_replicas|mul:2|min:50 }}"}},
            VERIFY,
        ],
    },
    {
        "name": "image_pull_diagnosis",
        "description": "An image cannot be pulled: describe, events, RCA, tell people (no automatic fix).",
        "steps": [
            {"name": "describe pod", "kind": "tool", "tool": "describe_pod",
             "args": {"namespace": NS, "name": POD}, "on_failure": "continue"},
            {"name": "events", "kind": "tool", "tool": "list_events",
             "args": {"namespace": NS, "object_name": POD, "limit": 50}, "on_failure": "continue"},
            _rca(),
            _notify("Image pull failure: " + DIAGNOSIS_TEXT),
        ],
    },
    {
        "name": "unschedulable_diagnosis",
        "description": "Pods cannot be scheduled: describe, nodes, RCA, tell people (no automatic fix).",
        "steps": [
            {"name": "describe pod", "kind": "tool", "tool": "describe_pod",
             "args": {"namespace": NS, "name": POD}, "on_failure": "continue"},
            {"name": "nodes", "kind": "tool", "tool": "list_nodes", "args": {}, "on_failure": "continue"},
            _rca(),
            _notify("Unschedulable pods: " + DIAGNOSIS_TEXT),
        ],
    },
    {
        "name": "probe_failure_diagnosis",
        "description": "A container fails its probes: describe, logs and their analysis, RCA, tell people.",
        "steps": [
            {"name": "describe pod", "kind": "tool", "tool": "describe_pod",
             "args": {"namespace": NS, "name": POD}, "on_failure": "continue"},
            {"name": "analyze logs", "kind": "tool", "tool": "analyze_pod_logs",
             "args": {"namespace": NS, "name": POD}, "on_failure": "continue"},
            _rca(),
            _notify("Probe failure: " + DIAGNOSIS_TEXT),
        ],
    },
]

RULES = [
    # A bad rollout also crash-loops; rolling back is the fix, so this rule outranks crash_loop's.
    {"name": "bad_rollout", "priority": 200, "finding_types": ["replication_failure"],
     "evidence": {"bad_rollout": True}, "playbook": "deployment_rollback",
     "description": "A deployment has no available replicas and its newest revision is the failing one."},
    {"name": "oom_killed", "priority": 150, "finding_types": ["oom_killed"], "playbook": "oom_kill_remediation",
     "description": "A container is killed for exceeding its memory limit."},
    {"name": "image_pull_failure", "priority": 120, "finding_types": ["image_pull_failure"],
     "playbook": "image_pull_diagnosis", "description": "An image cannot be pulled."},
    {"name": "crash_loop", "priority": 100, "finding_types": ["crash_loop"], "playbook": "crash_loop_remediation",
     "description": "A container is in CrashLoopBackOff."},
    {"name": "node_not_ready", "priority": 100, "finding_types": ["not_ready_node"],
     "playbook": "node_not_ready_remediation", "description": "A node is NotReady."},
    {"name": "hpa_maxed", "priority": 100, "finding_types": ["hpa_maxed"], "playbook": "scale_up_on_load",
     "description": "An HPA sits at maxReplicas and wants more."},
    {"name": "probe_failure", "priority": 90, "finding_types": ["probe_failure"], "playbook": "probe_failure_diagnosis",
     "description": "A running container fails its liveness or readiness probe."},
    {"name": "unschedulable", "priority": 90, "finding_types": ["unschedulable"], "playbook": "unschedulable_diagnosis",
     "description": "Pods stay Pending: no node fits."},
]


def seed_defaults(Playbook, Step, Rule):  # noqa: N803 - historical models are passed in
    for spec in PLAYBOOKS:
        playbook, created = Playbook.objects.get_or_create(
            name=spec["name"], defaults={"description": spec["description"], "enabled": True}
        )
        if created:
            for order, step in enumerate(spec["steps"], start=1):
                Step.objects.create(
                    playbook=playbook, order=order, name=step["name"], kind=step["kind"], tool=step.get("tool", ""),
                    args=step.get("args", {}), on_failure=step.get("on_failure", "stop"),
                    timeout_seconds=step.get("timeout_seconds", 180),
                )
    for spec in RULES:
        Rule.objects.get_or_create(
            name=spec["name"],
            defaults={
                "description": spec["description"], "priority": spec["priority"],
                "finding_types": spec["finding_types"], "evidence": spec.get("evidence", {}),
                "playbook": Playbook.objects.get(name=spec["playbook"]), "cooldown_seconds": 600, "auto_run": True,
            },
        )


def forwards(apps, schema_editor):
    seed_defaults(apps.get_model("playbooks", "Playbook"), apps.get_model("playbooks", "Step"),
                  apps.get_model("playbooks", "Rule"))


def backwards(apps, schema_editor):
    Rule = apps.get_model("playbooks", "Rule")
    Playbook = apps.get_model("playbooks", "Playbook")
    Rule.objects.filter(name__in=[r["name"] for r in RULES]).delete()
    Playbook.objects.filter(name__in=[p["name"] for p in PLAYBOOKS], runs__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("playbooks", "0002_engine")]

    operations = [migrations.RunPython(forwards, backwards)]
