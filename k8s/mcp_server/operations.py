"""Every Kubernetes tool by name: what `server.py` calls for a `tools/call` (query_prometheus,
which needs no Kubernetes client, is served by prometheus.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from k8s.mcp_server import kube_read, kube_write

_READ = ("list_pods", "describe_pod", "get_pod_logs", "analyze_pod_logs", "list_nodes", "describe_node", "list_deployments",
         "describe_deployment", "rollout_history", "rollout_status", "list_events", "list_namespaces", "list_services", "get_hpa")
_WRITE = ("restart_pod", "restart_deployment", "restart_workload", "scale_deployment", "set_hpa_max_replicas", "cordon_node",
          "uncordon_node", "drain_node", "rollback_deployment", "patch_memory_limit", "delete_pod_force")

OPERATIONS: dict[str, Callable[..., Any]] = {
    **{name: getattr(kube_read, name) for name in _READ},
    **{name: getattr(kube_write, name) for name in _WRITE},
}
