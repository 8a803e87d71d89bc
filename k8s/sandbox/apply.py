"""Managed fields and server-side apply, as the API server tracks and enforces them.

Every write through the API records which fields its manager set (`metadata.managedFields`,
FieldsV1: `f:<field>` for a map key, `k:{"name":"web"}` for a list item found by its merge key,
`v:<json>` for an item of a set). An apply (`PATCH` with `application/apply-patch+yaml`) makes
its manager own exactly the fields of the configuration it sends: fields it owned before and
no longer sends are removed (unless another manager owns them too), and a field another manager
owns with a different value is a conflict (409, naming manager and field) unless `force=true`,
which takes the field over. A plain write (create, update, patch) takes ownership of the fields
whose value it changed, as an `Update` entry.
"""

from __future__ import annotations

import json
from typing import Any

from k8s.sandbox.errors import ApiError
from k8s.sandbox.patch import MERGE_KEYS, MERGED_SCALAR_LISTS
from k8s.sandbox.resources import Resource
from k8s.sandbox.store import Obj, now_iso

Path = tuple[str, ...]
# Fields no manager owns: identity, the server's own metadata, and status (written by controllers).
_UNOWNED: tuple[Path, ...] = (("f:apiVersion",), ("f:kind",), ("f:metadata", "f:name"), ("f:metadata", "f:namespace"),
                              ("f:status",))
_SERVER_METADATA = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "selfLink"}


def leaves(obj: Any, prefix: Path = (), field: str = "") -> dict[Path, Any]:
    """Each owned leaf's path -> value, for an object (or a part of one)."""
    out: dict[Path, Any] = {}
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            if prefix == ("f:metadata",) and key in _SERVER_METADATA:
                continue
            out.update(leaves(value, (*prefix, f"f:{key}"), key))
        return out
    if isinstance(obj, list) and obj and field in MERGE_KEYS and all(isinstance(i, dict) and MERGE_KEYS[field] in i for i in obj):
        key_name = MERGE_KEYS[field]
        for item in obj:
            item_path = (*prefix, "k:" + json.dumps({key_name: item[key_name]}, separators=(",", ":")))
            out[(*item_path, ".")] = None
            out.update(leaves(item, item_path, ""))
        return out
    if isinstance(obj, list) and obj and field in MERGED_SCALAR_LISTS:
        for item in obj:
            out[(*prefix, "v:" + json.dumps(item, separators=(",", ":")))] = item
        return out
    out[prefix] = obj
    return out


def _owned(paths: dict[Path, Any] | set[Path], subresource: str = "") -> set[Path]:
    if subresource == "status":
        return {p for p in paths if p[:1] == ("f:status",) and len(p) > 1}
    return {p for p in paths if p and not any(p[: len(u)] == u for u in _UNOWNED)}


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    return tree


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    if not isinstance(tree, dict) or not tree:
        return {prefix} if prefix else set()
    out: set[Path] = set()
    for key, sub in tree.items():
        if key == ".":
            out.add((*prefix, "."))
        else:
            out |= from_fields_v1(sub, (*prefix, key))
    return out


def _entries(obj: Obj) -> list[dict[str, Any]]:
    return [dict(e) for e in (obj.get("metadata") or {}).get("managedFields") or () if isinstance(e, dict)]


def _entry(manager: str, operation: str, resource: Resource, paths: set[Path], subresource: str = "") -> dict[str, Any]:
    entry = {"manager": manager, "operation": operation, "apiVersion": resource.api_version, "time": now_iso(),
             "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(paths)}
    if subresource:
        entry["subresource"] = subresource
    return entry


def _same_owner(entry: dict[str, Any], manager: str, operation: str, subresource: str) -> bool:
    return (entry.get("manager"), entry.get("operation"), entry.get("subresource", "")) == (manager, operation, subresource)


def record_update(resource: Resource, old: Obj | None, new: Obj, manager: str, subresource: str = "") -> None:
    """Give `manager` (an Update entry) the fields whose value this write changed; others lose them."""
    before = leaves(old) if old is not None else {}
    after = leaves(new)
    changed = _owned({p for p, v in after.items() if p not in before or before[p] != v}, subresource)
    entries = _entries(old) if old is not None else []
    kept: list[dict[str, Any]] = []
    mine: set[Path] = set()
    for e in entries:
        paths = from_fields_v1(e.get("fieldsV1"))
        if _same_owner(e, manager, "Update", subresource):
            mine = paths
            continue
        paths = {p for p in paths if p not in changed and _still_there(p, after)}
        if paths:
            kept.append({**e, "fieldsV1": to_fields_v1(paths)})
    mine = {p for p in mine if _still_there(p, after)} | changed
    if mine:
        kept.append(_entry(manager, "Update", resource, mine, subresource))
    new["metadata"]["managedFields"] = kept


def _still_there(path: Path, after: dict[Path, Any]) -> bool:
    return any(p[: len(path)] == path for p in after) or path[-1:] == (".",) and any(p[: len(path) - 1] == path[:-1] for p in after)


def apply(resource: Resource, live: Obj | None, config: Obj, manager: str, *, force: bool) -> Obj:
    """The object after `manager` applies `config` to `live` (None: the object is created)."""
    from k8s.sandbox.patch import strategic_merge_patch

    applied = leaves(config)
    wanted = _owned(applied)
    if live is None:
        created = json.loads(json.dumps(config))
        created.setdefault("metadata", {})["managedFields"] = [_entry(manager, "Apply", resource, wanted)]
        return created
    current = leaves(live)
    entries = _entries(live)
    conflicts: list[tuple[str, Path]] = []
    for e in entries:
        if _same_owner(e, manager, "Apply", ""):
            continue
        who = f'"{e.get("manager")}"' + (f' with subresource "{e["subresource"]}"' if e.get("subresource") else "")
        for path in from_fields_v1(e.get("fieldsV1")) & wanted:
            if path in current and path in applied and current[path] != applied[path]:
                conflicts.append((who, path))
    if conflicts and not force:
        raise conflict_error(resource, live["metadata"]["name"], conflicts)
    taken = {path for _, path in conflicts}
    previously = next((from_fields_v1(e.get("fieldsV1")) for e in entries if _same_owner(e, manager, "Apply", "")), set())
    others: set[Path] = set()
    kept: list[dict[str, Any]] = []
    for e in entries:
        if _same_owner(e, manager, "Apply", ""):
            continue
        paths = from_fields_v1(e.get("fieldsV1")) - taken
        others |= paths
        if paths:
            kept.append({**e, "fieldsV1": to_fields_v1(paths)})
    merged = strategic_merge_patch(json.loads(json.dumps(live)), {k: v for k, v in config.items() if k != "status"})
    # Fields this manager applied before and no longer sends, and no one else owns, are removed.
    for path in sorted(previously - wanted - others, key=len, reverse=True):
        if path[-1] != ".":
            _remove(merged, path)
    for path in sorted(p[:-1] for p in previously - wanted - others if p[-1] == "."):
        _remove(merged, path)
    kept.append(_entry(manager, "Apply", resource, wanted))
    merged["metadata"]["managedFields"] = kept
    return merged


def conflict_error(resource: Resource, name: str, conflicts: list[tuple[str, Path]]) -> ApiError:
    def dotted(path: Path) -> str:
        return "".join(f".{p[2:]}" if p.startswith("f:") else f"[{p[2:].replace(':', '=').strip('{}')}]" for p in path if p != ".")

    lines = [(f"conflict with {who} using {resource.api_version}", dotted(path)) for who, path in conflicts]
    text = (f"Apply failed with {len(lines)} conflict{'s' if len(lines) > 1 else ''}: "
            + "\n".join(f"{who}: {field}" for who, field in lines))
    return ApiError(409, "Conflict", text, {"name": name, "group": resource.group, "kind": resource.plural,
                                             "causes": [{"reason": "FieldManagerConflict", "message": who, "field": field}
                                                        for who, field in lines]})


def _remove(obj: Any, path: Path) -> None:
    node = obj
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if part.startswith("f:") and isinstance(node, dict):
            if last:
                node.pop(part[2:], None)
                return
            node = node.get(part[2:])
        elif part.startswith("k:") and isinstance(node, list):
            key = json.loads(part[2:])
            match = next((item for item in node if isinstance(item, dict) and all(item.get(k) == v for k, v in key.items())), None)
            if match is None:
                return
            if last:
                node.remove(match)
                return
            node = match
        elif part.startswith("v:") and isinstance(node, list):
            value = json.loads(part[2:])
            if value in node:
                node.remove(value)
            return
        else:
            return
        if node is None:
            return
