"""`python manage.py rca FILE.json`: the RCA report for a bundle file (offline RCA evaluation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Print the root-cause report for a context bundle (JSON file, or - for stdin)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="bundle JSON file (pod, events, logs, previous_logs, node, ...), an evaluation case file, or -")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--llm", dest="use_llm", action="store_const", const=True, default=None,
                          help="ask the LLM (falls back to the deterministic report when it fails)")
        mode.add_argument("--no-llm", dest="use_llm", action="store_const", const=False,
                          help="deterministic report only, even with an LLM configured")
        parser.add_argument("--model", help="model alias for the LLM report (default LLM_RCA_MODEL / LLM_DEFAULT_MODEL)")
        parser.add_argument("--compact", action="store_true", help="one line of JSON instead of indented")

    def handle(self, *args: Any, **options: Any) -> None:
        import sys

        from agents.rca import BundleError, analyze

        source = options["file"]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except FileNotFoundError:
            raise CommandError(f"{source}: no such file") from None
        except OSError as exc:
            raise CommandError(f"{source}: cannot read it ({exc.strerror})") from None
        try:
            bundle = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{source}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        if isinstance(bundle, dict) and isinstance(bundle.get("bundle"), dict) and "expected" in bundle:
            bundle = bundle["bundle"]  # an evaluation case (tests/evals/cases): its bundle
        try:
            report = analyze(bundle, use_llm=options["use_llm"], model=options["model"])
        except BundleError as exc:
            raise CommandError(f"{source}: bad bundle: {exc}") from None
        self.stdout.write(json.dumps(report, indent=None if options["compact"] else 2, default=str))
