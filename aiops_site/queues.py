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
