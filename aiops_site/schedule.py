"""The beat schedule, defined in code. django-celery-beat's DatabaseScheduler copies it into
the database when beat starts (so the admin shows it); the code stays the source of truth."""

from __future__ import annotations


def beat_schedule(poll_interval: int, reconcile_interval: int = 10, digest_interval: int = 300) -> dict[str, dict[str, object]]:
    # Every entry expires before its next run: a backlog after an outage must not replay
    # a burst of stale polls.
    schedule: dict[str, dict[str, object]] = {}
    # The watch loop: every enabled cluster that is due gets one poll task.
    schedule["playbooks.watch_clusters"] = {
        "task": "playbooks.watch_clusters",
        "schedule": float(poll_interval),
        "options": {"expires": float(poll_interval)},
    }
    # Approvals expire on time even if Redis lost their TTL keys: the database is swept.
    schedule["agents.expire_approvals"] = {
        "task": "agents.expire_approvals",
        "schedule": 5.0,
        "options": {"expires": 5.0},
    }
    # Mutating calls a dead worker left `started` and no retry resolved: completed as unknown,
    # with what a re-read of the cluster shows (agents.audit).
    schedule["agents.resolve_unfinished_calls"] = {
        "task": "agents.resolve_unfinished_calls",
        "schedule": 30.0,
        "options": {"expires": 25.0},
    }
    # The tool registry follows third-party MCP servers (new tools, removed tools).
    schedule["agents.sync_mcp_servers"] = {
        "task": "agents.sync_mcp_servers",
        "schedule": 600.0,
        "options": {"expires": 600.0},
    }
    # The chat outbox: rows whose delivery task was lost (broker restart, worker killed mid-send)
    # are enqueued again, so a lost message delays a notification, never drops it.
    schedule["channels.requeue_stalled_messages"] = {
        "task": "channels.requeue_stalled_messages",
        "schedule": 60.0,
        "options": {"expires": 50.0},
    }
    # Playbook steps whose worker's lease lapsed (a killed worker) or whose message went quiet (a
    # lost broker message) are enqueued again: Redis may lose a step, never a run. Every few
    # seconds, so a dead worker's step is sent again within a minute.
    schedule["playbooks.reconcile_runs"] = {
        "task": "playbooks.reconcile_runs",
        "schedule": float(reconcile_interval),
        "options": {"expires": float(reconcile_interval)},
    }
    # Info-level messages held for targets that asked for a digest go out as one message each.
    schedule["channels.send_digests"] = {
        "task": "channels.send_digests",
        "schedule": float(digest_interval),
        "options": {"expires": float(digest_interval)},
    }
    # Silences start and end on time: the database is swept (each silence's end also has a task
    # of its own, queued for that moment; this catches one the broker lost).
    schedule["playbooks.sweep_silences"] = {
        "task": "playbooks.sweep_silences",
        "schedule": 5.0,
        "options": {"expires": 5.0},
    }
    # Incidents an alert batch opened whose announcing task was lost (broker restart, killed
    # worker) are announced anyway: a lost message delays a notification and a run, never drops them.
    schedule["playbooks.announce_incidents"] = {
        "task": "playbooks.announce_incidents",
        "schedule": float(reconcile_interval),
        "options": {"expires": float(reconcile_interval)},
    }
    return schedule
