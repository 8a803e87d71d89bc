"""oom_kill_remediation raises the limit on the deployment by name, not through a pod name: the
pod may be replaced or evicted (a node drain) between the incident and the approval. Databases
seeded by the first version of 0003 get the step fixed here, unless an operator changed it."""

from django.db import migrations

OLD = {"namespace": "{{ namespace }}", "pod": "{{ pod }}", "container": "{{ container }}",
       "memory": "{{ evidence.memory_limit|scale_quantity:2 }}"}
NEW = {"namespace": "{{ namespace }}", "name": "{{ deployment }}", "container": "{{ container }}",
       "memory": "{{ evidence.memory_limit|scale_quantity:2 }}"}


def forwards(apps, schema_editor):
    Step = apps.get_model("playbooks", "Step")
    for step in Step.objects.filter(playbook__name="oom_kill_remediation", tool="patch_memory_limit"):
        if step.args == OLD:
            step.args = NEW
            step.save(update_fields=["args"])


class Migration(migrations.Migration):
    dependencies = [("playbooks", "0003_seed_playbooks")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
