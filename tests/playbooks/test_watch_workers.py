"""Any number of workers: polls racing in two real Celery workers, and ingests racing in threads
(no Redis lock between them: the row lock and the unique index alone) open one incident."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest
from django.db import connection

from playbooks.models import ClusterEvent, Incident
from playbooks.tasks import poll_cluster
from tests.conftest import Worker, wait_for, worker_env

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def second_worker(celery_worker, tmp_path_factory) -> Iterator[Worker]:  # type: ignore[no-untyped-def]
    worker = Worker(tmp_path_factory.mktemp("worker2") / "worker.log", worker_env())
    yield worker
    worker.stop()


def _succeeded(*workers: Worker) -> int:
    return sum(len(re.findall(r"playbooks\.poll_cluster\[[^\]]+\] succeeded", w.log())) for w in workers)


def test_two_workers_polling_at_once_open_no_duplicate(  # type: ignore[no-untyped-def]
    sandbox, sandbox_cluster, transactional_db, celery_worker, second_worker
) -> None:
    for target in ("payments/ledger", "data/report-builder", "node-4"):
        sandbox.clear(target)
    sandbox.fault("crash_loop", "shop/cart")
    sandbox.fault("not_ready_node", "node-2")
    sandbox.tick()
    before = _succeeded(celery_worker, second_worker)
    for _ in range(8):
        poll_cluster.delay(sandbox_cluster.pk)
    wait_for(lambda: _succeeded(celery_worker, second_worker) - before >= 8, timeout=60,
             message="8 polls finished across both workers")
    assert _succeeded(second_worker) > 0 and _succeeded(celery_worker) > 0, "both workers took polls"
    keys = sorted(i.workload_key for i in Incident.objects.filter(state="open"))
    assert keys == ["Deployment/shop/cart", "Node//node-2"]
    assert ClusterEvent.objects.filter(kind="detected", finding_type="crash_loop").count() == 1


def test_ingests_racing_without_the_poll_lock_still_open_one_incident(transactional_db, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    from playbooks.services.incidents import ingest_findings
    from tests.k8s.test_detectors import crashing, detect, pod

    findings = detect([pod(container=crashing())], [], [], [], [], [])
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            barrier.wait()
            ingest_findings(fake_cluster, findings)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ingest) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    incident = Incident.objects.get()
    assert incident.count == 4
    assert ClusterEvent.objects.filter(kind="detected").count() == 1
