"""`query_prometheus`: PromQL against a cluster's Prometheus (its `prometheus_url`, or
AIOPS_PROMETHEUS_URL outside Django), instant or over a range ending now, with a bounded result.

Metrics are evidence an RCA needs that the API server does not keep: a container's memory
working set before its OOM kill, restarts over the last hour. The result is cut to MAX_SERIES
series and MAX_POINTS points per series (evenly spaced, the newest kept), and says what was cut,
so a model or a person never receives megabytes of samples.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import httpx

from k8s.mcp_server.kube import ToolFailure

MAX_SERIES = 20
MAX_POINTS = 60
MAX_RANGE_S = 7 * 86400
_DURATION = re.compile(r"^([0-9]+)(s|m|h|d)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: str, what: str) -> int:
    match = _DURATION.match(value)
    if not match:
        raise ToolFailure(f"{what} {value!r} is not a duration such as 30s, 15m, 6h or 2d")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _thin(values: list[Any]) -> list[Any]:
    """At most MAX_POINTS points, evenly spaced over the whole range, the newest always kept."""
    if len(values) <= MAX_POINTS:
        return values
    stride = len(values) / MAX_POINTS
    picked = [values[math.floor(i * stride)] for i in range(MAX_POINTS - 1)]
    return picked + [values[-1]]


def _sample(point: list[Any]) -> list[Any]:
    timestamp, value = point
    return [round(float(timestamp), 3), value]


def query_prometheus(url: str, query: str, range: str | None = None, step: str | None = None,  # noqa: A002
                     timeout: float = 20.0) -> dict[str, Any]:
    if not url:
        raise ToolFailure("no Prometheus is configured for this cluster (set the cluster's Prometheus URL)")
    params: dict[str, Any] = {"query": query, "timeout": f"{max(int(timeout) - 1, 1)}s"}
    if range:
        span = seconds(range, "range")
        if span > MAX_RANGE_S:
            raise ToolFailure(f"range {range!r} is longer than {MAX_RANGE_S // 86400} days")
        step_s = seconds(step, "step") if step else max(span // MAX_POINTS, 1)
        if span // step_s > 11000:  # Prometheus refuses more than 11,000 points per series
            raise ToolFailure(f"step {step!r} is too fine for range {range!r} (at most 11000 points)")
        end = time.time()
        params.update(start=f"{end - span:.3f}", end=f"{end:.3f}", step=f"{step_s}")
        path = "/api/v1/query_range"
    else:
        path = "/api/v1/query"
    try:
        response = httpx.get(url.rstrip("/") + path, params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ToolFailure(f"Prometheus at {url} could not be reached ({type(exc).__name__})") from None
    try:
        body = response.json()
    except ValueError:
        raise ToolFailure(f"Prometheus at {url} answered HTTP {response.status_code} without JSON") from None
    if body.get("status") != "success":
        raise ToolFailure(f"Prometheus refused the query: {str(body.get('error') or response.status_code)[:500]}")
    data = body.get("data") or {}
    result_type = data.get("resultType", "")
    result = data.get("result")
    if result_type in ("scalar", "string"):
        return {"query": query, "result_type": result_type, "value": _sample(result)}
    series = result or []
    shown = []
    for item in series[:MAX_SERIES]:
        entry: dict[str, Any] = {"metric": item.get("metric") or {}}
        if "values" in item:
            values = item.get("values") or []
            entry["values"] = [_sample(p) for p in _thin(values)]
            if len(values) > len(entry["values"]):
                entry["points"] = len(values)
        else:
            entry["value"] = _sample(item.get("value") or [0, ""])
        shown.append(entry)
    answer: dict[str, Any] = {"query": query, "result_type": result_type, "series": shown, "series_total": len(series)}
    if range:
        answer["range"] = {"start": float(params["start"]), "end": float(params["end"]), "step_s": int(params["step"])}
    if len(series) > MAX_SERIES:
        answer["note"] = f"{len(series) - MAX_SERIES} more series left out; narrow the query (a label filter, topk)"
    return answer
