"""Small readers over the API's raw JSON (camelCase dicts, as a list response's items)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def ns_name(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = meta(obj)
    return metadata.get("namespace") or "", metadata.get("name") or ""


def controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = meta(obj).get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return ref
    return refs[0] if refs else None


def parse_time(value: str | None) -> datetime | None:
    """RFC 3339 as the API writes it (``2026-11-23T15:04:05Z``, maybe with fractions)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age_s(value: str | None, now: datetime) -> float | None:
    moment = parse_time(value)
    return None if moment is None else (now - moment).total_seconds()


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None
