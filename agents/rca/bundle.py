"""The context bundle: its fields, its validation, and reading it (metadata, events)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BUNDLE_FIELDS = {
    "pod": dict, "events": list, "logs": str, "previous_logs": str, "node": dict, "deployment": dict,
    "replicasets": list, "job": dict, "hpa": dict, "related": list, "workload": dict, "cluster": str,
    "collected_at": str, "errors": list,
}


class BundleError(ValueError):
    """The bundle is malformed; the message names the field."""


def validate_bundle(bundle: Any) -> None:
    if not isinstance(bundle, Mapping):
        raise BundleError(f"the bundle must be a JSON object, not {type(bundle).__name__}")
    for key, value in bundle.items():
        expected = BUNDLE_FIELDS.get(key)
        if expected is None:
            raise BundleError(f"unknown field {key!r} (known: {', '.join(sorted(BUNDLE_FIELDS))})")
        if value is not None and not isinstance(value, expected):
            raise BundleError(f"{key}: must be {_type_word(expected)}, not {type(value).__name__}")
    if not any(bundle.get(k) for k in ("pod", "node", "deployment", "job")):
        raise BundleError("pod: required (it may be left out only when node, deployment or job is given)")
    for key in ("pod", "node", "deployment", "job", "hpa"):
        obj = bundle.get(key)
        if obj and not isinstance(obj.get("metadata"), Mapping):
            raise BundleError(f"{key}.metadata: must be an object (give the object as the API returns it)")
        if obj and not isinstance(obj["metadata"].get("name"), str):
            raise BundleError(f"{key}.metadata.name: must be a string")
        if obj and obj.get("status") is not None and not isinstance(obj.get("status"), Mapping):
            raise BundleError(f"{key}.status: must be an object")
    for index, event in enumerate(bundle.get("events") or []):
        if not isinstance(event, Mapping):
            raise BundleError(f"events[{index}]: must be an object (an Event)")
        for text_field in ("reason", "message", "type"):
            if event.get(text_field) is not None and not isinstance(event.get(text_field), str):
                raise BundleError(f"events[{index}].{text_field}: must be a string")
        count = event.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
            raise BundleError(f"events[{index}].count: must be an integer")
    for index, rs in enumerate(bundle.get("replicasets") or []):
        if not isinstance(rs, Mapping) or not isinstance(rs.get("metadata"), Mapping):
            raise BundleError(f"replicasets[{index}]: must be a ReplicaSet object with metadata")


def _type_word(kind: type) -> str:
    return {dict: "an object", list: "a list", str: "a string"}[kind]


def metadata_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def ref_of(kind: str, obj: Mapping[str, Any] | None) -> str:
    meta = metadata_of(obj)
    return f"{kind}/{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else f"{kind}/{meta.get('name')}"


def event_time(event: Mapping[str, Any]) -> str:
    series = event.get("series") or {}
    return str(series.get("lastObservedTime") or event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")


def event_count(event: Mapping[str, Any]) -> int:
    series = event.get("series") or {}
    return int(series.get("count") or event.get("count") or 1)


def normalized_events(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Both Event shapes as one: reason, message, type, count, time, object; newest last."""
    events = []
    for event in bundle.get("events") or []:
        involved = event.get("involvedObject") or event.get("regarding") or {}
        events.append(
            {
                "reason": event.get("reason") or "",
                "message": event.get("message") or event.get("note") or "",
                "type": event.get("type") or "",
                "count": event_count(event),
                "time": event_time(event),
                "object": f"{involved.get('kind', '')}/{involved.get('name', '')}",
            }
        )
    events.sort(key=lambda e: e["time"])
    return events

