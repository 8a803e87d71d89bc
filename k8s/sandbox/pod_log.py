"""`GET pods/{name}/log`: what a kubelet serves for a container, current or `--previous`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from k8s.sandbox import logs as log_text
from k8s.sandbox import objects as o
from k8s.sandbox.errors import ApiError
from k8s.sandbox.resources import BY_PLURAL
from k8s.sandbox.wire import Request, Response

if TYPE_CHECKING:
    from k8s.sandbox.simulation import Simulation


def serve(sim: Simulation, r: Request, ns: str, name: str) -> Response:
    with sim.lock:
        pod = sim.store.require(BY_PLURAL["pods"], ns, name)
    containers = [c["name"] for c in pod["spec"]["containers"]]
    container = r.query.get("container") or ""
    if not container:
        if len(containers) > 1:
            raise ApiError.bad_request(f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]")
        container = containers[0]
    if container not in containers:
        raise ApiError.bad_request(f"container {container} is not valid for pod {name}")
    cs = next((c for c in (pod.get("status") or {}).get("containerStatuses") or () if c["name"] == container), None)
    previous = r.flag("previous")
    spec = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    state = (cs or {}).get("state") or {}
    last = ((cs or {}).get("lastState") or {}).get("terminated")
    if cs is None or ("waiting" in state and not last and not previous):
        reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
        if reason in ("ImagePullBackOff", "ErrImagePull"):
            raise ApiError.bad_request(f'container "{container}" in pod "{name}" is waiting to start: trying and failing to pull image')
        raise ApiError.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    runtime = (pod["metadata"].get("annotations") or {}).get("sandbox.aiops.dev/runtime", "python")
    app = pod["metadata"].get("labels", {}).get("app.kubernetes.io/name", container)
    seed = sum(map(ord, name))
    if previous:
        if not last:
            raise ApiError.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        lines = log_text.render(runtime, app, log_text.terminated_state(last, spec), _parse_ts(last["startedAt"]), seed=seed)
    elif "running" in state:
        kind = "probe_failure" if not cs.get("ready") and cs.get("started") else "running"
        lines = log_text.render(runtime, app, kind, _parse_ts(state["running"].get("startedAt")), seed=seed)
    elif "terminated" in state:
        term = state["terminated"]
        kind = "job_failed" if term.get("exitCode") and o.controller_of(pod) and o.controller_of(pod)["kind"] == "Job" else (
            "job_succeeded" if o.controller_of(pod) and o.controller_of(pod)["kind"] == "Job" else "oom_killed")
        lines = log_text.render(runtime, app, kind, _parse_ts(term.get("startedAt")), seed=seed)
    else:  # waiting after a crash: the last instance's log, which is what a kubelet serves
        # From the instance's own start: a liveness-killed one ran a minute, not 3 s.
        started = _parse_ts(last["startedAt"]) if last.get("startedAt") else _parse_ts(last["finishedAt"]) - timedelta(seconds=3)
        lines = log_text.render(runtime, app, log_text.terminated_state(last, spec), started, seed=seed + 1)
    return Response(200, _format(r, lines), "text/plain")

def _format(r: Request, lines: list[tuple[datetime, str]]) -> bytes:
    try:
        tail = int(r.query["tailLines"]) if r.query.get("tailLines") else None
        limit = int(r.query["limitBytes"]) if r.query.get("limitBytes") else None
    except ValueError:
        raise ApiError.bad_request("tailLines and limitBytes must be integers") from None
    if tail is not None:
        if tail < 0:
            raise ApiError.bad_request(f"tailLines: Invalid value: {tail}: must be greater than or equal to 0")
        lines = lines[-tail:] if tail else []
    stamps = r.flag("timestamps")
    text = "".join((f"{t.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z " if stamps else "") + line + "\n" for t, line in lines)
    data = text.encode()
    return data[:limit] if limit is not None and limit > 0 else data


def _parse_ts(ts: str | None) -> datetime:
    if not ts:
        return datetime.now(UTC)
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
