"""The watcher's slim picture finds exactly what the poll finds: the detectors run on slim objects
per touched workload give the same findings (evidence included) as on the full objects of the
whole cluster, whether the picture was listed or built event by event from the watch log."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from k8s.detectors import detect, split_list
from k8s.sandbox import Sandbox
from k8s.watch_state import ClusterState

PLURALS = {"pods": "pods", "nodes": "nodes", "deployments": "deployments", "replicasets": "replicasets",
           "hpas": "horizontalpodautoscalers", "jobs": "jobs"}
KIND_OF = {plural: kind for kind, plural in PLURALS.items()}
FAULTS = [("crash_loop", "shop/cart", {}), ("oom_killed", "shop/checkout", {}), ("image_pull_failure", "shop/frontend", {}),
          ("not_ready_node", "node-2", {}), ("replication_failure", "payments/payments-api", {}),
          ("hpa_maxed", "shop/cart", {}), ("failed_job", "data/nightly-export", {})]


def _full(sandbox: Sandbox) -> dict[str, list[dict]]:
    with sandbox.sim.lock:
        return {kind: orjson.loads(orjson.dumps(sandbox.sim.store.all(plural))) for kind, plural in PLURALS.items()}


def _as_rows(findings) -> list[bytes]:  # type: ignore[no-untyped-def]
    return sorted(orjson.dumps(f.as_dict(), option=orjson.OPT_SORT_KEYS) for f in findings)


def _poll_view(sandbox: Sandbox, now: datetime) -> list[bytes]:
    full = _full(sandbox)
    items = [dict(obj, kind=obj.get("kind")) for objs in full.values() for obj in objs]
    return _as_rows(detect(**split_list(items), now=now))


@pytest.fixture
def broken(sandbox: Sandbox) -> Sandbox:
    sandbox.reset("demo")
    for fault, target, opts in FAULTS:
        sandbox.fault(fault, target, **opts)
    sandbox.tick(2)
    return sandbox


def test_a_listed_picture_finds_what_the_poll_finds(broken: Sandbox) -> None:
    now = datetime.now(UTC)
    state = ClusterState()
    touched = set()
    for kind, objs in _full(broken).items():
        touched |= state.replace(kind, objs)
    assert touched == state.workloads()
    expected = _poll_view(broken, now)
    assert len(expected) >= len(FAULTS)
    assert _as_rows(state.findings_for(state.workloads(), now=now)) == expected
    # Listing the same objects again touches nothing.
    for kind, objs in _full(broken).items():
        assert state.replace(kind, objs) == set()


def test_a_picture_kept_by_watch_events_finds_what_the_poll_finds(sandbox: Sandbox) -> None:
    sandbox.reset("demo")
    state = ClusterState()
    with sandbox.sim.lock:
        rv = sandbox.sim.store.rv
    for kind, objs in _full(sandbox).items():
        state.replace(kind, objs)
    for fault, target, opts in FAULTS:
        sandbox.fault(fault, target, **opts)
    sandbox.tick(2)
    touched = set()
    for _, plural, event_type, obj in sandbox.sim.store.events_since(rv):
        if plural in KIND_OF:
            touched |= state.apply(KIND_OF[plural], event_type, orjson.loads(orjson.dumps(obj)))
    for key in [("Deployment", "shop", "cart"), ("Deployment", "shop", "checkout"), ("Node", "", "node-2"),
                ("Deployment", "payments", "payments-api"), ("Job", "data", "nightly-export")]:
        assert key in touched, key
    now = datetime.now(UTC)
    assert _as_rows(state.findings_for(state.workloads(), now=now)) == _poll_view(sandbox, now)
    # The findings of just the touched workloads are the poll's findings of those workloads.
    wanted = {f"{k}/{ns}/{n}" for k, ns, n in touched}
    poll_touched = [row for row in _poll_view(sandbox, now)
                    if "{owner_kind}/{namespace}/{owner_name}".format(**orjson.loads(row)) in wanted]
    assert _as_rows(state.findings_for(touched, now=now)) == poll_touched


def test_deleted_objects_leave_the_picture(sandbox: Sandbox) -> None:
    sandbox.reset("demo")
    state = ClusterState()
    for kind, objs in _full(sandbox).items():
        state.replace(kind, objs)
    pod = _full(sandbox)["pods"][0]
    owner = state.pod_owner.group_of[(pod["metadata"]["namespace"], pod["metadata"]["name"])]
    assert state.apply("pods", "DELETED", pod) == {owner}
    assert state.apply("pods", "DELETED", pod) == set()
    assert (pod["metadata"]["namespace"], pod["metadata"]["name"]) not in state.objects["pods"]
