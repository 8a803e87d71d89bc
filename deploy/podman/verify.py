"""deploy/verify-image.sh's helpers, run with this checkout's Python on the host.

    verify.py free-port
    verify.py http URL [--method M] [--auth USER:PASS] [--host HOST] --expect STATUS
    verify.py db-create ADMIN_URL NAME OWNER APP      (prints the owner's and the app role's URLs)
    verify.py db-drop ADMIN_URL NAME [ROLE...]
    verify.py redis-pick HOST:PORT                   verify.py redis-flush HOST:PORT DB
    verify.py json-list                              (lines on stdin -> a JSON list)
    verify.py playbook-prepare | playbook --kubeconfig PATH   (Django: DATABASE_URL etc. set)

`playbook-prepare` (after the migrate role): the demo's own faults are cleared and only the
crash-loop rule stays enabled, so the one fault the playbook step injects is the only thing the
containers act on; an approver is created. `playbook`: a crash loop on one pod of shop/cart
becomes an incident (the watcher's stream or beat's poll, in containers), its run asks for approval of
restart_pod, the approval is decided through decide_approval, the restart lands on the sandbox
(the audit entry, the fault cleared by the pod's deletion), and the incident resolves.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLAIM_KEY = "aiops-verify-image:claim"
# A Go panic (the process itself fails): crash_loop_remediation restarts it. checkout's log shows a
# database refusing connections, which the playbook hands off instead of restarting.
FAULT_TARGET = "shop/cart"
APPROVER = "verify-approver"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, method: str = "GET", auth: str | None = None, host: str | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)  # noqa: S310
    request.add_header("Host", host or "localhost")
    if method == "POST":
        request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310  (loopback URLs of our own)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def db_url(admin_url: str, name: str, user: str | None = None, password: str | None = None) -> str:
    """The admin URL pointed at database `name`, as `user` (with `password`) when given."""
    parts = urllib.parse.urlsplit(admin_url)
    netloc = parts.netloc
    if user:
        host = parts.hostname or "127.0.0.1"
        netloc = f"{user}:{urllib.parse.quote(password or '', safe='')}@{host}:{parts.port or 5432}"
    return urllib.parse.urlunsplit(("postgres", netloc, f"/{name}", parts.query, ""))


def db_create(admin_url: str, name: str, owner: str, app: str) -> tuple[str, str, list[str]]:
    """The deployment's two roles (README "PostgreSQL roles") and a database the owner owns:
    returns the owner's URL, the app role's URL and the roles this call created (to drop after).
    Existing roles of those names are kept and given a new password."""
    from psycopg import sql

    created = []
    urls = []
    with _admin(admin_url) as conn:
        for role in (owner, app):
            password = secrets.token_urlsafe(24)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
            if not exists:
                created.append(role)
            urls.append(db_url(admin_url, name, role, password))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
    return urls[0], urls[1], created


def db_drop(admin_url: str, name: str, roles: list[str] | tuple[str, ...] = ()) -> None:
    from psycopg import sql

    with _admin(admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    print(f"dropped database {name}{' and roles ' + ', '.join(roles) if roles else ''}", file=sys.stderr)


def _redis(addr: str, db: int) -> Any:
    import redis

    host, _, port = addr.rpartition(":")
    return redis.Redis(host=host, port=int(port), db=db, socket_timeout=10)


def redis_pick(addr: str) -> int:
    """The highest-numbered empty database, claimed with a marker key (SET NX)."""
    databases = int(_redis(addr, 0).config_get("databases").get("databases", 16))
    for db in range(databases - 1, 0, -1):
        client = _redis(addr, db)
        if client.dbsize() == 0 and client.set(CLAIM_KEY, str(os.getpid()), nx=True):
            return db
    raise SystemExit(f"every database of the Redis at {addr} holds keys; none is free for the check")


def redis_flush(addr: str, db: int) -> None:
    _redis(addr, db).flushdb()
    print(f"flushed Redis database {db}", file=sys.stderr)


# --- the playbook --------------------------------------------------------------------------------


def _django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    import django

    django.setup()


def _sandbox(kubeconfig: Path) -> Any:
    from k8s.management.commands.sandbox import AdminClient

    return AdminClient(kubeconfig)


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise SystemExit(f"playbook: timed out after {timeout:.0f}s waiting for {what}")


def playbook_prepare(kubeconfig: Path) -> None:
    _django()
    from django.conf import settings
    from django.contrib.auth.models import Group, User

    from playbooks.models import Rule

    sandbox = _sandbox(kubeconfig)
    for fault in sandbox.call("GET", "faults")["faults"]:
        sandbox.call("POST", "faults/clear", {"target": fault["target"]})
    kept = Rule.objects.filter(playbook__name="crash_loop_remediation", enabled=True).count()
    if kept != 1:
        raise SystemExit(f"playbook: expected the seeded crash_loop rule, found {kept} enabled")
    Rule.objects.exclude(playbook__name="crash_loop_remediation").update(enabled=False)
    group, _ = Group.objects.get_or_create(name=settings.AIOPS_APPROVER_GROUP)
    user, _ = User.objects.get_or_create(username=APPROVER)
    user.groups.add(group)
    print("playbook: demo faults cleared, only the crash_loop rule enabled, approver ready", file=sys.stderr)


def playbook(kubeconfig: Path) -> None:
    _django()
    from django.contrib.auth.models import User

    from agents.approvals import decide_approval
    from agents.models import AuditEntry
    from playbooks.models import Incident, PlaybookRun, StepRun

    started = time.monotonic()
    sandbox = _sandbox(kubeconfig)
    namespace, name = FAULT_TARGET.split("/")
    sandbox.call("POST", "faults", {"type": "crash_loop", "target": FAULT_TARGET, "options": {"pods": 1}})
    print(f"playbook: injected crash_loop on one pod of {FAULT_TARGET}", file=sys.stderr)

    incident = _wait("the incident (from the watcher's stream or beat's 5 s poll)", lambda: Incident.objects.filter(
        namespace=namespace, workload_name=name, primary_type="crash_loop").first(), 120)
    print(f"playbook: incident {incident.pk} opened: {incident.title}", file=sys.stderr)
    run = _wait("the crash_loop_remediation run", lambda: PlaybookRun.objects.filter(incident=incident).first(), 60)

    def waiting() -> StepRun | None:
        run.refresh_from_db()
        if run.state == "finished":
            raise SystemExit(f"playbook: the run finished before asking for approval: {run.outcome} {run.summary}")
        return StepRun.objects.filter(run=run, state="waiting_approval").select_related("approval").first()

    step = _wait("the run to ask for approval", waiting, 180)
    approval = step.approval
    if approval.tool != "restart_pod":
        raise SystemExit(f"playbook: the run asked to approve {approval.tool}, not restart_pod")
    pod = approval.arguments.get("pod") or approval.arguments.get("name")
    print(f"playbook: approval {approval.code} asks for restart_pod {approval.arguments}", file=sys.stderr)
    decide_approval(approval.pk, User.objects.get(username=APPROVER), "approve", "verify-image: restart it")

    def finished() -> bool:
        run.refresh_from_db()
        return run.state == "finished"

    _wait("the run to finish", finished, 180)
    incident.refresh_from_db()
    if run.outcome != "resolved" or incident.state != Incident.State.RESOLVED:
        raise SystemExit(f"playbook: run outcome {run.outcome} ({run.summary}), incident {incident.state}")
    landed = AuditEntry.objects.filter(action="tool_call", tool="restart_pod", outcome="ok", approval=approval).count()
    if landed != 1:
        raise SystemExit(f"playbook: {landed} audited restart_pod calls for the approval, not exactly 1")
    cleared = [f for f in sandbox.call("GET", "faults")["cleared"] if f["target"].startswith(FAULT_TARGET)]
    if not cleared:
        raise SystemExit("playbook: the sandbox does not report the crash loop cleared")
    print(f"playbook: restart_pod {pod} landed ({cleared[-1]['cleared_by']}); run {run.outcome}, "
          f"incident {incident.pk} {incident.state} in {time.monotonic() - started:.0f}s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verify.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("free-port")
    http = sub.add_parser("http")
    http.add_argument("url")
    http.add_argument("--method", default="GET")
    http.add_argument("--auth")
    http.add_argument("--host")
    http.add_argument("--expect", type=int, required=True)
    create = sub.add_parser("db-create")
    drop = sub.add_parser("db-drop")
    for db in (create, drop):
        db.add_argument("admin_url")
        db.add_argument("name")
    create.add_argument("owner")
    create.add_argument("app")
    drop.add_argument("roles", nargs="*")
    sub.add_parser("redis-pick").add_argument("addr")
    flush = sub.add_parser("redis-flush")
    flush.add_argument("addr")
    flush.add_argument("db", type=int)
    sub.add_parser("json-list")
    for command in ("playbook-prepare", "playbook"):
        sub.add_parser(command).add_argument("--kubeconfig", type=Path, required=True)
    options = parser.parse_args(argv)

    if options.command == "free-port":
        print(free_port())
    elif options.command == "http":
        try:
            status = http_status(options.url, options.method, options.auth, options.host)
        except OSError as exc:
            print(f"{options.url}: {exc}", file=sys.stderr)
            return 1
        if status != options.expect:
            print(f"{options.method} {options.url}: {status}, expected {options.expect}", file=sys.stderr)
            return 1
    elif options.command == "db-create":
        owner_url, app_url, _ = db_create(options.admin_url, options.name, options.owner, options.app)
        print(owner_url)
        print(app_url)
    elif options.command == "db-drop":
        db_drop(options.admin_url, options.name, options.roles)
    elif options.command == "redis-pick":
        print(redis_pick(options.addr))
    elif options.command == "redis-flush":
        redis_flush(options.addr, options.db)
    elif options.command == "json-list":
        print(json.dumps([line.strip() for line in sys.stdin if line.strip()]))
    elif options.command == "playbook-prepare":
        playbook_prepare(options.kubeconfig)
    elif options.command == "playbook":
        playbook(options.kubeconfig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
