"""Write `schema.json`: the protobuf field numbers of the kinds the sandbox reads as protobuf.

Run from a checkout of k8s.io/api and k8s.io/apimachinery (facts, not code, are taken from
their `generated.proto` and `types.go`): python -m k8s.sandbox.proto.generate API_DIR APIMACHINERY_DIR

Each message maps a field number to [json name, "one"|"repeated"|"map", type, pointer]: a
pointer field's zero value is kept (`replicas: 0`), a plain one's is dropped as Go's JSON does.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOTS = ("k8s.io.api.core.v1.Namespace", "k8s.io.api.apps.v1.Deployment", "k8s.io.api.core.v1.ConfigMap", "k8s.io.api.core.v1.Secret",
         "k8s.io.api.authorization.v1.SelfSubjectAccessReview", "k8s.io.api.authorization.v1.SubjectAccessReview")
FILES = {"k8s.io.api.core.v1": "core/v1", "k8s.io.api.apps.v1": "apps/v1", "k8s.io.api.authorization.v1": "authorization/v1",
         "k8s.io.apimachinery.pkg.apis.meta.v1": "pkg/apis/meta/v1", "k8s.io.apimachinery.pkg.util.intstr": "pkg/util/intstr",
         "k8s.io.apimachinery.pkg.api.resource": "pkg/api/resource", "k8s.io.apimachinery.pkg.runtime": "pkg/runtime"}
FIELD = re.compile(r"^\s*(optional|repeated)?\s*(map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;")
GO_FIELD = re.compile(r'^\s*\w+\s+(\*?)(\[\])?[\w.\[\]*]+\s+`json:"(\w+)')


def main(api: Path, machinery: Path) -> None:
    messages: dict[str, dict[str, list[object]]] = {}
    pointers: dict[str, set[str]] = {}
    for package, rel in FILES.items():
        base = (api if package.startswith("k8s.io.api.") else machinery) / rel
        current = None
        for line in (base / "generated.proto").read_text().splitlines():
            if m := re.match(r"^message (\w+) \{", line):
                current = f"{package}.{m[1]}"
                messages[current] = {}
            elif line.startswith("}"):
                current = None
            elif current and (m := FIELD.match(line)):
                label, typ, key_t, val_t, name, number = m.groups()
                kind = "map" if key_t else ("repeated" if label == "repeated" else "one")
                messages[current][number] = [name, kind, _qualify(val_t or typ, package), False]
        for go in sorted(base.glob("types*.go")):
            struct = None
            for line in go.read_text().splitlines():
                if m := re.match(r"^type (\w+) struct \{", line):
                    struct = f"{package}.{m[1]}"
                elif line.startswith("}"):
                    struct = None
                elif struct and (m := GO_FIELD.match(line)) and m[1]:
                    pointers.setdefault(struct, set()).add(m[3])
    wanted: dict[str, dict[str, list[object]]] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in wanted or name not in messages:
            continue
        wanted[name] = messages[name]
        for field in messages[name].values():
            field[3] = field[0] in pointers.get(name, ())
            if "." in str(field[2]):
                todo.append(str(field[2]))
    out = Path(__file__).with_name("schema.json")
    out.write_text(json.dumps({k: wanted[k] for k in sorted(wanted)}, indent=0, sort_keys=True) + "\n")
    print(f"{len(wanted)} messages -> {out}")


def _qualify(typ: str, package: str) -> str:
    if typ.startswith("."):
        return typ[1:]
    if typ in ("string", "bool", "bytes", "int32", "int64", "uint32", "uint64", "double", "float", "sint32", "sint64"):
        return typ
    return f"{package}.{typ}"


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
