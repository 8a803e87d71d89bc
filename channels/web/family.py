"""The incident page's correlation block: "child of node-4's incident", or the parent's children."""

from __future__ import annotations

from typing import Any

from channels.formatting import incident_what, incident_workload

CHILDREN_SHOWN = 50


def _entry(incident: Any) -> dict[str, Any]:
    return {"pk": incident.pk, "what": incident_what(incident), "workload": incident_workload(incident),
            "state": incident.state, "severity": incident.severity}


def family(incident: Any) -> dict[str, Any]:
    """Template context: `parent` (with why it is the cause) and `children` (first 50, and counts)."""
    context: dict[str, Any] = {"parent": None, "children": [], "children_total": 0, "children_open": 0}
    parent = incident.parent if incident.parent_id else None
    if parent is not None:
        why = incident.correlation if isinstance(incident.correlation, dict) else {}
        context["parent"] = {**_entry(parent), "name": parent.workload_name or f"#{parent.pk}",
                             "why": str(why.get("text") or "")}
    children = incident.children.all()
    total = children.count()
    if total:
        context["children_total"] = total
        context["children_open"] = children.filter(state="open").count()
        context["children"] = [_entry(child) for child in children.order_by("-state", "namespace", "workload_name")[:CHILDREN_SHOWN]]
    return context
