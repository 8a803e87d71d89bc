"""The built-in playbooks act on their own diagnosis.

- crash_loop_remediation restarts only when the RCA says the process itself failed (app_crash)
  or does not know; a dependency that is down, a configuration, permission or image problem is
  handed off to a person with the diagnosis and what to check. More than one failing pod of a
  Deployment/StatefulSet/DaemonSet gets a rollout restart of the workload, not one pod.
- oom_kill_remediation raises the limit on Deployments, StatefulSets and DaemonSets alike, and
  hands off where it cannot be done safely (a bare pod, no limit to bound the change against,
  or an RCA that names another cause).
- The diagnostic playbooks (image pull, unschedulable, probe failure) end `handed_off`: a
  person must act, and the run says so.

A playbook whose steps an operator changed is left alone: only steps exactly as 0003/0004 seeded
them are replaced. `upgrade_defaults` is importable so tests that truncate tables can seed again.
"""

from django.db import migrations

NS, POD, NAME, KIND = "{{ namespace }}", "{{ pod }}", "{{ name }}", "{{ kind }}"
VERIFY = {"name": "verify", "kind": "verify", "args": {"checks": 12, "interval": 5}, "timeout_seconds": 120}
RCA = {"name": "root cause", "kind": "rca", "args": {}, "on_failure": "continue", "timeout_seconds": 300}

# The process itself failed, or nothing says otherwise ("" = the RCA step failed).
PROCESS_FAILED = 'rca.failure_class in ["app_crash", "unknown", ""]'
WHOLE_WORKLOAD = 'pod_count > 1 && kind in ["Deployment", "StatefulSet", "DaemonSet"]'
OOM = 'rca.failure_class in ["oom_killed", "unknown", ""]'
RAISABLE = 'kind in ["Deployment", "StatefulSet", "DaemonSet"] && has(evidence.memory_limit)'
DIAGNOSIS = (
    'The diagnosis is {{ rca.failure_class|default:"unknown" }} '
    '({{ rca.root_cause|default:"no RCA report" }}). '
    'What to check: {{ rca.recommended_actions.0.action|default:"the pod\'s events and logs" }}.'
)


def _handoff(name, text, when=""):
    step = {"name": name, "kind": "handoff", "args": {"text": text}, "on_failure": "continue"}
    if when:
        step["when"] = when
    return step


PLAYBOOKS = {
    "crash_loop_remediation": {
        "description": "A container keeps crashing: collect the pod, its logs and their analysis, explain the cause. "
        "Process crash or unknown: restart (the whole workload when more than one pod fails, else the pod; MEDIUM, "
        "approved by a person) and verify. A dependency, configuration, permission or image problem: hand off to "
        "a person with the diagnosis and what to check.",
        "steps": [
            {"name": "describe pod", "kind": "tool", "tool": "describe_pod",
             "args": {"namespace": NS, "name": POD}, "on_failure": "continue"},
            {"name": "previous logs", "kind": "tool", "tool": "get_pod_logs",
             "args": {"namespace": NS, "name": POD, "previous": True, "tail": 200}, "on_failure": "continue"},
            {"name": "analyze logs", "kind": "tool", "tool": "analyze_pod_logs",
             "args": {"namespace": NS, "name": POD, "previous": True}, "on_failure": "continue"},
            RCA,
            _handoff("hand off", "Not restarting {{ kind }} {{ namespace }}/{{ name }}: a restart does not fix "
                     "this. " + DIAGNOSIS, when=f"!({PROCESS_FAILED})"),
            {"name": "restart workload", "kind": "tool", "tool": "restart_workload",
             "args": {"namespace": NS, "kind": KIND, "name": NAME, "restarted_at": "{{ run.started }}"},
             "when": f"{PROCESS_FAILED} && {WHOLE_WORKLOAD}"},
            {"name": "restart pod", "kind": "tool", "tool": "restart_pod", "args": {"namespace": NS, "name": POD},
             "when": f"{PROCESS_FAILED} && !({WHOLE_WORKLOAD})"},
            VERIFY,
        ],
    },
    "oom_kill_remediation": {
        "description": "A container is OOM-killed: describe it, explain the cause, raise the memory limit of its "
        "Deployment, StatefulSet or DaemonSet by a bounded factor (HIGH), verify. Hands off when the RCA names "
        "another cause or the limit cannot be raised safely.",
        "steps": [
            {"name": "describe pod", "kind": "tool", "tool": "describe_pod",
             "args": {"namespace": NS, "name": POD}, "on_failure": "continue"},
            RCA,
            _handoff("hand off", "Not raising the memory limit of {{ kind }} {{ namespace }}/{{ name }}: the "
                     "diagnosis names another cause. " + DIAGNOSIS, when=f"!({OOM})"),
            _handoff("cannot raise safely", "{{ kind }} {{ namespace }}/{{ name }} is OOM-killed, but its memory "
                     "limit cannot be raised safely here (a bare pod, or no current limit to bound the change "
                     "against). " + DIAGNOSIS, when=f"!({RAISABLE})"),
            {"name": "raise memory limit", "kind": "tool", "tool": "patch_memory_limit", "when": f"{OOM} && {RAISABLE}",
             # The workload, not a pod: its pods may be replaced (or evicted) before this runs.
             "args": {"namespace": NS, "kind": KIND, "name": NAME, "container": "{{ container }}",
                      "memory": "{{ evidence.memory_limit|scale_quantity:2 }}"}},
            VERIFY,
        ],
    },
}
DIAGNOSTIC = {
    "image_pull_diagnosis": ("Image pull failure: ", "An image cannot be pulled: describe, events, RCA, hand off to "
                             "a person with the diagnosis (no automatic fix)."),
    "unschedulable_diagnosis": ("Unschedulable pods: ", "Pods cannot be scheduled: describe, nodes, RCA, hand off "
                                "to a person with the diagnosis (no automatic fix)."),
    "probe_failure_diagnosis": ("Probe failure: ", "A container fails its probes: describe, logs and their "
                                "analysis, RCA, hand off to a person with the diagnosis."),
}


def _as_seeded(step):
    return (step.name, step.kind, step.tool, step.args, step.on_failure, step.timeout_seconds)


def _seeded_steps(seed, name):
    spec = next(p for p in seed.PLAYBOOKS if p["name"] == name)
    steps = []
    for step in spec["steps"]:
        args = dict(step.get("args", {}))
        steps.append((step["name"], step["kind"], step.get("tool", ""), args, step.get("on_failure", "stop"),
                      step.get("timeout_seconds", 180)))
    return spec, steps


def upgrade_defaults(Playbook, Step):  # noqa: N803 - historical models are passed in
    import importlib

    seed = importlib.import_module("playbooks.migrations.0003_seed_playbooks")
    oom_before_0004 = importlib.import_module("playbooks.migrations.0004_oom_patch_by_deployment").OLD
    for name, spec in PLAYBOOKS.items():
        playbook = Playbook.objects.filter(name=name).first()
        if playbook is None:
            continue
        _, seeded = _seeded_steps(seed, name)
        current = [_as_seeded(step) for step in Step.objects.filter(playbook=playbook).order_by("order")]
        older = [tuple(s[:3]) + (oom_before_0004 if s[2] == "patch_memory_limit" else s[3],) + tuple(s[4:])
                 for s in seeded]
        if current not in (seeded, older):
            continue  # an operator changed it: theirs
        Step.objects.filter(playbook=playbook).delete()
        for order, step in enumerate(spec["steps"], start=1):
            Step.objects.create(
                playbook=playbook, order=order, name=step["name"], kind=step["kind"], tool=step.get("tool", ""),
                args=step.get("args", {}), when=step.get("when", ""), on_failure=step.get("on_failure", "stop"),
                timeout_seconds=step.get("timeout_seconds", 180),
            )
        playbook.description = spec["description"]
        playbook.save(update_fields=["description"])
    for name, (_prefix, description) in DIAGNOSTIC.items():
        playbook = Playbook.objects.filter(name=name).first()
        if playbook is None:
            continue
        _, seeded = _seeded_steps(seed, name)
        current = [_as_seeded(step) for step in Step.objects.filter(playbook=playbook).order_by("order")]
        if current != seeded:
            continue
        Step.objects.filter(playbook=playbook, kind="notify").update(kind="handoff", name="hand off")
        playbook.description = description
        playbook.save(update_fields=["description"])


def forwards(apps, schema_editor):
    upgrade_defaults(apps.get_model("playbooks", "Playbook"), apps.get_model("playbooks", "Step"))


class Migration(migrations.Migration):
    dependencies = [("playbooks", "0006_names_fullmatch")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
