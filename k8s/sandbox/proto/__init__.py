"""Read Kubernetes protobuf request bodies (what kubectl's typed clients send) as the JSON objects they encode.

The envelope is `k8s\\x00` and a `runtime.Unknown` holding the kind and the object's bytes. Only
the kinds in `schema.json` are read (see generate.py); any other kind, a field the schema does
not know, or a malformed body raises `Unreadable`, which the API answers 415 so nothing is misread.
"""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
SCHEMA: dict[str, dict[str, list[Any]]] = json.loads(Path(__file__).with_name("schema.json").read_text())
KINDS = {name.rsplit(".", 1)[1]: name for name in SCHEMA
         if name.endswith(("v1.Namespace", "v1.Deployment", "v1.ConfigMap", "v1.Secret", "v1.SelfSubjectAccessReview",
                           "v1.SubjectAccessReview"))}
TIME = ("k8s.io.apimachinery.pkg.apis.meta.v1.Time", "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime")
INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
RAW = "k8s.io.apimachinery.pkg.runtime.RawExtension"
DURATION = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration"
INTS = ("int32", "int64", "uint32", "uint64")


class Unreadable(ValueError):
    """A body the sandbox cannot read as protobuf."""


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object a Kubernetes protobuf body encodes, with its `apiVersion` and `kind`."""
    if not body.startswith(MAGIC):
        raise Unreadable("the body does not start with the Kubernetes protobuf prefix")
    unknown = _fields(body[len(MAGIC):])
    type_meta = _fields(_one(unknown, 1, b""))
    api_version, kind = _one(type_meta, 1, b"").decode(), _one(type_meta, 2, b"").decode()
    if _one(unknown, 3, b""):
        raise Unreadable("an encoded (compressed) protobuf body")
    message = KINDS.get(kind)
    if message is None:
        raise Unreadable(f"protobuf for kind {kind or '(none)'}")
    return {"kind": kind, "apiVersion": api_version, **_message(message, _one(unknown, 2, b""))}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise Unreadable("a truncated varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) in order: an int for varints and fixed, bytes for length-delimited."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise Unreadable("a truncated field")
            value, i = data[i:i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if i + width > len(data):
                raise Unreadable("a truncated field")
            value, i = int.from_bytes(data[i:i + width], "little"), i + width
        else:
            raise Unreadable(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def _one(fields: list[tuple[int, int, Any]], number: int, default: Any) -> Any:
    return next((value for n, _, value in reversed(fields) if n == number), default)


def _message(name: str, data: bytes) -> Any:
    if name in TIME:
        fields = _fields(data)
        seconds, nanos = _signed(_one(fields, 1, 0), 64), _one(fields, 2, 0)
        if not seconds and not nanos:
            return None
        stamp = datetime.fromtimestamp(seconds, UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ") if name == TIME[0] else stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos // 1000:06d}Z"
    if name == INT_OR_STRING:
        fields = _fields(data)
        return _one(fields, 3, b"").decode() if _one(fields, 1, 0) == 1 else _signed(_one(fields, 2, 0), 32)
    if name == QUANTITY:
        return _one(_fields(data), 1, b"").decode()
    if name == RAW:
        raw = _one(_fields(data), 1, b"")
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise Unreadable("a raw extension that is not JSON") from None
    if name == DURATION:
        raise Unreadable("a duration field")
    schema = SCHEMA.get(name)
    if schema is None:
        raise Unreadable(f"protobuf message {name}")
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        field = schema.get(str(number))
        if field is None:
            raise Unreadable(f"field {number} of {name.rsplit('.', 1)[1]}")
        json_name, kind, typ, pointer = field
        if kind == "map":
            entry = _fields(_bytes(value, wire))
            key = _one(entry, 1, b"").decode()
            out.setdefault(json_name, {})[key] = _value(typ, _one(entry, 2, b"" if typ not in INTS + ("bool",) else 0), 2 if typ not in INTS + ("bool",) else 0)
        elif kind == "repeated":
            if typ in INTS and wire == 2:  # packed
                packed, i = value, 0
                while i < len(packed):
                    item, i = _varint(packed, i)
                    out.setdefault(json_name, []).append(_value(typ, item, 0))
            else:
                out.setdefault(json_name, []).append(_value(typ, value, wire))
        else:
            decoded = _value(typ, value, wire)
            if pointer or decoded not in ("", 0, False) or isinstance(decoded, dict):
                out[json_name] = decoded
    return out


def _bytes(value: Any, wire: int) -> bytes:
    if wire != 2:
        raise Unreadable("a scalar where a message belongs")
    return value


def _value(typ: str, value: Any, wire: int) -> Any:
    if typ == "string":
        try:
            return _bytes(value, wire).decode()
        except UnicodeDecodeError:
            raise Unreadable("a string that is not UTF-8") from None
    if typ == "bytes":
        return base64.b64encode(_bytes(value, wire)).decode()
    if typ == "bool":
        return bool(value)
    if typ in INTS:
        if wire != 0:
            raise Unreadable("a length where an integer belongs")
        return _signed(value, 32 if typ == "int32" else 64) if typ.startswith("int") else value
    if typ == "double":
        return struct.unpack("<d", value.to_bytes(8, "little"))[0]
    if typ == "float":
        return struct.unpack("<f", value.to_bytes(4, "little"))[0]
    return _message(typ, _bytes(value, wire))


def _signed(value: int, bits: int) -> int:
    value &= (1 << 64) - 1  # negative int32s are sign-extended to 64 bits on the wire
    return value - (1 << 64) if value >= 1 << 63 else value
