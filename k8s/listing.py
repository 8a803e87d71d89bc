"""Cluster-wide list calls as raw JSON: one request sequence per kind, paginated, parsed with orjson.

Lists are fetched with ``_preload_content=False`` (no model deserialisation, ~8x cheaper than the
client's models) and ``limit``/``continue`` so no single response is huge. The poll and the
watcher's (re-)lists share them; the watcher's watch calls are the same functions with
``watch=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from kubernetes import client as k8s_client

PAGE_SIZE = 500  # kubectl's chunk size: bounded responses, few round trips
KINDS = ("pods", "nodes", "deployments", "replicasets", "hpas", "jobs")


def list_calls(api: k8s_client.ApiClient) -> dict[str, Callable[..., Any]]:
    """One cluster-wide list call per kind (a single request sequence each, all namespaces)."""
    core, apps = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api)
    return {
        "pods": core.list_pod_for_all_namespaces,
        "nodes": core.list_node,
        "deployments": apps.list_deployment_for_all_namespaces,
        "replicasets": apps.list_replica_set_for_all_namespaces,
        "hpas": k8s_client.AutoscalingV2Api(api).list_horizontal_pod_autoscaler_for_all_namespaces,
        "jobs": k8s_client.BatchV1Api(api).list_job_for_all_namespaces,
    }


def fetch_raw_pages(call: Callable[..., Any], *, page_size: int = PAGE_SIZE, timeout: float = 30) -> Any:
    """Yield each page's parsed body; follows ``continue`` tokens to the end."""
    token: str | None = None
    while True:
        extra = {"_continue": token} if token else {}
        response = call(limit=page_size, _preload_content=False, _request_timeout=timeout, **extra)
        try:
            body = orjson.loads(response.data)
        finally:
            response.release_conn()
        yield body
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return
