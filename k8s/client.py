"""Turns a `Cluster` row (or a kubeconfig path + context) into a kubernetes `ApiClient`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

if TYPE_CHECKING:
    from k8s.models import Cluster


class ClusterConfigError(Exception):
    """The cluster's credentials cannot be loaded (missing file, unknown context, no service account)."""


def api_client_for_kubeconfig(path: str, context: str | None = None) -> k8s_client.ApiClient:
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_kube_config(config_file=path, context=context or None, client_configuration=configuration)
    except (k8s_config.ConfigException, FileNotFoundError, OSError) as exc:
        raise ClusterConfigError(f"kubeconfig {path!r} (context {context or 'current'!r}): {exc}") from exc
    return k8s_client.ApiClient(configuration)


def api_client_in_cluster() -> k8s_client.ApiClient:
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException as exc:
        raise ClusterConfigError(f"in-cluster configuration: {exc}") from exc
    return k8s_client.ApiClient(configuration)


def api_client_for(cluster: Cluster) -> k8s_client.ApiClient:
    if cluster.in_cluster:
        return api_client_in_cluster()
    return api_client_for_kubeconfig(cluster.kubeconfig_path, cluster.context or None)
