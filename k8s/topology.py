"""Topology: which nodes are not ready, and on which nodes each workload's failing pods sit.

The poll builds one while it streams pods past the detectors; the watcher builds one for the
workloads an event touched from the slim objects it holds. Pure (no I/O), and small: only pods
that are not Ready are counted, by workload and node, so 10,000 healthy pods cost nothing.

`cause_node(key)` answers the correlation question: is every failing pod of this workload on a
node that is not ready? Then the node is the likely cause, and the workload's incident is a
child of the node's incident (`playbooks.services.correlation`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Key = tuple[str, str, str]  # workload: (kind, namespace, name), as Finding.workload_key spells it


def _ready(obj: Mapping[str, Any]) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return None


class Topology:
    def __init__(self) -> None:
        self.not_ready_nodes: set[str] = set()
        self.nodes_seen = 0
        # workload -> node -> pods of that workload on that node that are not Ready
        self.unready: dict[Key, Counter[str]] = {}

    def add_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        for node in nodes:
            self.nodes_seen += 1
            if _ready(node) != "True":
                self.not_ready_nodes.add((node.get("metadata") or {}).get("name") or "")

    def add_pods(self, pods: Iterable[Mapping[str, Any]], owner_of: Callable[[Mapping[str, Any]], tuple[str, str]]) -> None:
        """Pods of any workloads; `owner_of(pod)` is (kind, name) of the workload, as the detectors
        resolve it (`OwnerIndex.owner_of_pod`), asked only for the pods that are not Ready."""
        for pod in pods:
            status = pod.get("status") or {}
            meta = pod.get("metadata") or {}
            if status.get("phase") in ("Succeeded", "Failed") or meta.get("deletionTimestamp") or _ready(pod) == "True":
                continue
            kind, name = owner_of(pod)
            node = (pod.get("spec") or {}).get("nodeName") or ""
            self.unready.setdefault((kind, meta.get("namespace") or "", name), Counter())[node] += 1

    def cause_node(self, key: Key) -> str | None:
        """The not-ready node holding this workload's failing pods, when all of them are on
        not-ready nodes (the one with the most of them); None when any fails elsewhere."""
        counts = self.unready.get(key)
        if not counts or not self.not_ready_nodes:
            return None
        if any(node not in self.not_ready_nodes for node in counts):
            return None  # a pod fails on a healthy node (or is not scheduled): its own problem
        return max(sorted(counts), key=lambda node: counts[node])

    def pods_on(self, key: Key, node: str) -> int:
        return (self.unready.get(key) or Counter())[node]
