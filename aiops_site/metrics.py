"""How Prometheus reaches every process's metrics, and the metrics of the task queue itself.

Three processes kinds hold metrics: gunicorn's web workers, Celery's prefork children and the
MCP server. Each forks children that cannot share memory, so with `PROMETHEUS_MULTIPROC_DIR`
set (the launcher sets it for `make run`, the image for every container) prometheus_client
writes every value to a file per process, and a scrape sums the files.

A scrape reaches those files three ways:
- Django's `/metrics` (this module's `metrics_view`, routed ahead of django-prometheus's own,
  which would serve the multiprocess files but not the queue-depth collector);
- a bare prometheus_client HTTP server in the gunicorn master (`AIOPS_WEB_METRICS_PORT`,
  started by `deploy/docker/gunicorn.conf.py`): it answers whatever the Host header says,
  so Prometheus can scrape pods by IP without touching `AIOPS_ALLOWED_HOSTS`;
- the same server in the Celery worker's main process (`AIOPS_WORKER_METRICS_PORT`, started
  on `worker_ready`): in Kubernetes the worker runs in pods of its own, where no web process
  could serve its files.

`aiops_celery_queue_length` is read from the broker at scrape time (never cached: a stale
queue depth is worse than none); `aiops_celery_broker_up` says whether that read worked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import prometheus_client
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

log = structlog.get_logger(__name__)

_BROKER_TIMEOUT_S = 2.0

TASKS = Counter(
    "aiops_celery_tasks_total",
    "Celery tasks finished, by task name and final state (success, failure, retry, ...).",
    ["task", "outcome"],
)
TASK_DURATION = Histogram(
    "aiops_celery_task_duration_seconds",
    "Wall-clock run time of a Celery task in the worker, by task name.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DEPENDENCY_UNAVAILABLE = Counter(
    "aiops_dependency_unavailable_total",
    "Requests answered 503 because a dependency (database, redis, broker) was unavailable.",
    ["dependency"],
)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


class _DefaultRegistry:
    """The process-global registry, as one collector of a per-scrape registry."""

    def collect(self) -> Iterator[Metric]:
        yield from prometheus_client.REGISTRY.collect()


class QueueLengthCollector:
    """`aiops_celery_queue_length{queue}`: messages waiting in each Celery queue, read at scrape time."""

    def __init__(self, queues: Iterable[str] | None = None) -> None:
        self._queues = list(queues) if queues is not None else None

    def queue_names(self) -> list[str]:
        if self._queues is not None:
            return self._queues
        from django.conf import settings

        from aiops_site.celery import app

        if settings.AIOPS_METRICS_QUEUES:
            return list(settings.AIOPS_METRICS_QUEUES)
        names = {app.conf.task_default_queue or "celery"}
        names.update(queue.name for queue in (app.conf.task_queues or ()))
        return sorted(names)

    def describe(self) -> list[Metric]:
        # Describing must not touch the broker: registration happens at import time.
        return [
            GaugeMetricFamily("aiops_celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]),
            GaugeMetricFamily("aiops_celery_broker_up", "1 when the last scrape could read the broker."),
        ]

    def collect(self) -> Iterator[Metric]:
        lengths = GaugeMetricFamily(
            "aiops_celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        up = GaugeMetricFamily("aiops_celery_broker_up", "1 when the last scrape could read the broker.")
        try:
            for queue, count in self._read_lengths():
                lengths.add_metric([queue], count)
        except Exception as exc:  # a scrape must answer even when the broker is down; broker_up says so
            log.warning("queue_length_unreadable", error=f"{type(exc).__name__}: {exc}"[:300])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield lengths
        yield up

    def _read_lengths(self) -> list[tuple[str, int]]:
        from kombu.exceptions import ChannelError

        from aiops_site.celery import app

        names = self.queue_names()
        results: list[tuple[str, int]] = []
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=_BROKER_TIMEOUT_S)
            for name in names:
                # A channel per queue: on AMQP a passive declare of a missing queue closes its channel.
                channel = conn.channel()
                try:
                    count = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:
                    count = 0  # Redis deletes an empty list, so "no such queue" means nothing waits
                except Exception as exc:
                    # py-amqp's NotFound is not a kombu ChannelError; it means the same thing.
                    if type(exc).__name__ != "NotFound":
                        raise
                    count = 0
                finally:
                    try:
                        channel.close()
                    except Exception:  # noqa: S110  (a channel the broker already closed)
                        pass
                results.append((name, int(count)))
        return results


class StateCollector:
    """Gauges of what PostgreSQL says now: open incidents, pending approvals, the outbox, poll health.

    Counted at scrape time rather than kept in process memory: the database is the truth, so
    the numbers are right across any number of processes and after restarts, where a gauge
    moved by inc()/dec() in one worker would drift.
    """

    def __init__(self, *, close_connection: bool) -> None:
        # The metrics server answers each scrape on a thread of its own; its connection must not leak.
        self._close_connection = close_connection

    def describe(self) -> list[Metric]:
        return list(self._families().values())

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "incidents": GaugeMetricFamily(
                "aiops_incidents_open", "Open incidents, by primary finding type (or alertname).", labels=["type"]
            ),
            "approvals": GaugeMetricFamily(
                "aiops_approvals_pending", "Approvals waiting for a decision and not yet expired."
            ),
            "outbox": GaugeMetricFamily(
                "aiops_chat_outbox_messages",
                "Outbox messages not yet delivered, by platform and state.",
                labels=["platform", "state"],
            ),
            "failures": GaugeMetricFamily(
                "aiops_cluster_poll_consecutive_failures",
                "Polls of an enabled cluster failed in a row.",
                labels=["cluster"],
            ),
            "success": GaugeMetricFamily(
                "aiops_cluster_last_poll_success_timestamp_seconds",
                "Unix time of an enabled cluster's last successful poll (absent before the first).",
                labels=["cluster"],
            ),
            "mode": GaugeMetricFamily(
                "aiops_cluster_detection_mode",
                "1 for the path that detects faults on an enabled cluster now (watch: streams, poll: the poll alone).",
                labels=["cluster", "mode"],
            ),
            "up": GaugeMetricFamily("aiops_database_up", "1 when the last scrape could read PostgreSQL."),
        }

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        up = families.pop("up")
        try:
            self._fill(families)
        except Exception as exc:  # the scrape still answers; database_up says why the rest is missing
            log.warning("state_metrics_unreadable", error=f"{type(exc).__name__}: {exc}"[:300])
            up.add_metric([], 0)
            yield up
            return
        finally:
            if self._close_connection:
                from django.db import connections

                connections.close_all()
        up.add_metric([], 1)
        yield from families.values()
        yield up

    @staticmethod
    def _fill(families: dict[str, GaugeMetricFamily]) -> None:
        import django
        from django.apps import apps

        if not apps.ready:  # the gunicorn master serves metrics without having loaded the apps
            django.setup(set_prefix=False)
        from django.db.models import Count
        from django.utils import timezone

        from agents.models import Approval
        from channels.models import MessageState, OutboundMessage
        from k8s.models import Cluster
        from playbooks.models import Incident

        open_incidents = (
            Incident.objects.filter(state=Incident.State.OPEN)
            .values("primary_type", "alertname")
            .annotate(n=Count("id"))
        )
        by_type: dict[str, int] = {}
        for row in open_incidents:
            kind = row["primary_type"] or row["alertname"] or "unknown"
            by_type[kind] = by_type.get(kind, 0) + row["n"]
        for kind, count in sorted(by_type.items()):
            families["incidents"].add_metric([kind], count)
        families["approvals"].add_metric(
            [], Approval.objects.filter(state="pending", expires_at__gt=timezone.now()).count()
        )
        waiting = (
            OutboundMessage.objects.filter(state__in=[MessageState.QUEUED, MessageState.SENDING])
            .values("kind", "state")
            .annotate(n=Count("id"))
        )
        for row in waiting:
            families["outbox"].add_metric([row["kind"], row["state"]], row["n"])
        for cluster in Cluster.objects.filter(enabled=True).only("name", "consecutive_failures", "last_success_at",
                                                                  "detection_mode"):
            families["failures"].add_metric([cluster.name], cluster.consecutive_failures)
            for mode in Cluster.DetectionMode.values:
                families["mode"].add_metric([cluster.name, mode], 1 if cluster.detection_mode == mode else 0)
            if cluster.last_success_at is not None:
                families["success"].add_metric([cluster.name], cluster.last_success_at.timestamp())


def scrape_registry(
    *, include_queues: bool, include_state: bool = False, close_connection: bool = True
) -> CollectorRegistry:
    """A registry to serve one scrape: every process's values, plus (for the web role) the
    broker's queue depths and the state gauges read from PostgreSQL."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_DefaultRegistry())  # type: ignore[arg-type]
    if include_queues:
        registry.register(QueueLengthCollector())  # type: ignore[arg-type]
    if include_state:
        registry.register(StateCollector(close_connection=close_connection))  # type: ignore[arg-type]
    return registry


def metrics_view(request: Any) -> Any:
    """Django's `/metrics`: the multiprocess files (or this process's registry) and queue depths."""
    from django.http import HttpResponse

    # Django closes the request's connection itself (or keeps it for CONN_MAX_AGE).
    registry = scrape_registry(include_queues=True, include_state=True, close_connection=False)
    body = prometheus_client.generate_latest(registry)
    return HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)


def start_metrics_server(port: int, address: str, *, web: bool, what: str) -> int:
    """Serve `scrape_registry` on a port of its own (0 picks a free one); return the port bound."""
    server, _thread = prometheus_client.start_http_server(
        port, addr=address, registry=scrape_registry(include_queues=web, include_state=web)
    )
    bound = int(server.server_address[1])
    log.info("metrics_server_started", process=what, address=address, port=bound)
    return bound


# --- Celery ------------------------------------------------------------------------------
_started: dict[str, float] = {}


def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


def _task_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    began = _started.pop(task_id or "", None)
    name = getattr(task, "name", None) or "unknown"
    TASKS.labels(task=name, outcome=(state or "unknown").lower()).inc()
    if began is not None:
        TASK_DURATION.labels(task=name).observe(time.monotonic() - began)


def _worker_ready(**_: Any) -> None:
    from django.conf import settings

    if settings.AIOPS_WORKER_METRICS_PORT:
        # The worker's main process serves the files its prefork children write. Queue depth
        # and the state gauges are left to the web role, so each has one source.
        start_metrics_server(
            settings.AIOPS_WORKER_METRICS_PORT, settings.AIOPS_METRICS_ADDRESS, web=False, what="worker"
        )


def _pool_process_exiting(pid: int | None = None, **_: Any) -> None:
    if pid and multiprocess_mode():
        # A pool process replaced by the worker must not keep its live gauges in the sums.
        multiprocess.mark_process_dead(pid)


def connect_celery_signals() -> None:
    from celery.signals import task_postrun, task_prerun, worker_process_shutdown, worker_ready

    task_prerun.connect(_task_started, weak=False)
    task_postrun.connect(_task_finished, weak=False)
    worker_ready.connect(_worker_ready, weak=False)
    worker_process_shutdown.connect(_pool_process_exiting, weak=False)


# --- gunicorn (hooks used by deploy/docker/gunicorn.conf.py) -------------------------------
def gunicorn_when_ready(port: int, address: str) -> None:
    if port:
        start_metrics_server(port, address, web=True, what="web")


def gunicorn_child_exit(pid: int) -> None:
    if multiprocess_mode():
        # Without this, a restarted gunicorn worker's live gauges linger in the sums forever.
        multiprocess.mark_process_dead(pid)


# --- Inventory (README "Metrics", and the test that dashboards and alerts name real metrics) ---
_APPS = ("aiops_site", "k8s", "agents", "playbooks", "channels")


def metric_modules() -> list[str]:
    """Every `<app>/metrics*.py` (and `<app>/<package>/metrics*.py`): where metrics are defined."""
    from pathlib import Path

    base = Path(__file__).resolve().parent.parent
    modules = []
    for app in _APPS:
        for path in sorted((base / app).rglob("metrics*.py")):
            if "migrations" in path.parts or "tests" in path.parts:
                continue
            modules.append(".".join(path.relative_to(base).with_suffix("").parts))
    return modules


def inventory() -> list[dict[str, Any]]:
    """Name (as scraped), type, labels and help of every `aiops_*` metric the code defines."""
    import importlib

    from prometheus_client.metrics import MetricWrapperBase

    found: dict[str, dict[str, Any]] = {}
    for module_name in metric_modules():
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                family = value.describe()[0]
                labels = tuple(getattr(value, "_labelnames", ()))
                found[family.name] = {
                    "family": family.name,
                    "type": family.type,
                    "labels": labels,
                    "help": family.documentation,
                    "module": module_name,
                }
    for collector in (QueueLengthCollector(queues=[]), StateCollector(close_connection=False)):
        for family in collector.describe():
            found[family.name] = {
                "family": family.name,
                "type": family.type,
                "labels": tuple(getattr(family, "_labelnames", ())),
                "help": family.documentation,
                "module": __name__,
            }
    rows = []
    for family_name, row in sorted(found.items()):
        if not family_name.startswith("aiops_"):
            continue
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "summary": ["_sum", "_count"],
            "info": ["_info"],
        }.get(row["type"], [""])
        row["samples"] = [family_name + suffix for suffix in suffixes]
        row["name"] = row["samples"][0] if row["type"] != "histogram" else family_name
        rows.append(row)
    return rows


def inventory_markdown() -> str:
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for row in inventory():
        labels = ", ".join(f"`{label}`" for label in row["labels"]) or "-"
        meaning = row["help"].replace("|", "\\|")
        lines.append(f"| `{row['name']}` | {row['type']} | {labels} | {meaning} |")
    return "\n".join(lines)
