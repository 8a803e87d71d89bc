"""The `outbound` process: a Celery worker that consumes only the chat deliveries' queue.

`channels.deliver_message` is routed to `AIOPS_OUTBOUND_QUEUE` (settings). Every worker consumes
that queue too, but a worker's slots may all be held by a poll of a large cluster or by playbook
steps; this process holds slots for deliveries alone, so the first message about an incident
leaves as soon as the incident's transaction commits. Threads, not processes: a delivery waits on
the chat platform's answer, and the transports keep one session per thread.

  python -m aiops_site.outbound [extra celery worker options]

Its metrics: on AIOPS_OUTBOUND_METRICS_PORT when set (a container of its own); otherwise its
multiprocess files are served by the worker sharing its PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import os
import sys


def argv(extra: list[str]) -> list[str]:
    from django.conf import settings

    return [
        "worker", "-E", "--loglevel", settings.AIOPS_LOG_LEVEL,
        "--queues", settings.AIOPS_OUTBOUND_QUEUE,
        "--pool", "threads", "--concurrency", str(settings.AIOPS_OUTBOUND_CONCURRENCY),
        "--hostname", "outbound@%h",
        *extra,
    ]


def main(extra: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    from django.conf import settings

    from aiops_site.celery import app

    # The worker's metrics hook serves AIOPS_WORKER_METRICS_PORT: this process uses its own port
    # (or none), never the worker's beside it.
    settings.AIOPS_WORKER_METRICS_PORT = settings.AIOPS_OUTBOUND_METRICS_PORT

    app.worker_main(argv(extra))


if __name__ == "__main__":
    main(sys.argv[1:])
