"""Gathering a bundle from a live cluster."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agents.rca.bundle import BundleError, event_time, metadata_of

_LOG_TAIL_LINES = 500
_MAX_EVENTS = 40
_WORKLOAD_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Node")


def _raw(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Raw JSON from the API (no model deserialisation: faster, and the bundle is API-shaped)."""
    import orjson

    response = call(*args, _preload_content=False, _request_timeout=15, **kwargs)
    return orjson.loads(response.data)


def _selector_text(selector: Mapping[str, Any] | None) -> str:
    labels = (selector or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _matches(labels: Mapping[str, Any], selector: Mapping[str, Any] | None) -> bool:
    wanted = (selector or {}).get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _badness(pod: Mapping[str, Any]) -> tuple[int, int, str]:
    """Sort key: the pod most worth explaining (not ready, restarting, waiting) first."""
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    waiting = sum(1 for c in statuses if (c.get("state") or {}).get("waiting"))
    not_ready = sum(1 for c in statuses if not c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    failing = waiting * 1000 + not_ready * 100 + (50 if status.get("phase") in ("Pending", "Failed") else 0)
    return (failing, restarts, metadata_of(pod).get("creationTimestamp") or "")


def _container_to_read(pod: Mapping[str, Any]) -> tuple[str, bool]:
    """(container, has a previous instance): the failing container, else the first.

    While an init container has not finished, the pod's app containers have not started: that
    init container (waiting on something, or crash-looping) is the one whose log says why."""
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        done = ((status.get("state") or {}).get("terminated") or {}).get("exitCode") == 0
        if not done:
            return status.get("name") or "", int(status.get("restartCount") or 0) > 0
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ranked = sorted(statuses, key=lambda c: (bool(c.get("ready")), -int(c.get("restartCount") or 0)))
    if ranked:
        chosen = ranked[0]
        return chosen.get("name") or "", int(chosen.get("restartCount") or 0) > 0 or bool((chosen.get("lastState") or {}).get("terminated"))
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return containers[0].get("name") or "", False


def _read_log(core: Any, pod: Mapping[str, Any], container: str, previous: bool) -> str:
    meta = metadata_of(pod)
    response = core.read_namespaced_pod_log(
        meta["name"], meta["namespace"], container=container or None, previous=previous,
        tail_lines=_LOG_TAIL_LINES, _preload_content=False, _request_timeout=15,
    )
    return response.data.decode("utf-8", "replace")


def gather_bundle(cluster: Any, workload: Mapping[str, str]) -> dict[str, Any]:
    """A bundle for `workload` ({kind, namespace, name}) read from `cluster` now.

    What cannot be read (logs of a container that never started, events the API refuses) is
    listed in `errors` and the rest is still returned; a workload that does not exist raises
    BundleError.
    """
    from kubernetes import client as k8s

    from k8s.client import api_client_for

    kind = str(workload.get("kind") or "")
    namespace = str(workload.get("namespace") or "")
    name = str(workload.get("name") or "")
    if kind not in _WORKLOAD_KINDS:
        raise BundleError(f"workload.kind: {kind!r} is not one of {', '.join(_WORKLOAD_KINDS)}")
    if not name or (kind != "Node" and not namespace):
        raise BundleError("workload: needs a name, and a namespace unless it is a Node")
    api = api_client_for(cluster)
    core, apps, batch = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.BatchV1Api(api)
    bundle: dict[str, Any] = {
        "workload": {"kind": kind, "namespace": namespace, "name": name},
        "cluster": str(getattr(cluster, "name", "")),
        "collected_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": [],
        "logs": "",
        "previous_logs": "",
        "errors": [],
    }
    errors: list[str] = bundle["errors"]

    def attempt(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return _raw(call, *args, **kwargs)
        except k8s.ApiException as exc:
            if exc.status == 404 and what == "workload":
                raise BundleError(f"workload: {kind} {namespace}/{name} not found in cluster {bundle['cluster']!r}") from None
            errors.append(f"{what}: HTTP {exc.status} {exc.reason}")
        except Exception as exc:  # noqa: BLE001  (a partial bundle beats none)
            if what == "workload":
                raise
            errors.append(f"{what}: {exc}")
        return None

    try:
        pods: list[dict[str, Any]] = []
        involved: set[str] = {name}
        if kind == "Node":
            bundle["node"] = attempt("workload", core.read_node, name)
            listed = attempt("pods", core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={name}") or {}
            pods = [p for p in listed.get("items") or [] if (p.get("spec") or {}).get("nodeName") == name]
        elif kind == "Pod":
            pods = [attempt("workload", core.read_namespaced_pod, name, namespace)]
        elif kind == "Job":
            bundle["job"] = attempt("workload", batch.read_namespaced_job, name, namespace)
            listed = attempt("pods", core.list_namespaced_pod, namespace, label_selector=f"job-name={name}") or {}
            pods = [p for p in listed.get("items") or [] if (metadata_of(p).get("labels") or {}).get("job-name") == name]
        elif kind == "CronJob":
            jobs = attempt("jobs", batch.list_namespaced_job, namespace) or {}
            owned = [j for j in jobs.get("items") or [] if any(r.get("name") == name for r in metadata_of(j).get("ownerReferences") or [])]
            if not owned:
                raise BundleError(f"workload: CronJob {namespace}/{name} has no jobs to analyse")
            job = max(owned, key=lambda j: metadata_of(j).get("creationTimestamp") or "")
            bundle["job"] = job
            involved.add(metadata_of(job).get("name") or "")
            listed = attempt("pods", core.list_namespaced_pod, namespace, label_selector=f"job-name={metadata_of(job).get('name')}") or {}
            pods = listed.get("items") or []
        else:
            reader = {
                "Deployment": apps.read_namespaced_deployment,
                "StatefulSet": apps.read_namespaced_stateful_set,
                "DaemonSet": apps.read_namespaced_daemon_set,
                "ReplicaSet": apps.read_namespaced_replica_set,
            }[kind]
            owner = attempt("workload", reader, name, namespace)
            selector = (owner.get("spec") or {}).get("selector")
            if kind == "Deployment":
                bundle["deployment"] = owner
                listed = attempt("replicasets", apps.list_namespaced_replica_set, namespace, label_selector=_selector_text(selector)) or {}
                bundle["replicasets"] = [
                    rs for rs in listed.get("items") or []
                    if any(r.get("kind") == "Deployment" and r.get("name") == name for r in metadata_of(rs).get("ownerReferences") or [])
                ]
                involved.update(metadata_of(rs).get("name") or "" for rs in bundle["replicasets"])
            listed = attempt("pods", core.list_namespaced_pod, namespace, label_selector=_selector_text(selector)) or {}
            pods = [p for p in listed.get("items") or [] if _matches(metadata_of(p).get("labels") or {}, selector)]
            hpas = attempt("hpas", k8s.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler, namespace) or {}
            hpa = next((h for h in hpas.get("items") or []
                        if ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == name
                        and ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("kind") == kind), None)
            if hpa is not None:
                bundle["hpa"] = hpa
                involved.add(metadata_of(hpa).get("name") or "")
        pods = [p for p in pods if p]
        if pods and kind != "Node":
            pod = max(pods, key=_badness)
            bundle["pod"] = pod
            involved.add(metadata_of(pod).get("name") or "")
            container, has_previous = _container_to_read(pod)
            try:
                bundle["logs"] = _read_log(core, pod, container, False)
            except Exception as exc:  # noqa: BLE001  (a container that never started has no log)
                errors.append(f"logs: {getattr(exc, 'status', '')} {getattr(exc, 'reason', exc)}".strip())
            if has_previous:
                try:
                    bundle["previous_logs"] = _read_log(core, pod, container, True)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"previous_logs: {getattr(exc, 'status', '')} {getattr(exc, 'reason', exc)}".strip())
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name:
                bundle["node"] = attempt("node", core.read_node, node_name)
        # Events about the workload, its replica sets and the chosen pod (client-side filter too:
        # not every API server honours every field selector).
        if kind == "Node":
            listed = attempt("events", core.list_event_for_all_namespaces, field_selector=f"involvedObject.name={name}") or {}
        else:
            listed = attempt("events", core.list_namespaced_event, namespace) or {}
        events = [e for e in listed.get("items") or [] if (e.get("involvedObject") or {}).get("name") in involved]
        events.sort(key=event_time)
        bundle["events"] = events[-_MAX_EVENTS:]
    finally:
        api.close()
    for key in [k for k, v in bundle.items() if v is None]:
        del bundle[key]
    if not bundle["errors"]:
        del bundle["errors"]
    return bundle
