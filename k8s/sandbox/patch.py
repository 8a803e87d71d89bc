"""The three patch formats the API server accepts: JSON patch (RFC 6902), JSON merge patch
(RFC 7386) and strategic merge patch (merge keys for the lists of the kinds we serve)."""

from __future__ import annotations

from typing import Any

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class PatchError(Exception):
    """The patch is well-formed JSON but cannot be applied (a missing path, a failed test)."""


class PatchDecodeError(Exception):
    """The patch body is not what its content type says."""


# Lists whose items the strategic merge matches by a key instead of replacing the list
# (the `patchMergeKey` tags of the Kubernetes API types we serve).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "taints": "key",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# Lists of scalars merged as sets (patchStrategy: merge on a []string).
MERGED_SCALAR_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    if field in MERGED_SCALAR_LISTS:
        out = list(current or [])
        for item in patch:
            if item not in out:
                out.append(item)
        return out
    key = MERGE_KEYS.get(field)
    if key is None or not all(isinstance(item, dict) for item in patch):
        return [item for item in patch if not (isinstance(item, dict) and item.get("$patch"))]
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [item for item in patch if item.get("$patch") != "replace"]
    out = [dict(item) for item in (current or []) if isinstance(item, dict)]
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        index = next((i for i, existing in enumerate(out) if existing.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[index] = strategic_merge_patch(out[index], item)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"doc is missing path: {path!r}")
    return node


def _add(doc: Any, parts: list[str], value: Any, path: str, *, replace: bool) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing key: {path}")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise PatchError(f"unable to access invalid index: {last} in {path!r}")
    else:
        raise PatchError(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"remove operation does not apply: doc is missing path: {path!r}")


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch to a copy-owned document (the caller passes a copy)."""
    import copy as _copy

    if not isinstance(operations, list):
        raise PatchDecodeError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchDecodeError(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{kind} operation has no value: {path!r}")
        if kind == "add":
            doc = _add(doc, parts, _copy.deepcopy(op["value"]), path, replace=False)
        elif kind == "replace":
            doc = _add(doc, parts, _copy.deepcopy(op["value"]), path, replace=True)
        elif kind == "remove":
            _remove(doc, parts, path)
        elif kind == "test":
            if _walk(doc, parts, path) != op["value"]:
                raise PatchError(f"testing value {path} failed: test failed")
        elif kind in ("move", "copy"):
            source = op.get("from")
            if source is None:
                raise PatchError(f"{kind} operation has no from: {path!r}")
            value = _copy.deepcopy(_walk(doc, _pointer(source), source))
            if kind == "move":
                _remove(doc, _pointer(source), source)
            doc = _add(doc, parts, value, path, replace=False)
        else:
            raise PatchDecodeError(f"unexpected kind: {kind}")
    return doc
