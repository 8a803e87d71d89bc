"""Chat deliveries have a queue of their own (AIOPS_OUTBOUND_QUEUE) and a process that consumes
only it (`python -m aiops_site.outbound`), so a delivery never waits for a worker slot that a
poll or a playbook step holds. Every worker consumes the queue too (a worker without -Q takes
every configured queue), so a deployment without the outbound process still delivers."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings

from aiops_site.celery import app
from channels.models import MessageState, OutboundMessage
from tests.conftest import ROOT, Worker, wait_for, worker_env


def _queue_of(task: str) -> str:
    route = app.amqp.router.route({}, task, args=(), kwargs={})
    return route["queue"].name


def test_deliveries_are_routed_to_their_own_queue_and_steps_are_not() -> None:
    assert settings.AIOPS_OUTBOUND_QUEUE == f"{settings.CELERY_TASK_DEFAULT_QUEUE}.outbound"
    assert _queue_of("channels.deliver_message") == settings.AIOPS_OUTBOUND_QUEUE
    for task in ("playbooks.run_step", "playbooks.poll_cluster", "channels.requeue_stalled_messages"):
        assert _queue_of(task) == settings.CELERY_TASK_DEFAULT_QUEUE
    # A worker started without -Q consumes both; each has a binding of its own, so a message for
    # one queue is never copied to the other.
    queues = {q.name: q for q in app.conf.task_queues}
    assert set(queues) == {settings.CELERY_TASK_DEFAULT_QUEUE, settings.AIOPS_OUTBOUND_QUEUE}
    assert len({(q.exchange.name, q.routing_key) for q in queues.values()}) == 2


def test_deliveries_follow_a_process_that_publishes_to_another_queue() -> None:
    """A process that sends its work to another queue (the engine tests' worker, a second
    deployment on one Redis) has its deliveries taken by that queue's workers, not by ours."""
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = "elsewhere"
    try:
        assert _queue_of("channels.deliver_message") == "elsewhere.outbound"
        assert _queue_of("playbooks.run_step") == "elsewhere"
    finally:
        app.conf.task_default_queue = previous
    assert _queue_of("channels.deliver_message") == settings.AIOPS_OUTBOUND_QUEUE


def test_the_outbound_process_consumes_only_the_delivery_queue() -> None:
    from aiops_site.outbound import argv

    args = argv(["--without-gossip"])
    assert args[args.index("--queues") + 1] == settings.AIOPS_OUTBOUND_QUEUE
    assert args[args.index("--pool") + 1] == "threads"
    assert args[args.index("--hostname") + 1] == "outbound@%h"
    assert args[-1] == "--without-gossip"


@pytest.mark.integration
def test_a_delivery_leaves_while_the_workers_only_slot_is_held(chat, transactional_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from channels.tasks import deliver_message

    queue = f"outbound-test-{uuid.uuid4().hex[:8]}"
    env = worker_env({"AIOPS_CELERY_QUEUE": queue})
    worker = Worker(tmp_path / "worker.log", env, concurrency=1)
    log_path = tmp_path / "outbound.log"
    with open(log_path, "wb") as log:
        outbound = subprocess.Popen([sys.executable, "-m", "aiops_site.outbound", "--without-heartbeat", "--without-mingle",
                                     "--without-gossip"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis.from_url(settings.REDIS_URL)
    key = f"test-hold-{uuid.uuid4().hex}"
    try:
        wait_for(lambda: b"ready." in log_path.read_bytes() or outbound.poll() is not None, 60,
                 message="the outbound process to start")
        assert outbound.poll() is None, log_path.read_text(errors="replace")
        assert f"{queue}.outbound" in log_path.read_text(errors="replace")  # the banner lists the one queue

        # The worker's one slot is taken by a long task (a poll of a large cluster, a slow step).
        app.send_task("tests.hold_slot", args=[key], queue=queue)
        wait_for(lambda: client.get(f"{key}:started"), 30, message="the worker's slot to be taken")

        message = OutboundMessage.objects.create(kind="telegram", address="-100777", text="pod web-1 restarted")
        deliver_message.apply_async((message.pk,), queue=f"{queue}.outbound")
        wait_for(lambda: OutboundMessage.objects.get(pk=message.pk).state == MessageState.DELIVERED, 30,
                 message="the delivery, while the worker's slot is held")
        assert not client.get(key), "the slot was released before the delivery"
        assert [m["text"] for m in chat.telegram.chat_messages("-100777")] == ["pod web-1 restarted"]
        assert "outbound@" in log_path.read_text(errors="replace")
    finally:
        client.set(key, "1", ex=60)
        outbound.terminate()
        try:
            outbound.wait(20)
        except subprocess.TimeoutExpired:
            outbound.kill()
        worker.stop()


def test_a_message_for_one_queue_reaches_that_queue_alone() -> None:
    """As the broker routes them (the Redis transport's bindings, once the queues are declared):
    a message for one queue lands there alone (a shared binding would copy each message to both:
    playbook steps to the deliveries' process, deliveries to the worker)."""
    from aiops_site.queues import task_queues

    for queue in app.conf.task_queues:  # the settings' queues are built the same way
        assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == (queue.name, "direct", queue.name)
    name = f"bindings-test-{uuid.uuid4().hex[:8]}"
    queues = task_queues(name, f"{name}.outbound")
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        try:
            for queue in queues:
                queue(channel).declare()
            for queue in queues:
                assert set(channel._lookup(queue.exchange.name, queue.routing_key)) == {queue.name}
        finally:
            for queue in queues:
                queue(channel).delete()
