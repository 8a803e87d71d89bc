"""The watcher's adaptive coalescing: a workload with no recent detector pass is passed after the
short lead (a fault on a quiet workload is seen at once); one passed within the window waits
for the window since that pass to end, so a burst is at most one pass per workload per window.
Pure: the due times are computed from the marks and passes, no clock is waited on."""

from __future__ import annotations

import threading
import time

from kubernetes import client as k8s_client
from pytest import approx

from k8s.detectors import Finding
from k8s.topology import Topology
from k8s.watcher import ClusterWatcher

CART = ("Deployment", "shop", "cart")
LEDGER = ("Deployment", "payments", "ledger")


def _watcher(window_s: float = 0.5, lead_s: float = 0.05) -> ClusterWatcher:
    return ClusterWatcher("unit", k8s_client.ApiClient(), on_detect=lambda keys, findings, topology: None,
                          window_s=window_s, lead_s=lead_s)


def test_a_quiet_workload_is_due_after_the_lead_not_the_window() -> None:
    watcher = _watcher()
    assert watcher._due_at(CART, 100.0) == approx(100.05)


def test_a_workload_passed_within_the_window_waits_for_the_window_since_that_pass() -> None:
    watcher = _watcher()
    watcher._passed[CART] = 100.0
    assert watcher._due_at(CART, 100.1) == approx(100.5)  # the window since the last pass
    assert watcher._due_at(CART, 100.9) == approx(100.95)  # the window is over: only the lead
    assert watcher._due_at(LEDGER, 100.1) == approx(100.15)  # another workload is not held back


def test_the_lead_never_exceeds_the_window() -> None:
    assert _watcher(window_s=0.0, lead_s=0.05).lead_s == 0.0


def _streaming(watcher: ClusterWatcher) -> ClusterWatcher:
    watcher._up = dict.fromkeys(watcher._up, True)
    return watcher


def test_taking_due_workloads_records_their_pass_and_keeps_the_rest_marked() -> None:
    watcher = _streaming(_watcher(window_s=30.0, lead_s=0.0))
    watcher._mark({CART})
    taken = watcher._take_due()
    assert set(taken) == {CART} and taken[CART] <= time.monotonic()
    assert CART in watcher._passed
    # Marked again at once: not due before the window since the pass is over.
    watcher._mark({CART, LEDGER})
    assert set(watcher._take_due()) == {LEDGER}
    assert watcher.pending() == 1
    assert watcher._due_at(CART, watcher._dirty[CART]) == watcher._passed[CART] + 30.0


def _finding(type_: str = "crash_loop", pod: str = "cart-1", severity: str = "critical") -> Finding:
    return Finding(type_, severity, "Pod", "shop", pod, "Deployment", "cart", f"{type_} on {pod}", {}, pod=pod)


def test_only_new_or_changed_findings_are_handed_over_until_the_refresh_is_due() -> None:
    watcher = _watcher()
    watcher.refresh_s = 10.0

    def hand(findings: list[Finding], now: float, due: set = frozenset({CART}), topology: Topology | None = None) -> set:  # type: ignore[type-arg]
        keys, kept, signatures = watcher._to_hand_over(set(due), findings, now, topology)
        for key, signature in signatures.items():  # what _run_detector records after a hand-over that worked
            watcher._handed[key] = (signature, now)
        assert {f.workload_key() for f in kept} == {"/".join(k) for k in keys}
        return keys

    assert hand([_finding()], 100.0) == {CART}  # new
    assert hand([_finding()], 101.0) == set()  # the same, a restart later: nothing to tell the incident service
    assert hand([_finding(), _finding(pod="cart-2")], 102.0) == {CART}  # another pod fails
    assert hand([_finding(), _finding(pod="cart-2"), _finding("oom_killed", "cart-3")], 103.0) == {CART}  # a new type
    assert hand([_finding(), _finding(pod="cart-2"), _finding("oom_killed", "cart-3")], 112.9) == set()
    assert hand([_finding(), _finding(pod="cart-2"), _finding("oom_killed", "cart-3")], 113.0) == {CART}  # refresh due
    assert hand([], 114.0) == set()  # healthy: nothing handed over (the watcher never resolves)...
    assert hand([_finding()], 114.5) == {CART}  # ...and a fault that comes back is news at once
    # A workload with no findings and one that has them, in one pass: only the latter.
    assert hand([_finding()], 130.0, due={CART, LEDGER}) == {CART}
    # The same findings, but now the pods' node is not ready: correlation has news for the incident.
    topology = Topology()
    topology.add_nodes([{"metadata": {"name": "node-4"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}])
    topology.add_pods([{"metadata": {"namespace": "shop", "name": "cart-1"}, "spec": {"nodeName": "node-4"},
                        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}],
                      lambda pod: ("Deployment", "cart"))
    assert topology.cause_node(CART) == "node-4"
    assert hand([_finding()], 131.0, topology=topology) == {CART}
    assert hand([_finding()], 132.0, topology=topology) == set()


def test_passes_wait_while_a_kind_is_being_relisted() -> None:
    """A Deployment re-listed before its pods must not open the incident on half the evidence."""
    watcher = _streaming(_watcher(window_s=0.5, lead_s=0.0))
    watcher._listing.add("pods")  # a 410 on the pods' stream: their re-list is under way
    watcher._mark({CART})
    taken: list[dict] = []  # type: ignore[type-arg]
    thread = threading.Thread(target=lambda: taken.append(watcher._take_due()), daemon=True)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and not taken  # held while the pods are missing from the picture
    watcher._listing.discard("pods")
    thread.join(10)
    assert taken and set(taken[0]) == {CART}
