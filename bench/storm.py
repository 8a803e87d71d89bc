"""A node holding 1,000 pods of 200 workloads goes NotReady: how many incidents and messages?

A sandbox in its own process (TLS + token, like a real API server) loads `empty`, then
`crowd_node`: one node with every pod of 200 deployments (5 replicas each) and a spare node,
aged past the detectors' grace periods; the node is made NotReady. Then one real poll
(`playbooks.services.poll.poll`: list, detect, correlate, ingest, the receivers writing outbox
rows) runs against the embedded PostgreSQL, with three chat targets (the console feed, a
Telegram chat and a Slack channel) and the seeded rules. A second poll follows, to show the
first one did it all. No worker runs: what is counted is what the polls queued.

Run:
  AIOPS_DB_USER=postgres .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-storm -- .venv/bin/python bench/storm.py
Last line: one JSON object with parent_incidents, child_incidents, max_messages_per_target and
the rest of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SANDBOX = """
import json, sys
from k8s.sandbox import Sandbox
sb = Sandbox(tls=True, state_dir=sys.argv[1], scenario="empty").start()
made = sb.crowd_node(int(sys.argv[2]), replicas=int(sys.argv[3]), node="node-crowded")
sb.fault("not_ready_node", "node-crowded")
sb.tick()
print("BENCH-READY " + json.dumps({"kubeconfig": str(sb.kubeconfig), "pods": made["pods"],
                                   "deployments": len(made["deployments"])}), flush=True)
sys.stdin.read()  # serve until the bench closes our stdin
sb.stop()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=5)
    args = parser.parse_args()

    # Platform secrets so the targets count as configured; nothing is delivered (no worker).
    os.environ.setdefault("TELEGRAM_BOT_TOKEN", "123456:bench-token")
    os.environ.setdefault("TELEGRAM_WEBHOOK_SECRET", "bench-secret")
    os.environ.setdefault("SLACK_BOT_TOKEN", "xoxb-bench")
    os.environ.setdefault("SLACK_SIGNING_SECRET", "bench-secret")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from django.db.models import Count

    from channels.models import ChannelTarget, NotificationStorm, OutboundMessage
    from k8s.models import Cluster
    from playbooks.models import Incident, PlaybookRun
    from playbooks.services.poll import poll

    with tempfile.TemporaryDirectory() as state:
        sandbox = subprocess.Popen([sys.executable, "-c", SANDBOX, state, str(args.workloads), str(args.replicas)],
                                   cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            ready = None
            for line in sandbox.stdout:  # type: ignore[union-attr]
                if line.startswith("BENCH-READY "):
                    ready = json.loads(line[len("BENCH-READY "):])
                    break
            if ready is None:
                raise SystemExit("the sandbox did not start")
            Incident.objects.all().delete()
            OutboundMessage.objects.all().delete()
            NotificationStorm.objects.all().delete()
            ChannelTarget.objects.all().delete()
            for name, kind, address in (("console", "web", "feed"), ("oncall", "telegram", "-1001234567890"),
                                        ("ops", "slack", "C0BENCHSTORM")):
                ChannelTarget.objects.create(name=name, kind=kind, address=address, min_severity="warning")
            Cluster.objects.filter(is_default=True).update(is_default=False)
            cluster, _ = Cluster.objects.update_or_create(
                name="bench-storm", defaults={"kubeconfig_path": ready["kubeconfig"], "enabled": True, "is_default": True})

            # What a long-lived worker has imported already (the kubernetes client's API modules, the
            # engine's task module): not part of a poll's cost.
            import playbooks.tasks_engine  # noqa: F401
            from k8s.client import api_client_for_kubeconfig
            from k8s.listing import list_calls

            list_calls(api_client_for_kubeconfig(ready["kubeconfig"]))
            started = time.perf_counter()
            first = poll(cluster)
            first_s = time.perf_counter() - started
            assert first.outcome == "ok", first.error
            after_first = dict(OutboundMessage.objects.filter(operation="send").values_list("target__name")
                               .annotate(n=Count("pk")).values_list("target__name", "n"))
            second = poll(cluster)
            assert second.outcome == "ok", second.error
        finally:
            sandbox.stdin.close()  # type: ignore[union-attr]
            sandbox.wait(60)

    per_target = dict(OutboundMessage.objects.filter(operation="send").values_list("target__name")
                      .annotate(n=Count("pk")).values_list("target__name", "n"))
    edits = OutboundMessage.objects.filter(operation="edit").count()
    parents = Incident.objects.filter(children__isnull=False).distinct()
    storm = NotificationStorm.objects.first()
    parent = parents.first()
    web_message = OutboundMessage.objects.filter(target__name="console", incident_id=getattr(parent, "pk", None)).first()
    result = {
        "workloads": args.workloads, "pods": ready["pods"],
        "incidents": Incident.objects.count(),
        "parent_incidents": parents.count(),
        "child_incidents": Incident.objects.filter(parent__isnull=False).count(),
        "runs": PlaybookRun.objects.count(),
        "runs_of_children": PlaybookRun.objects.filter(incident__parent__isnull=False).count(),
        "messages_per_target": per_target,
        "messages_per_target_after_first_poll": after_first,
        "max_messages_per_target": max(per_target.values(), default=0),
        "edits": edits,
        "storm_incidents": storm.incidents if storm else 0,
        "first_poll_s": round(first_s, 3),
        "second_poll_s": round(second.seconds, 3),
        "parent_message_head": (web_message.text.splitlines()[0][:120] if web_message else ""),
        "parent_message_says": next((line for line in (web_message.text.splitlines() if web_message else [])
                                     if "affected" in line), "")[:120],
        "load_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
