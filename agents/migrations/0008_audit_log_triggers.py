"""The audit log refuses TRUNCATE, UPDATE and DELETE to everyone but a superuser.

The app role has no such privileges at all (agents/db_roles.py); these statement-level triggers
hold against the table's owner too, who has every privilege on it. A superuser -- who could drop
any trigger anyway -- is let through, so Django's test flush (TRUNCATE of every table) works.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION agents_audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit log (%) is append-only: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""

TRIGGERS = """
CREATE TRIGGER agents_auditentry_no_truncate BEFORE TRUNCATE ON agents_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION agents_audit_log_is_append_only();
CREATE TRIGGER agents_auditentry_no_change BEFORE UPDATE OR DELETE ON agents_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION agents_audit_log_is_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS agents_auditentry_no_change ON agents_auditentry;
DROP TRIGGER IF EXISTS agents_auditentry_no_truncate ON agents_auditentry;
DROP FUNCTION IF EXISTS agents_audit_log_is_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("agents", "0007_audit_incident_actions")]

    operations = [migrations.RunSQL(FUNCTION + TRIGGERS, reverse_sql=DROP)]
