"""In-memory object store with resourceVersions, selectors, paginated lists and a watch log.

Stored objects are never mutated in place: a writer takes `copy()` of an object, changes the
copy and `put()`s it back. A reader (a list being serialised, a watch event in flight) may
therefore hold a stored dict without the lock.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import re
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson

from k8s.sandbox.errors import ApiError
from k8s.sandbox.resources import BY_PLURAL, Resource

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects

WATCH_LOG_SIZE = 20_000


_clock: list[Any] = [0, ""]


def now_iso() -> str:
    """RFC 3339 to the second, as the API writes timestamps (formatted once per second)."""
    second = int(time.time())
    if _clock[0] != second:
        _clock[0], _clock[1] = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _clock[1]


def copy(obj: Obj) -> Obj:
    # orjson round-trips plain JSON trees several times faster than copy.deepcopy.
    return orjson.loads(orjson.dumps(obj))


def with_status(obj: Obj, status: Any) -> Obj:
    """A new version of `obj` with another status, sharing the unchanged parts (which no writer
    mutates in place): a controller's status write without a deep copy of the object."""
    return {**obj, "metadata": dict(obj["metadata"]), "status": status}


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[str, dict[Key, Obj]] = {plural: {} for plural in BY_PLURAL}
        self.rv = 1000
        # (rv, plural, event type, object) for watchers; old entries fall off the left.
        self.log: deque[tuple[int, str, str, Obj]] = deque(maxlen=WATCH_LOG_SIZE)
        # plural -> owner uid -> keys of the objects it owns (controllers look these up constantly).
        self.by_owner: dict[str, dict[str, dict[Key, None]]] = {plural: {} for plural in BY_PLURAL}
        # plural -> its keys in list order, rebuilt after a create or a delete (an update keeps it):
        # a page of a 100,000-object list starts at a bisect instead of sorting every key again.
        self._sorted: dict[str, list[Key] | None] = {plural: None for plural in BY_PLURAL}
        # plural -> key -> (the stored object, its JSON): lists are served from bytes serialised
        # once per object version (stored objects are never mutated, so identity marks a version).
        self._json: dict[str, dict[Key, tuple[Obj, bytes]]] = {plural: {} for plural in BY_PLURAL}

    # --- reads -----------------------------------------------------------------------------
    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self.objects[plural].get((namespace, name))

    def require(self, resource: Resource, namespace: str, name: str) -> Obj:
        obj = self.objects[resource.plural].get((namespace if resource.namespaced else "", name))
        if obj is None:
            raise ApiError.not_found(resource, name)
        return obj

    def all(self, plural: str, namespace: str | None = None) -> list[Obj]:
        items = self.objects[plural]
        if namespace is None:
            return list(items.values())
        return [obj for (ns, _), obj in items.items() if ns == namespace]

    def owned_by(self, plural: str, owner_uid: str, namespace: str) -> list[Obj]:
        table = self.objects[plural]
        return [table[key] for key in self.by_owner[plural].get(owner_uid, ()) if key[0] == namespace and key in table]

    def _index(self, plural: str, key: Key, old: Obj | None, new: Obj | None) -> None:
        old_uids = {ref.get("uid") for ref in (old or {}).get("metadata", {}).get("ownerReferences") or ()}
        new_uids = {ref.get("uid") for ref in (new or {}).get("metadata", {}).get("ownerReferences") or ()}
        index = self.by_owner[plural]
        for uid in old_uids - new_uids:
            index.get(uid, {}).pop(key, None)
            if uid in index and not index[uid]:
                del index[uid]
        for uid in new_uids - old_uids:
            index.setdefault(uid, {})[key] = None

    # --- writes ----------------------------------------------------------------------------
    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def create(self, plural: str, obj: Obj) -> Obj:
        with self.lock:
            meta = obj.setdefault("metadata", {})
            key = (meta.get("namespace", ""), meta["name"])
            if key in self.objects[plural]:
                raise ApiError.already_exists(BY_PLURAL[plural], meta["name"])
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_iso())
            meta.setdefault("generation", 1) if "spec" in obj else None
            meta["resourceVersion"] = self._bump()
            self.objects[plural][key] = obj
            self._sorted[plural] = None
            self._index(plural, key, None, obj)
            self._record(plural, "ADDED", obj)
            return obj

    def put(self, plural: str, obj: Obj) -> Obj:
        """Replace a stored object with a changed copy; a spec change bumps metadata.generation."""
        with self.lock:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            old = self.objects[plural].get(key)
            if old is None:
                raise ApiError.not_found(BY_PLURAL[plural], meta["name"])
            if old.get("spec") != obj.get("spec") and "generation" in old["metadata"]:
                meta["generation"] = old["metadata"]["generation"] + 1
            meta["resourceVersion"] = self._bump()
            self.objects[plural][key] = obj
            if old["metadata"].get("ownerReferences") != meta.get("ownerReferences"):
                self._index(plural, key, old, obj)
            self._record(plural, "MODIFIED", obj)
            return obj

    def delete(self, plural: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.objects[plural].pop((namespace, name), None)
            if obj is not None:
                self._sorted[plural] = None
                self._json[plural].pop((namespace, name), None)
                self._index(plural, (namespace, name), obj, None)
                gone = copy(obj)
                gone["metadata"]["resourceVersion"] = self._bump()
                self._record(plural, "DELETED", gone)
            return obj

    def clear(self) -> None:
        with self.lock:
            for plural in self.objects:
                for (ns, name) in list(self.objects[plural]):
                    self.delete(plural, ns, name)

    def _record(self, plural: str, kind: str, obj: Obj) -> None:
        self.log.append((self.rv, plural, kind, obj))
        self.changed.notify_all()

    # --- lists -----------------------------------------------------------------------------
    def list(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> tuple[list[Obj], str, str, int | None]:
        """(items, resourceVersion, continue, remainingItemCount) as the API server answers a list."""
        items, rv, token, remaining = self._select(resource, namespace, label_selector, field_selector, limit, continue_token)
        return [obj for _, obj in items], rv, token, remaining

    def list_json(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> tuple[list[bytes], str, str, int | None]:
        """As `list`, with each item as the JSON bytes it was serialised to once."""
        items, rv, token, remaining = self._select(resource, namespace, label_selector, field_selector, limit, continue_token)
        cache = self._json[resource.plural]
        out = []
        for key, obj in items:
            cached = cache.get(key)
            if cached is None or cached[0] is not obj:
                cached = (obj, orjson.dumps(obj))
                cache[key] = cached
            out.append(cached[1])
        return out, rv, token, remaining

    def _select(self, resource: Resource, namespace: str | None, label_selector: str, field_selector: str, limit: int,
                continue_token: str) -> tuple[list[tuple[Key, Obj]], str, str, int | None]:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, resource)
        start: Key | None = None
        if continue_token:
            start = decode_continue(continue_token)
        with self.lock:
            rv = str(self.rv)
            table = self.objects[resource.plural]
            keys = self._sorted[resource.plural]
            if keys is None:
                keys = self._sorted[resource.plural] = sorted(table)
            # Keys sort by (namespace, name): a namespace and a continue token are both ranges.
            first = bisect.bisect_right(keys, start) if start is not None else 0
            end = len(keys)
            if namespace is not None:
                first = max(first, bisect.bisect_left(keys, (namespace, "")))
                end = bisect.bisect_left(keys, (namespace + "\x00", ""))
            selected: list[tuple[Key, Obj]] = []
            remaining = 0
            filtered = bool(labels or fields)
            i = first
            while i < end:
                key = keys[i]
                i += 1
                obj = table[key]
                if filtered and not matches(obj, labels, fields):
                    continue
                if limit and len(selected) >= limit:
                    if not filtered:
                        remaining = end - i + 1
                        break
                    remaining += 1
                    continue
                selected.append((key, obj))
        token = ""
        if limit and remaining:
            last = selected[-1][1]["metadata"]
            token = encode_continue((last.get("namespace", ""), last["name"]), rv)
        return selected, rv, token, (remaining if token else None)

    def events_since(self, rv: int) -> list[tuple[int, str, str, Obj]]:
        # Every write bumps the resourceVersion by one and logs one entry, so the log holds
        # consecutive versions: the entry after `rv` is at a computed index (no scan of 20,000).
        if not self.log or self.log[-1][0] <= rv:
            return []
        start = max(0, rv + 1 - self.log[0][0])
        return list(itertools.islice(self.log, start, None))

    def oldest_logged_rv(self) -> int:
        return self.log[0][0] if self.log else self.rv


# --- continue tokens --------------------------------------------------------------------------
def encode_continue(key: Key, rv: str) -> str:
    payload = orjson.dumps({"v": "sandbox/1", "rv": int(rv), "start": f"{key[0]}/{key[1]}"})
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_continue(token: str) -> Key:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        namespace, name = data["start"].split("/", 1)
        if data.get("v") != "sandbox/1":
            raise ValueError("version")
    except Exception:
        raise ApiError.bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)") from None
    return namespace, name


# --- selectors --------------------------------------------------------------------------------
_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_LABEL_NAME})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_LABEL_NAME})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_LABEL_NAME})\s*$")

LabelReq = tuple[str, str, tuple[str, ...]]  # (key, op, values); op in =, !=, in, notin, exists, !exists


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def parse_label_selector(selector: str) -> list[LabelReq]:
    requirements: list[LabelReq] = []
    for part in _split_requirements(selector or ""):
        if m := _SET_RE.match(part):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append((m.group(1), m.group(2), values))
        elif m := _EQ_RE.match(part):
            requirements.append((m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
        elif m := _EXISTS_RE.match(part):
            requirements.append((m.group(2), "!exists" if m.group(1) else "exists", ()))
        else:
            raise ApiError.bad_request(f"unable to parse requirement: found '{part.strip()}', expected: label selector")
    return requirements


FieldReq = tuple[str, bool, str]  # (path, equal?, value)


def parse_field_selector(selector: str, resource: Resource) -> list[FieldReq]:
    requirements: list[FieldReq] = []
    allowed = {"metadata.name", "metadata.namespace", *resource.fields}
    for part in (selector or "").split(","):
        if not part.strip():
            continue
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise ApiError.bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
        if m.group(1) not in allowed:
            raise ApiError.bad_request(
                f'field label not supported: {m.group(1)}', reason="BadRequest"
            )
        requirements.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return requirements


def field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            break
    if path == "involvedObject.namespace" and node is None:
        return ""
    if path == "source":
        return (obj.get("source") or {}).get("component", "")
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def matches(obj: Obj, labels: list[LabelReq], fields: list[FieldReq]) -> bool:
    if labels:
        have = obj["metadata"].get("labels") or {}
        for key, op, values in labels:
            present = key in have
            if op == "=" and have.get(key) != values[0]:
                return False
            if op == "!=" and present and have[key] == values[0]:
                return False
            if op == "in" and have.get(key) not in values:
                return False
            if op == "notin" and present and have[key] in values:
                return False
            if op == "exists" and not present:
                return False
            if op == "!exists" and present:
                return False
    for path, equal, value in fields:
        if (field_value(obj, path) == value) != equal:
            return False
    return True


def selector_to_string(selector: dict[str, Any]) -> str:
    """A LabelSelector object (matchLabels/matchExpressions) as selector text."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        op = expr["operator"]
        if op == "In":
            parts.append(f"{expr['key']} in ({','.join(expr.get('values', []))})")
        elif op == "NotIn":
            parts.append(f"{expr['key']} notin ({','.join(expr.get('values', []))})")
        elif op == "Exists":
            parts.append(expr["key"])
        elif op == "DoesNotExist":
            parts.append(f"!{expr['key']}")
    return ",".join(parts)


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if not selector:
        return False
    requirements = parse_label_selector(selector_to_string(selector))
    return matches({"metadata": {"labels": labels}}, requirements, [])
