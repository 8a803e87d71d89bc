"""The app role's privileges in PostgreSQL, granted after every `migrate` (and by the embedded
setup for a data directory from before the roles).

Two roles (README, "PostgreSQL roles"): the owner owns the schema and runs the migrations; the
app role -- web, workers, beat, Flower -- reads and writes rows and nothing else. It may not
create, alter or drop anything, nor TRUNCATE any table, and the audit log is insert-only to it:
no UPDATE, no DELETE. (The owner is refused TRUNCATE, UPDATE and DELETE of the audit log by the
triggers of migration agents 0008; only a superuser, who could drop any trigger, is let through.)

`AIOPS_DB_APP_ROLE` names the app role (`aiops_app` in the embedded setup; empty = grant
nothing, for a database where one role does everything). Pure SQL text: the embedded setup calls
it before Django is configured.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_ROLE = re.compile(r"[a-z_][a-z0-9_$]{0,62}")
# Insert-only to the app role: the append-only logs.
APPEND_ONLY_TABLES = ("agents_auditentry",)


def _identifier(name: str) -> str:
    if not _ROLE.fullmatch(name):
        raise ValueError(f"{name!r} is not a PostgreSQL role name we use (lowercase letters, digits, _ and $)")
    return f'"{name}"'


def grant_app_role(execute: Callable[[str], Any], role: str) -> None:
    """Grant `role` row access to every table and sequence in the public schema, minus the
    append-only tables' UPDATE and DELETE; idempotent. One statement string, so one transaction:
    the apps never see the privileges half changed."""
    who = _identifier(role)
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {who}",
        f"REVOKE CREATE ON SCHEMA public FROM {who}",
        # Never a REVOKE ALL first: this runs while the apps serve (a migration during a rolling
        # deploy, a restart of `make run`), and a moment without SELECT would fail their requests.
        f"REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {who}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {who}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {who}",
    ]
    for table in APPEND_ONLY_TABLES:
        statements.append(f"DO $$ BEGIN IF to_regclass('public.{table}') IS NOT NULL THEN "
                          f"REVOKE UPDATE, DELETE, TRUNCATE ON public.{table} FROM {who}; END IF; END $$")
    execute(";\n".join(statements))


def grant_after_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """post_migrate receiver (connected by AgentsConfig.ready for this app only: once per migrate)."""
    from django.conf import settings
    from django.db import connections

    role = settings.AIOPS_DB_APP_ROLE
    if not role:
        return
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cursor.fetchone() is None:
            raise RuntimeError(f"AIOPS_DB_APP_ROLE={role!r}: no such role in this PostgreSQL (create it, or set "
                               "AIOPS_DB_APP_ROLE= empty to run everything as one role)")
        grant_app_role(cursor.execute, role)
