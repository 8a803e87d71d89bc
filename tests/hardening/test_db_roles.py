"""Finding 6 of #13: the app does not connect to PostgreSQL as a superuser.

Before: `TRUNCATE agents_auditentry` and `ALTER TABLE ... DISABLE TRIGGER ALL` both succeeded from
the app's connection, so the append-only audit log was append-only by courtesy. Now the apps run
as `aiops_app` (row access only; the audit log insert-only), migrations as `aiops_owner`, and
statement triggers refuse TRUNCATE/UPDATE/DELETE of the audit log even to the owner.

The suite itself runs as the superuser (pytest-django creates and flushes its database), so each
check here becomes the role it checks (`SET ROLE`) inside a transaction that is rolled back.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction

from aiops_site import embedded
from tests.conftest import ROOT, worker_env

pytestmark = pytest.mark.django_db


class _RolledBack(Exception):
    pass


@contextmanager
def as_role(role: str) -> Iterator[object]:
    """A cursor acting as `role`; everything it did is rolled back afterwards."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f'SET LOCAL ROLE "{role}"')
            yield cursor
            raise _RolledBack
    except _RolledBack:
        pass


def refused(role: str, statement: str, setup: str = "") -> str:
    """The error PostgreSQL gives `role` for `statement` (the test fails if it is allowed)."""
    with transaction.atomic(), connection.cursor() as cursor:
        if setup:
            cursor.execute(setup)
        cursor.execute(f'SET LOCAL ROLE "{role}"')
        try:
            with transaction.atomic():
                cursor.execute(statement)
        except DatabaseError as exc:
            message = str(exc)
        else:
            message = ""
        cursor.execute("RESET ROLE")
        transaction.set_rollback(True)
    assert message, f"{role} was allowed: {statement}"
    return message


def _insert_audit(cursor: object) -> None:
    cursor.execute(  # type: ignore[attr-defined]
        "INSERT INTO agents_auditentry (created_at, actor, action, tool, server, risk, arguments, reason, outcome, "
        "detail, idempotency_key, effect) VALUES (now(), 'test', 'tool_call', 't', 's', 'LOW', '{}', '', 'ok', '', '', '')")


def test_the_app_role_cannot_truncate_alter_or_rewrite_the_audit_log() -> None:
    app = embedded.APP_ROLE
    assert "permission denied" in refused(app, "TRUNCATE agents_auditentry")
    assert "must be owner" in refused(app, "ALTER TABLE agents_auditentry DISABLE TRIGGER ALL")
    assert "permission denied" in refused(app, "UPDATE agents_auditentry SET outcome = 'ok'")
    assert "permission denied" in refused(app, "DELETE FROM agents_auditentry")
    assert "permission denied" in refused(app, "TRUNCATE playbooks_incident")  # no TRUNCATE anywhere
    assert "permission denied" in refused(app, "CREATE TABLE public.intruder (id int)")
    assert "must be owner" in refused(app, "DROP TABLE playbooks_incident")
    assert "permission denied" in refused(app, "CREATE ROLE intruder")


def test_the_app_role_reads_and_writes_rows_and_appends_to_the_audit_log() -> None:
    with as_role(embedded.APP_ROLE) as cursor:
        _insert_audit(cursor)
        cursor.execute("SELECT count(*) FROM agents_auditentry")  # type: ignore[attr-defined]
        assert cursor.fetchone()[0] >= 1  # type: ignore[attr-defined]
        cursor.execute("INSERT INTO auth_group (name) VALUES ('roles-test')")  # type: ignore[attr-defined]
        cursor.execute("UPDATE auth_group SET name = 'roles-test-2' WHERE name = 'roles-test'")  # type: ignore[attr-defined]
        cursor.execute("DELETE FROM auth_group WHERE name = 'roles-test-2'")  # type: ignore[attr-defined]
        cursor.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")  # type: ignore[attr-defined]
        assert cursor.fetchone() == (embedded.APP_ROLE, False)  # type: ignore[attr-defined]


def test_even_the_owner_cannot_truncate_or_rewrite_the_audit_log() -> None:
    # In this test database the superuser owns the tables; hand the audit table to the owner role
    # for the length of the (rolled back) transaction, as in a `make run` database.
    # (and the tables that reference it, which a TRUNCATE ... CASCADE empties too).
    give = (f"DO $$ DECLARE t regclass; BEGIN FOR t IN SELECT 'agents_auditentry'::regclass UNION "  # noqa: S608
            f"SELECT conrelid::regclass FROM pg_constraint WHERE confrelid = 'agents_auditentry'::regclass LOOP "
            f"EXECUTE format('ALTER TABLE %s OWNER TO %I', t, '{embedded.OWNER_ROLE}'); END LOOP; END $$")
    assert "append-only: TRUNCATE is refused" in refused(embedded.OWNER_ROLE, "TRUNCATE agents_auditentry CASCADE", give)
    assert "append-only: UPDATE is refused" in refused(embedded.OWNER_ROLE, "UPDATE agents_auditentry SET outcome = 'x'", give)
    assert "append-only: DELETE is refused" in refused(embedded.OWNER_ROLE, "DELETE FROM agents_auditentry", give)


def test_the_apps_connect_as_the_app_role_unless_told_otherwise() -> None:
    script = "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default']['USER'])"
    env = {k: v for k, v in worker_env({"DJANGO_SETTINGS_MODULE": "aiops_site.settings"}).items()
           if k not in ("DATABASE_URL", "AIOPS_DB_USER")}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == embedded.APP_ROLE, out.stderr[-2000:]


@pytest.mark.integration
def test_a_data_directory_from_before_the_roles_is_brought_up_to_date() -> None:
    """`make run` on an older `.run/`: everything there is the superuser's. Starting again makes the
    owner own it and grants the app role its rows, idempotently."""
    import psycopg

    tmp = Path(tempfile.mkdtemp(prefix="aiops-roles-"))
    tmp.chmod(0o755)  # as root, PostgreSQL runs as another user that must reach it
    server = embedded.start_postgres(tmp / "run")
    try:
        socket = str(embedded.pg_socket_dir(tmp / "run"))
        with psycopg.connect(host=socket, user=embedded.PG_USER, dbname=embedded.DB_NAME, autocommit=True) as conn:
            conn.execute("CREATE TABLE old_rows (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text)")
            conn.execute("ALTER DATABASE aiops OWNER TO postgres")  # as an older version left it
        embedded.ensure_database(embedded.pg_socket_dir(tmp / "run"))
        embedded.ensure_database(embedded.pg_socket_dir(tmp / "run"))  # idempotent
        with psycopg.connect(host=socket, user=embedded.APP_ROLE, dbname=embedded.DB_NAME, autocommit=True) as conn:
            conn.execute("INSERT INTO old_rows (v) VALUES ('kept')")
            assert conn.execute("SELECT v FROM old_rows").fetchall() == [("kept",)]
            owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'old_rows'").fetchone()
            assert owner == (embedded.OWNER_ROLE,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("TRUNCATE old_rows")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

