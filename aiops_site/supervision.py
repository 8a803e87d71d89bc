"""Supervision for `make run`: supervisord (the `supervisor` package) runs every process.

The embedded PostgreSQL and Redis, and the Procfile's processes (web, worker, beat, Flower, the
MCP server, the sandbox), are supervisord programs: one that dies is started again at once, then
with supervisord's back-off (1 s, 2 s, 3 s, ...) while it keeps failing to stay up, and each exit
and restart is a line in supervisord's log (the launcher's output). Stopping goes by priority:
the apps (one group, stopped together) first, then Redis, then PostgreSQL last, so nothing
loses its database mid-write.

`web` runs as two gunicorn instances (`web_0`, `web_1`) whose workers share the port
(SO_REUSEPORT, aiops_site/gunicorn_run.py): a `kill -9` of either master takes its workers with
it while the other instance goes on answering, so `/ready` stays 200 while supervisord starts the
killed one again -- which, on a loaded two-core machine, takes longer than the 10 s the issue
allows (Django's import alone is ~1.6 s of CPU).

Each program runs through `exec_supervised.py`, which sets the kernel's parent-death signal and
then execs the real command -- the Procfile line through /bin/sh with the environment the
launcher prepared (`env.json`), or the embedded server's own binary -- so a supervisord killed
with SIGKILL takes its programs with it and the launcher can start a fresh one without finding
the data directory in use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
APPS_PRIORITY = 900
# Seconds a program gets between its stop signal and SIGKILL. The apps stop together, then Redis,
# then PostgreSQL: the sum stays under the 10 s a Ctrl-C may take.
APP_STOP_WAIT = 4
DB_STOP_WAIT = 2
# Instances of a program, each restarted on its own: two of `web`, so one always answers.
INSTANCES = {"web": 2}


def directory(run_dir: Path) -> Path:
    return run_dir / "supervisor"


def config_path(run_dir: Path) -> Path:
    return directory(run_dir) / "supervisord.conf"


def env_path(run_dir: Path) -> Path:
    return directory(run_dir) / "env.json"


def socket_path(run_dir: Path) -> Path:
    """supervisorctl's unix socket: under the run directory unless that path is too long."""
    preferred = directory(run_dir) / "supervisor.sock"
    if len(str(preferred)) < 100:
        return preferred
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"aiops-supervisor-{digest}.sock"  # noqa: S108  (short, stable, ours)


def procfile() -> dict[str, str]:
    lines = (BASE_DIR / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in
            (line.partition(":") for line in lines if line.strip() and not line.startswith("#"))}


def _quote(value: str) -> str:
    # supervisord reads its file with %-interpolation.
    return value.replace("%", "%%")


def write_config(run_dir: Path, apps: list[str], databases: list[str]) -> Path:
    """The supervisord file: `databases` (postgres, redis: started at once) and `apps` (the
    Procfile's processes: started by the launcher once the database is migrated)."""
    where = directory(run_dir)
    where.mkdir(parents=True, exist_ok=True)
    from aiops_site.env import run_secret

    sock = _quote(str(socket_path(run_dir)))
    password = run_secret(run_dir, "supervisor_password")
    root = "user = root\n" if os.geteuid() == 0 else ""  # said on purpose: it starts PostgreSQL as its own user
    sections = [
        f"""[supervisord]
{root}nodaemon = true
logfile = /dev/stdout
logfile_maxbytes = 0
loglevel = info
pidfile = {_quote(str(where / "supervisord.pid"))}
childlogdir = {_quote(str(where))}

[unix_http_server]
file = {sock}
chmod = 0700
username = aiops
password = {_quote(password)}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{sock}
username = aiops
password = {_quote(password)}
"""
    ]
    from aiops_site import embedded

    wrapper = shlex.join([sys.executable, "-I", "-S", str(BASE_DIR / "aiops_site" / "exec_supervised.py")])
    pg_user = f" --user {embedded.PG_SYSTEM_USER}" if os.geteuid() == 0 else ""
    servers = {
        # SIGINT is PostgreSQL's fast shutdown.
        "postgres": ("INT", f"{wrapper} SIGINT{pg_user} -- {shlex.join(embedded.postgres_argv(run_dir))}"),
        "redis": ("TERM", f"{wrapper} SIGTERM -- {shlex.join(embedded.redis_argv(run_dir))}"),
    }
    for priority, name in enumerate(databases, start=1):
        stopsignal, command = servers[name]
        sections.append(_program(name, command, run_dir, autostart=True, priority=priority * 10,
                                 stopsignal=stopsignal, stopwait=DB_STOP_WAIT))
    lines = procfile()
    for name in apps:
        command = (f"{wrapper} SIGTERM --env-file {shlex.quote(str(env_path(run_dir)))} -- "
                   f"/bin/sh -c {shlex.quote('exec ' + lines[name])}")
        sections.append(_program(name, command, run_dir, autostart=False, priority=APPS_PRIORITY, stopsignal="TERM",
                                 stopwait=APP_STOP_WAIT, numprocs=INSTANCES.get(name, 1)))
    if apps:
        sections.append(f"[group:apps]\nprograms = {','.join(apps)}\npriority = {APPS_PRIORITY}\n")
    path = config_path(run_dir)
    path.write_text("\n".join(sections))
    return path


def process_names(program: str) -> list[str]:
    """supervisord's names for a program's processes: `web_0`, `web_1` for two, else the program's."""
    count = INSTANCES.get(program, 1)
    return [f"{program}_{n}" for n in range(count)] if count > 1 else [program]


def _program(name: str, command: str, run_dir: Path, *, autostart: bool, priority: int, stopsignal: str,
             stopwait: int, numprocs: int = 1) -> str:
    # The apps write to the terminal (as under honcho); the servers to their logs in the run directory.
    log = f"{_quote(str(run_dir / (name + '.log')))}\nstdout_logfile_maxbytes = 10MB" if autostart else \
        "/dev/stdout\nstdout_logfile_maxbytes = 0"
    instances = f"numprocs = {numprocs}\nprocess_name = %(program_name)s_%(process_num)d\n" if numprocs > 1 else ""
    return f"""[program:{name}]
{instances}command = {_quote(command)}
directory = {_quote(str(BASE_DIR))}
priority = {priority}
autostart = {str(autostart).lower()}
autorestart = true
startsecs = 2
startretries = 30
stopsignal = {stopsignal}
stopwaitsecs = {stopwait}
stopasgroup = true
killasgroup = true
stdout_logfile = {log}
redirect_stderr = true
"""


def write_env(run_dir: Path, env: dict[str, str]) -> None:
    """The environment the apps get (secrets included): readable by this user only."""
    path = env_path(run_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(env, handle)


def start(run_dir: Path) -> subprocess.Popen[bytes]:
    """supervisord, in a session of its own: a Ctrl-C reaches the launcher alone, which then
    stops supervisord, which stops the apps first and the databases last."""
    from aiops_site.embedded import die_with_parent

    return subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(config_path(run_dir))],
        cwd=BASE_DIR,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509  (only sets a signal; no locks)
    )


def ctl(run_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(config_path(run_dir)), *args],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=timeout,
    )
