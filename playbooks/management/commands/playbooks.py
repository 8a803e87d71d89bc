"""`python manage.py playbooks export [-o FILE]` and `playbooks import FILE [--prune] [--check]`."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from playbooks.yaml_io import ImportFailed, export_yaml, import_yaml


class Command(BaseCommand):
    help = "Export or import rules and playbooks as YAML (GitOps). Import is all or nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="Write every rule and playbook as YAML.")
        export.add_argument("-o", "--output", help="File to write (default: standard output).")
        load = sub.add_parser("import", help="Validate a YAML file and apply it in one transaction.")
        load.add_argument("file", help="YAML file, or - for standard input.")
        load.add_argument("--prune", action="store_true", help="Also delete rules and playbooks the file does not name.")
        load.add_argument("--check", action="store_true", help="Validate and report what would change; write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "export":
            text = export_yaml()
            if options.get("output"):
                Path(options["output"]).write_text(text)
                self.stderr.write(f"wrote {options['output']}")
            else:
                self.stdout.write(text, ending="")
            return
        path = options["file"]
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        actor = f"cli:{getpass.getuser()}"
        try:
            changes = import_yaml(text, actor=actor, prune=options["prune"], dry_run=options["check"])
        except ImportFailed as exc:
            for error in exc.errors:
                self.stderr.write(f"{path}: {error}")
            raise CommandError(f"{path}: {len(exc.errors)} problem(s); nothing was imported") from None
        prefix = "would be " if options["check"] else ""
        for what in ("created", "updated", "deleted"):
            for item in changes[what]:
                self.stdout.write(f"{prefix}{what}: {item}")
        self.stdout.write(
            f"{'check' if options['check'] else 'imported'}: {len(changes['created'])} created, "
            f"{len(changes['updated'])} updated, {len(changes['deleted'])} deleted, "
            f"{len(changes['unchanged'])} unchanged"
        )
