"""The sandbox's own admin endpoint (`/sandbox/v1/...`): inject and clear faults, reset, tick, generate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from k8s.sandbox import faults as fault_rules
from k8s.sandbox import scenarios
from k8s.sandbox.errors import ApiError
from k8s.sandbox.wire import Request, Response, json_response

if TYPE_CHECKING:
    from k8s.sandbox.simulation import Simulation


def handle(sim: Simulation, r: Request, parts: list[str]) -> Response:
    try:
        if parts == ["faults"] and r.method == "GET":
            with sim.lock:
                return json_response(200, {"faults": [f.describe() for f in sim.faults],
                                           "cleared": [{**f.describe(), "cleared_by": why} for f, why in sim.cleared[-50:]]})
        body = r.json() if r.body else {}
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body must be a JSON object")
        if parts == ["faults"] and r.method == "POST":
            ftype, target = body.get("type"), body.get("target")
            if not isinstance(ftype, str) or not isinstance(target, str):
                raise ApiError.bad_request("give a fault type and a target: {\"type\": ..., \"target\": ...}")
            options = body.get("options") or {}
            if not isinstance(options, dict):
                raise ApiError.bad_request("options must be an object")
            fault = fault_rules.inject(sim, ftype, target, **options)
            return json_response(201, fault.describe())
        if parts == ["faults", "clear"] and r.method == "POST":
            target = body.get("target")
            if not isinstance(target, str):
                raise ApiError.bad_request("give the target to clear: {\"target\": ...}")
            return json_response(200, {"cleared": [f.describe() for f in fault_rules.clear(sim, target)]})
        if parts == ["reset"] and r.method == "POST":
            scenarios.load(sim, str(body.get("scenario", "demo")))
            return json_response(200, {"scenario": body.get("scenario", "demo")})
        if parts == ["tick"] and r.method == "POST":
            sim.tick()
            return json_response(200, {"ticks": sim.ticks})
        if parts == ["generate"] and r.method == "POST":
            return json_response(201, scenarios.generate(sim, pods=int(body.get("pods", 0)), nodes=body.get("nodes"),
                                                         deployments=body.get("deployments")))
    except fault_rules.FaultError as exc:
        raise ApiError(404 if "no " in str(exc)[:3] else 400, "NotFound" if "no " in str(exc)[:3] else "BadRequest", str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ApiError.bad_request(f"bad option: {exc}") from None
    raise ApiError.no_route()
