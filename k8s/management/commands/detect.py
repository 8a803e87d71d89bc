"""``manage.py detect FILE.json``: run the detectors offline on a cluster dump.

The dump is what ``kubectl get pods,nodes,deployments,replicasets,hpa,jobs -A -o json`` prints
(a ``List`` with ``items``); a single list of one kind (``PodList``...) works too. One JSON line
per finding goes to stdout, so the output pipes into ``jq``. For triage of a cluster the agent
cannot reach.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from k8s.detectors import detect, split_list


class Command(BaseCommand):
    help = "Run the detectors on a `kubectl get pods,nodes,deployments,replicasets,hpa,jobs -A -o json` dump."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path of the JSON dump, or - for stdin.")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        try:
            raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"{path} is not JSON: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("items"), list):
            raise CommandError(
                f"{path} is not a Kubernetes List: expected an object with an 'items' array "
                "(kubectl get pods,nodes,deployments,replicasets,hpa,jobs -A -o json)"
            )
        items = document["items"]
        list_kind = str(document.get("kind") or "")
        # A single-kind list (PodList) leaves `kind` out of its items; fill it from the list.
        if list_kind.endswith("List") and list_kind != "List":
            items = [dict(item, kind=item.get("kind") or list_kind[: -len("List")]) for item in items if isinstance(item, dict)]
        bad = [index for index, item in enumerate(items) if not isinstance(item, dict)]
        if bad:
            raise CommandError(f"{path}: items[{bad[0]}] is not an object")
        buckets = split_list(items)
        if not any(buckets.values()):
            raise CommandError(f"{path} holds no pods, nodes, deployments, replicasets, HPAs or jobs")
        findings = detect(**buckets)
        out = self.stdout
        for finding in findings:
            row = {
                "type": finding.type,
                "severity": finding.severity,
                "kind": finding.kind,
                "namespace": finding.namespace,
                "name": finding.name,
                "owner": finding.workload_key(),
                "message": finding.message,
                "evidence": finding.evidence,
            }
            out.write(orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode())
        counts = {key: len(value) for key, value in buckets.items()}
        self.stderr.write(f"{len(findings)} findings in {sum(counts.values())} objects ({', '.join(f'{v} {k}' for k, v in counts.items())})")
