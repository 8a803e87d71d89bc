"""The Celery queues, each with a direct exchange and a routing key of its own.

A `kombu.Queue` given only a name is bound to the default exchange with the default routing key:
two such queues share one binding, and the broker copies every message for one to both (a
playbook step would reach the deliveries' process, a delivery the worker). Here each queue is
bound alone.
"""

from __future__ import annotations

from kombu import Exchange, Queue


def task_queues(*names: str) -> tuple[Queue, ...]:
    return tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in names)


def route_deliveries(name: str, args: object, kwargs: object, options: object, task: object = None,
                     **kw: object) -> dict[str, str] | None:
    """`channels.deliver_message` goes to the deliveries' queue of the queue this process publishes to.

    With the derived default (`<default queue>.outbound`) it follows `task_default_queue` as it is
    when the task is sent, not as it was when settings were read: a process that publishes its
    work to another queue (a test's own worker, a second deployment sharing one Redis) has its
    deliveries taken by the workers of that queue. An AIOPS_OUTBOUND_QUEUE set by name is used as it is.
    """
    if name != "channels.deliver_message":
        return None
    from django.conf import settings

    from aiops_site.celery import app

    queue = settings.AIOPS_OUTBOUND_QUEUE
    if queue == f"{settings.CELERY_TASK_DEFAULT_QUEUE}.outbound":
        queue = f"{app.conf.task_default_queue}.outbound"
    return {"queue": queue}
