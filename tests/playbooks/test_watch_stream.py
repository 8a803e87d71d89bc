"""The watch path against the sandbox over TLS: a fault opens its incident in seconds through the
streams and the poll refreshes that same incident; a 410 after an outage re-lists without losing
the fault that happened while the streams were down; a cluster nobody watches falls back to the
poll; and (integration) a second `manage.py watch` takes a SIGKILLed owner's cluster over
within 15 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from prometheus_client import REGISTRY

from k8s.models import Cluster
from playbooks.models import Incident
from playbooks.services.watch import WATCHERS_KEY, WatchService, lease_holder, lease_key
from playbooks.tasks import poll_cluster, watch_clusters
from tests.conftest import ROOT, wait_for, worker_env

DEMO_FAULTS = ("payments/ledger", "data/report-builder", "node-4")


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def quiet(sandbox, sandbox_cluster, transactional_db, settings):  # type: ignore[no-untyped-def]
    settings.AIOPS_RESOLVE_AFTER = 2
    for target in DEMO_FAULTS:
        sandbox.clear(target)
    sandbox.tick()
    assert poll_cluster(sandbox_cluster.pk) == "ok"
    assert not Incident.objects.exists()
    redis.Redis.from_url(settings.REDIS_URL).delete(lease_key(sandbox_cluster.pk))
    return sandbox, sandbox_cluster


@pytest.fixture
def service(quiet) -> Iterator[WatchService]:  # type: ignore[no-untyped-def]
    _, cluster = quiet
    svc = WatchService(identity="test-watcher", lease_ttl=6, scan_s=0.2,
                       watcher_options={"backoff_initial_s": 0.2, "backoff_max_s": 1.0})
    stop = threading.Event()
    thread = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: Cluster.objects.get(pk=cluster.pk).detection_mode == "watch", 30, message="the streams to open")
    yield svc
    stop.set()
    thread.join(20)
    assert not thread.is_alive()


def test_a_fault_seen_by_the_stream_and_the_poll_makes_one_incident(quiet, service, signal_log, client) -> None:  # type: ignore[no-untyped-def]
    sandbox, cluster = quiet
    row = Cluster.objects.get(pk=cluster.pk)
    assert (row.detection_mode, row.watcher, row.watch_error) == ("watch", "test-watcher", "")
    assert lease_holder(service.redis, cluster.pk) == "test-watcher"
    passes = _value("aiops_watcher_detector_passes_total", cluster="sandbox")
    pod_events = _value("aiops_watcher_events_total", cluster="sandbox", kind="pods", type="MODIFIED")
    waits = _value("aiops_watcher_mark_to_pass_seconds_count", cluster="sandbox")
    ingests = _value("aiops_watcher_ingest_seconds_count", cluster="sandbox")

    started = time.monotonic()
    sandbox.fault("crash_loop", "shop/cart")  # the pods change now; no tick, no poll
    incident = wait_for(lambda: Incident.objects.filter(state="open").first(), 15, message="the watcher's incident")
    took = time.monotonic() - started
    assert incident.source == "watch" and incident.workload_key == "Deployment/shop/cart"
    assert incident.primary_type == "crash_loop" and incident.affected_pods
    assert took < 10, took
    assert _value("aiops_watcher_detector_passes_total", cluster="sandbox") > passes
    assert _value("aiops_watcher_events_total", cluster="sandbox", kind="pods", type="MODIFIED") > pod_events
    assert _value("aiops_watcher_mark_to_pass_seconds_count", cluster="sandbox") > waits
    # Observed once the hand-over returns, a moment after its transaction made the row visible.
    wait_for(lambda: _value("aiops_watcher_ingest_seconds_count", cluster="sandbox") > ingests, 10,
             message="the ingest's duration observed")
    assert _value("aiops_watcher_objects", cluster="sandbox", kind="pods") == len(sandbox.sim.store.all("pods"))
    assert _value("aiops_watcher_relists_total", cluster="sandbox", kind="nodes", reason="start") >= 1
    scraped = client.get("/metrics").content
    assert b'aiops_cluster_detection_mode{cluster="sandbox",mode="watch"} 1.0' in scraped
    assert b'aiops_cluster_detection_mode{cluster="sandbox",mode="poll"} 0.0' in scraped

    # The poll sees the same fault: it refreshes the watcher's incident, never opens another.
    sandbox.tick()
    assert poll_cluster(cluster.pk) == "ok"
    sandbox.fault("not_ready_node", "node-2")
    assert poll_cluster(cluster.pk) == "ok"  # the poll may see this one first...
    time.sleep(1.5)  # ...and the stream sees it too
    open_keys = sorted(Incident.objects.filter(state="open").values_list("workload_kind", "workload_name"))
    assert open_keys == [("Deployment", "cart"), ("Node", "node-2")]
    assert len(signal_log.opened) == 2
    incident.refresh_from_db()
    assert incident.count >= 2  # refreshed by the poll

    # The poll resolves what recovered (the stream never resolves).
    sandbox.clear("shop/cart")
    sandbox.clear("node-2")
    sandbox.tick()
    for _ in range(2):
        poll_cluster(cluster.pk)
    assert not Incident.objects.filter(state="open").exists()


def test_a_410_after_an_outage_relists_without_losing_the_fault_in_between(quiet, service) -> None:  # type: ignore[no-untyped-def]
    sandbox, cluster = quiet
    store = sandbox.sim.store
    gone = _value("aiops_watcher_relists_total", cluster="sandbox", kind="pods", reason="gone")
    errors = _value("aiops_watcher_stream_errors_total", cluster="sandbox", kind="pods")
    saved = store.log
    with sandbox.sim.lock:
        store.log = deque(saved, maxlen=saved.maxlen)  # the test's own log, dropped afterwards
    try:
        with sandbox.watch_outage():
            wait_for(lambda: Cluster.objects.get(pk=cluster.pk).detection_mode == "poll", 15,
                     message="the row to say poll while the streams are refused")
            assert "503" in Cluster.objects.get(pk=cluster.pk).watch_error
            # The row flips on the first kind refused; the pods' stream may still be backing off
            # from its own end of stream: wait until it too has met the outage.
            wait_for(lambda: _value("aiops_watcher_stream_errors_total", cluster="sandbox", kind="pods") > errors,
                     15, message="the pods' stream to be refused too")
            store.log = deque(maxlen=saved.maxlen)
            sandbox.fault("image_pull_failure", "shop/frontend")
            store.log.clear()  # the fault's own events are gone from the log too...
            sandbox.tick(2)  # ...and newer ones follow: every stream's version is now too old
            assert not Incident.objects.exists()
        incident = wait_for(lambda: Incident.objects.filter(state="open").first(), 20,
                            message="the fault made during the outage, found by the re-list")
    finally:
        store.log = deque(store.log, maxlen=saved.maxlen)
    assert incident.source == "watch" and incident.workload_key == "Deployment/shop/frontend"
    assert incident.primary_type == "image_pull_failure"
    assert _value("aiops_watcher_relists_total", cluster="sandbox", kind="pods", reason="gone") > gone
    assert _value("aiops_watcher_stream_errors_total", cluster="sandbox", kind="pods") > errors
    wait_for(lambda: Cluster.objects.get(pk=cluster.pk).detection_mode == "watch", 15, message="streams back")


def test_a_cluster_no_watcher_holds_falls_back_to_the_poll(quiet) -> None:  # type: ignore[no-untyped-def]
    sandbox, cluster = quiet
    Cluster.objects.filter(pk=cluster.pk).update(detection_mode="watch", watcher="gone-watcher")
    watch_clusters()
    row = Cluster.objects.get(pk=cluster.pk)
    assert (row.detection_mode, row.watcher) == ("poll", "")
    assert row.watch_error == "no watch process holds this cluster's lease"
    # ...and the poll alone still detects.
    sandbox.fault("oom_killed", "shop/checkout")
    sandbox.tick()
    assert poll_cluster(cluster.pk) == "ok"
    incident = Incident.objects.get(state="open")
    assert incident.source == "poll" and incident.primary_type == "oom_killed"


def _start_watch(identity: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = worker_env()  # the default lease TTL
    return subprocess.Popen([sys.executable, "manage.py", "watch", "--identity", identity], cwd=ROOT, env=env,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115


@pytest.mark.integration
def test_another_watcher_takes_over_within_15s_when_the_owner_is_killed(quiet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cluster = quiet
    first = _start_watch("watcher-a", tmp_path / "a.log")
    second = None
    try:
        wait_for(lambda: Cluster.objects.get(pk=cluster.pk).watcher == "watcher-a"
                 and Cluster.objects.get(pk=cluster.pk).detection_mode == "watch", 60,
                 message=f"watcher-a to hold the cluster:\n{(tmp_path / 'a.log').read_text()[-3000:]}")
        second = _start_watch("watcher-b", tmp_path / "b.log")
        client = redis.Redis.from_url(settings.REDIS_URL)
        wait_for(lambda: client.zscore(WATCHERS_KEY, "watcher-b") is not None, 60,
                 message=f"watcher-b to start scanning:\n{(tmp_path / 'b.log').read_text()[-3000:]}")
        time.sleep(2)  # b scans, but the lease is a's
        assert Cluster.objects.get(pk=cluster.pk).watcher == "watcher-a"
        killed = time.monotonic()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        wait_for(lambda: lease_holder(client, cluster.pk) == "watcher-b", 30, interval=0.05,
                 message=f"watcher-b to take the lease:\n{(tmp_path / 'b.log').read_text()[-3000:]}")
        moved = time.monotonic() - killed
        wait_for(lambda: Cluster.objects.get(pk=cluster.pk).watcher == "watcher-b"
                 and Cluster.objects.get(pk=cluster.pk).detection_mode == "watch", 30,
                 message=f"watcher-b's streams:\n{(tmp_path / 'b.log').read_text()[-3000:]}")
        streaming = time.monotonic() - killed
        print(f"after SIGKILL of the owner: lease moved in {moved:.1f}s, streams open again in {streaming:.1f}s")
        assert moved < 15, moved
        assert streaming < 30, streaming  # the new owner lists the cluster first (its size, this machine's load)
        # A graceful stop hands the cluster back to the poll at once.
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        row = Cluster.objects.get(pk=cluster.pk)
        assert (row.detection_mode, row.watcher) == ("poll", "")
        assert lease_holder(client, cluster.pk) == ""
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_the_admin_shows_which_path_detects(quiet, admin_client) -> None:  # type: ignore[no-untyped-def]
    _, cluster = quiet
    Cluster.objects.filter(pk=cluster.pk).update(detection_mode="watch", watcher="host:1:abc")
    page = admin_client.get("/admin/k8s/cluster/").content.decode()
    assert "watch streams (seconds)" in page and "host:1:abc" in page
    page = admin_client.get(f"/admin/k8s/cluster/{cluster.pk}/change/").content.decode()
    assert "Why the streams are down" in page or "watch_error" in page
