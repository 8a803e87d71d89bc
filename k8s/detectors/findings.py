"""Finding types, severities and the `Finding` every detector returns (no I/O, no Django)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

CRITICAL = "critical"
WARNING = "warning"
INFO = "info"
SEVERITIES = (CRITICAL, WARNING, INFO)

# Finding types (DESIGN.md "Names"), most specific first: an incident's primary type is the
# first of its types in this order.
PRIMARY_ORDER = (
    "cluster_unreachable",
    "not_ready_node",
    "oom_killed",
    "image_pull_failure",
    "crash_loop",
    "probe_failure",
    "unschedulable",
    "failed_job",
    "evicted",
    "high_restart_rate",
    "replication_failure",
    "hpa_maxed",
)
FINDING_TYPES = frozenset(PRIMARY_ORDER)


@dataclass(frozen=True)
class Finding:
    type: str
    severity: str
    kind: str
    namespace: str
    name: str
    owner_kind: str
    owner_name: str
    message: str
    evidence: dict[str, Any] = field(compare=False, hash=False)
    pod: str = ""

    def workload_key(self) -> str:
        """``Kind/namespace/name`` of the owning workload (namespace empty for nodes)."""
        return f"{self.owner_kind}/{self.namespace}/{self.owner_name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "severity": self.severity,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "owner_kind": self.owner_kind,
            "owner_name": self.owner_name,
            "pod": self.pod,
            "message": self.message,
            "evidence": self.evidence,
        }


def primary_type(types: Iterable[str]) -> str:
    present = set(types)
    for candidate in PRIMARY_ORDER:
        if candidate in present:
            return candidate
    return sorted(present)[0] if present else ""
