"""`python manage.py eval [--cases DIR] [--llm] [--json]`: score the detectors and the RCA on the
evaluation corpus (tests/evals/cases). The text tables go first; with --json the last line is one
JSON object with the same numbers. Exits 1 when the thresholds are not met (--no-fail to only report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Score the detectors and the RCA on the evaluation corpus (per-class precision/recall, confusion, calibration)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cases", default=str(Path(settings.BASE_DIR) / "tests" / "evals" / "cases"),
                            help="directory of case files (default tests/evals/cases)")
        parser.add_argument("--llm", action="store_true",
                            help="score the LLM path (the model LLM_RCA_MODEL / LLM_DEFAULT_MODEL, at LLM_BASE_URL or its alias)")
        parser.add_argument("--json", action="store_true", help="print one JSON object with every number as the last line")
        parser.add_argument("--no-fail", action="store_true", help="exit 0 even when the thresholds are not met")
        parser.add_argument("--vocabulary", action="store_true",
                            help="print the failure-class table (Markdown, as the README holds it) and stop")

    def handle(self, *args: Any, **options: Any) -> None:
        from agents import llm
        from agents.rca.evaluation import CaseError, load_cases, render, score
        from agents.rca.vocabulary import vocabulary_markdown

        if options["vocabulary"]:
            self.stdout.write(vocabulary_markdown())
            return

        try:
            cases = load_cases(options["cases"])
        except CaseError as exc:
            raise CommandError(str(exc)) from None
        if options["llm"]:
            alias = settings.LLM_RCA_MODEL or settings.LLM_DEFAULT_MODEL
            if not llm.is_configured(alias):
                raise CommandError(f"--llm: no LLM is configured for {alias!r} (set LLM_API_KEY and LLM_BASE_URL, or a model alias)")
        result = score(cases, use_llm=options["llm"])
        self.stdout.write(render(result))
        if options["json"]:
            self.stdout.write(json.dumps({k: v for k, v in result.items() if k != "rows"}, separators=(",", ":")))
        if result["failures"] and not options["no_fail"]:
            raise CommandError("thresholds not met: " + "; ".join(result["failures"]), returncode=1)
