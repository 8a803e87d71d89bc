"""Cluster-wide list and watch calls as raw JSON: one request sequence per kind, paginated, parsed with orjson.

Lists are fetched raw (no model deserialisation, ~8x cheaper than the client's models) and with
``limit``/``continue`` so no single response is huge. The poll and the watcher's (re-)lists share
them; the watcher's watch calls are the same functions with ``watch=True``.

The requests go through the `ApiClient` (its kubeconfig credentials, TLS, token refresh and
connection pool) but not through the generated API classes (`CoreV1Api`, ...): those modules
hold a validated method for every endpoint of their group, and importing the four this needs
cost 27 MB of resident memory in every process that polls or watches, for six GET requests.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

PAGE_SIZE = 500  # kubectl's chunk size: bounded responses, few round trips
KINDS = ("pods", "nodes", "deployments", "replicasets", "hpas", "jobs")
# The cluster-wide collection of each kind (the endpoints the client's list_*_for_all_namespaces call).
PATHS = {
    "pods": "/api/v1/pods",
    "nodes": "/api/v1/nodes",
    "deployments": "/apis/apps/v1/deployments",
    "replicasets": "/apis/apps/v1/replicasets",
    "hpas": "/apis/autoscaling/v2/horizontalpodautoscalers",
    "jobs": "/apis/batch/v1/jobs",
}


def raw_list(api: k8s_client.ApiClient, path: str, *, limit: int | None = None, _continue: str | None = None,
             watch: bool | None = None, resource_version: str | None = None, allow_watch_bookmarks: bool | None = None,
             timeout_seconds: int | None = None, _preload_content: bool = False, _request_timeout: Any = None) -> Any:
    """GET a collection (a list, or a watch with ``watch=True``); returns the urllib3 response, unread.

    The keywords are the generated client's, so a call reads the same; a non-2xx answer raises
    `ApiException` as the client does.
    """
    if _preload_content:
        raise ValueError("raw_list returns the unread response: read it with orjson")
    query: list[tuple[str, str]] = []
    if allow_watch_bookmarks is not None:
        query.append(("allowWatchBookmarks", "true" if allow_watch_bookmarks else "false"))
    if _continue:
        query.append(("continue", _continue))
    if limit is not None:
        query.append(("limit", str(limit)))
    if resource_version is not None:
        query.append(("resourceVersion", resource_version))
    if timeout_seconds is not None:
        query.append(("timeoutSeconds", str(timeout_seconds)))
    if watch is not None:
        query.append(("watch", "true" if watch else "false"))
    method, url, headers, body, post = api.param_serialize(
        method="GET", resource_path=path, query_params=query, header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, headers, body, post, _request_timeout=_request_timeout)
    if not 200 <= response.status <= 299:
        response.read()
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return response.response


def list_calls(api: k8s_client.ApiClient) -> dict[str, Callable[..., Any]]:
    """One cluster-wide list call per kind (a single request sequence each, all namespaces)."""
    return {kind: partial(raw_list, api, PATHS[kind]) for kind in KINDS}


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
