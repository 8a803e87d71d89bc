"""The Celery app. Every setting that decides what happens when a worker dies says why."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")

app = Celery("aiops")
app.config_from_object("django.conf:settings", namespace="CELERY")

app.conf.update(
    # JSON only: a message is data we can read in Flower and in Redis, never pickled code.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Ack after the task finishes, not when it is received: a worker killed mid-task leaves
    # the message on the broker and another worker runs it again. Safe because every task is
    # idempotent (it claims its row with a conditional update before acting).
    task_acks_late=True,
    # With acks_late, a child process killed by the OOM killer or a SIGKILL would otherwise
    # be acked as failed; rejecting requeues it so the work is redone instead of lost.
    task_reject_on_worker_lost=True,
    # Take one message at a time: a long tool call must not hold back messages another
    # worker could run now, and a crash loses (redelivers) at most one prefetched message.
    worker_prefetch_multiplier=1,
    # A task running when the broker connection drops can no longer be acked; cancel it so its
    # redelivered copy is the only one that finishes (tasks are idempotent, so redoing is safe).
    worker_cancel_long_running_tasks_on_connection_loss=True,
    task_track_started=True,
    task_send_sent_event=True,
    worker_send_task_events=True,
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    timezone="UTC",
    beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
)

# Time limits and the Redis visibility_timeout matched to them are in settings
# (CELERY_TASK_*_TIME_LIMIT, CELERY_BROKER_TRANSPORT_OPTIONS), read from the environment.

app.autodiscover_tasks(["aiops_site", "k8s", "agents", "playbooks", "channels"])
app.autodiscover_tasks(["playbooks"], related_name="tasks_engine")  # the engine room's tasks
app.autodiscover_tasks(["playbooks"], related_name="tasks_quiet")  # silences
app.autodiscover_tasks(["agents"], related_name="tasks_llm")  # the LLM room's tasks (agents.answer_message)


@setup_logging.connect
def _use_our_logging(**_: object) -> None:
    """Keep Celery from replacing the structlog handler that settings installed."""
    from django.conf import settings  # noqa: F401  (importing settings configures logging)


from aiops_site.observability import attach_request_id, bind_task_context, clear_task_context  # noqa: E402

before_task_publish.connect(attach_request_id, weak=False)


def _close_old_connections(**_: object) -> None:
    """Around each task, what Django does around each request: drop a connection that is broken
    or past CONN_MAX_AGE, keep the others (CELERY_DB_REUSE_MAX stops Celery closing them all)."""
    from django.db import close_old_connections

    close_old_connections()


task_prerun.connect(_close_old_connections, weak=False)
task_postrun.connect(_close_old_connections, weak=False)
task_prerun.connect(bind_task_context, weak=False)
task_postrun.connect(clear_task_context, weak=False)

# Task counters and durations, and the worker's own metrics port (AIOPS_WORKER_METRICS_PORT).
from aiops_site.metrics import connect_celery_signals  # noqa: E402

connect_celery_signals()
