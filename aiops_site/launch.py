"""`make run`: the whole system on one machine, on embedded defaults unless told otherwise.

Order: take the run lock (a second `make run` says so and exits), check the settings
(a bad value stops here, naming the variable), start supervisord with the embedded
PostgreSQL/Redis the environment does not replace, migrate, create the demo superuser, then
start the Procfile's processes as supervisord programs and print the URLs once /ready answers.
supervisord restarts any process that dies (aiops_site.supervision); if supervisord itself
dies, this launcher starts a new one. Ctrl-C or SIGTERM stops the apps first and the
embedded servers last, removes the lock file, and is done within seconds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
WEB = f"http://127.0.0.1:{os.environ.get('AIOPS_WEB_PORT', '8000')}"
FLOWER = f"http://127.0.0.1:{os.environ.get('AIOPS_FLOWER_PORT', '5555')}"


def _say(message: str) -> None:
    print(f"[aiops] {message}", flush=True)


def _take_lock(run_dir: Path):  # type: ignore[no-untyped-def]
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / "run.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        _say(f"already running (pid {pid}, run directory {run_dir}); stop it with Ctrl-C first.")
        sys.exit(1)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _check_settings() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.conf import settings

        settings.INSTALLED_APPS  # noqa: B018  (forces the settings module to load and validate)
    except ImproperlyConfigured as exc:
        _say(f"configuration error: {exc}")
        sys.exit(2)


def _manage(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], check=True, cwd=BASE_DIR,
                   env={**os.environ, **(env or {})})


def _as_owner() -> dict[str, str]:
    """Migrations run as the role that owns the schema; the apps run as the app role (README,
    "PostgreSQL roles"): the embedded owner role, or AIOPS_MIGRATE_DATABASE_URL when given."""
    from aiops_site import embedded

    if os.environ.get("AIOPS_MIGRATE_DATABASE_URL"):
        return {"DATABASE_URL": os.environ["AIOPS_MIGRATE_DATABASE_URL"]}
    return {} if os.environ.get("DATABASE_URL") else {"AIOPS_DB_USER": embedded.OWNER_ROLE}


def _processes(env: dict[str, str]) -> list[str]:
    procfile = (BASE_DIR / "Procfile").read_text()
    names = [line.split(":", 1)[0].strip() for line in procfile.splitlines() if line.strip() and not line.startswith("#")]
    if env.get("AIOPS_LAUNCH_PROCESSES"):
        wanted = [name.strip() for name in env["AIOPS_LAUNCH_PROCESSES"].split(",") if name.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            _say(f"configuration error: AIOPS_LAUNCH_PROCESSES names unknown processes: {', '.join(unknown)}")
            sys.exit(2)
        return wanted
    if env.get("KUBECONFIG"):
        names = [name for name in names if name != "sandbox"]
    return names


def _check_web_port() -> None:
    """The two web instances share their port (SO_REUSEPORT), which would also let them share it
    with another server of this user's already listening there: refuse to start instead."""
    import socket

    port = int(os.environ.get("AIOPS_WEB_PORT", "8000"))
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            _say(f"configuration error: port {port} (AIOPS_WEB_PORT) is in use: {exc.strerror}")
            sys.exit(2)


def _announce_when_ready(run_dir: Path, creds: dict[str, str], stop: threading.Event) -> None:
    deadline = time.monotonic() + 240
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{WEB}/ready", timeout=2) as response:  # noqa: S310  (our own http URL)
                if response.status == 200:
                    break
        except Exception:  # noqa: S110  (not up yet: the web process is still starting)
            pass
        stop.wait(1)
    else:
        if not stop.is_set():
            _say("the web process did not become ready within 4 minutes; see the logs above")
        return
    lines = [
        "",
        "AIOps agent is up:",
        f"  web console   {WEB}/console/",
        f"  admin         {WEB}/admin/   user {creds['admin_user']}  ({creds['admin_password_note']})",
        f"  flower        {FLOWER}/      user {creds['flower_user']}  password {creds['flower_password']}",
        f"  metrics       {WEB}/metrics",
        f"  health        {WEB}/health   ready {WEB}/ready",
        f"  run directory {run_dir}",
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


class _Stop(Exception):
    """Ctrl-C or SIGTERM while starting up."""


def _wait_for_databases(run_dir: Path, databases: list[str], supervisor: subprocess.Popen[bytes],
                        stopping: threading.Event, timeout: float = 90) -> None:
    from aiops_site import embedded

    checks = {
        "postgres": lambda: embedded.pg_ready(embedded.pg_socket_dir(run_dir)),
        "redis": lambda: embedded.redis_ready(embedded.read_redis_port(run_dir) or 0),
    }
    deadline = time.monotonic() + timeout
    waiting = list(databases)
    while waiting:
        if stopping.is_set():
            raise _Stop
        if supervisor.poll() is not None:
            raise RuntimeError(f"supervisord exited with code {supervisor.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded {', '.join(waiting)} did not accept connections within {timeout:.0f}s "
                               f"(see {run_dir})")
        waiting = [name for name in waiting if not checks[name]()]
        time.sleep(0.1)
    if "postgres" in databases:
        embedded.ensure_database(embedded.pg_socket_dir(run_dir))


def _start_apps(run_dir: Path) -> None:
    from aiops_site import supervision

    result = supervision.ctl(run_dir, "start", "apps:*")
    if result.returncode not in (0,) and "ERROR" in result.stdout:
        _say(f"starting the apps: {result.stdout.strip()}")


def main() -> int:
    os.chdir(BASE_DIR)
    run_dir = Path(os.environ.get("AIOPS_RUN_DIR", BASE_DIR / ".run")).resolve()
    os.environ["AIOPS_RUN_DIR"] = str(run_dir)
    lock = _take_lock(run_dir)  # noqa: F841  (held for the life of this process)
    _check_settings()
    _check_web_port()

    from aiops_site import embedded, supervision
    from aiops_site.env import run_secret

    stopping = threading.Event()
    starting = True

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        if starting:
            raise _Stop

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    databases = [name for name, url in (("postgres", "DATABASE_URL"), ("redis", "REDIS_URL"))
                 if not os.environ.get(url)]
    _say("starting embedded services" if databases else "using external PostgreSQL and Redis")
    supervisor: subprocess.Popen[bytes] | None = None
    try:
        if "postgres" in databases:
            embedded.init_postgres(run_dir)
        names = _processes(dict(os.environ))
        supervision.write_config(run_dir, names, databases)
        supervisor = supervision.start(run_dir)
        _wait_for_databases(run_dir, databases, supervisor, stopping)
        # The settings read the embedded Redis port from the run directory; children re-read it.
        env = dict(os.environ)
        # The Procfile runs through /bin/sh: gunicorn and celery must come from our venv.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        metrics_dir = run_dir / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)  # multiprocess files of a previous run are stale
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        os.environ.update(env)
        _say("migrating the database")
        _manage("migrate", "--no-input", "-v", "0", env=_as_owner())
        _manage("collectstatic", "--no-input", "-v", "0")
        creds = _ensure_demo_users(run_dir)
        env["FLOWER_BASIC_AUTH"] = f"{creds['flower_user']}:{creds['flower_password']}"
        env["AIOPS_MCP_TOKEN"] = env.get("AIOPS_MCP_TOKEN") or run_secret(run_dir, "mcp_token")
        for hook in _startup_hooks():
            hook(run_dir, env)
        supervision.write_env(run_dir, env)
        _say(f"starting {', '.join(names)} under supervisord "
             f"(status: {Path(sys.executable).parent / 'supervisorctl'} -c {supervision.config_path(run_dir)} status)")
        _start_apps(run_dir)
        threading.Thread(target=_announce_when_ready, args=(run_dir, creds, stopping), daemon=True).start()
        starting = False
        while not stopping.is_set():
            if supervisor.poll() is not None:
                # supervisord itself died (its programs die with it): start a fresh one.
                _say(f"supervisord exited (code {supervisor.returncode}); starting it again")
                supervisor = supervision.start(run_dir)
                _wait_for_databases(run_dir, databases, supervisor, stopping)
                _start_apps(run_dir)
            stopping.wait(0.5)
        return 0
    except _Stop:
        return 0
    except subprocess.CalledProcessError as exc:
        _say(f"start-up step failed: {' '.join(map(str, exc.cmd))} (exit {exc.returncode})")
        return 1
    finally:
        starting = False
        stopping.set()
        _say("stopping")
        if supervisor is not None and supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)  # apps first, then Redis, PostgreSQL last
            try:
                supervisor.wait(30)
            except subprocess.TimeoutExpired:
                supervisor.kill()
                supervisor.wait()
        (run_dir / "run.lock").unlink(missing_ok=True)
        _say("stopped")


def _ensure_demo_users(run_dir: Path) -> dict[str, str]:
    """The demo superuser (password generated, printed once, kept in the run directory)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from aiops_site.env import run_secret

    user_model = get_user_model()
    password_file = run_dir / "admin_password"
    created_now = not password_file.exists()
    password = run_secret(run_dir, "admin_password", nbytes=12)
    if not user_model.objects.filter(username="admin").exists():
        user_model.objects.create_superuser("admin", "admin@localhost", password)
        created_now = True
    note = f"password {password}" if created_now else f"password kept in {password_file}"
    return {
        "admin_user": "admin",
        "admin_password_note": note,
        "flower_user": "flower",
        "flower_password": run_secret(run_dir, "flower_password", nbytes=12),
    }


def _startup_hooks():  # type: ignore[no-untyped-def]
    """Start-up steps other apps add (sandbox registration, MCP tool sync), run after migrate."""
    import importlib
    import importlib.util

    for module in ("k8s.startup", "agents.startup", "playbooks.startup", "channels.startup"):
        # An app without a start-up step has no such module; a broken one must fail loudly.
        if importlib.util.find_spec(module) is not None:
            yield importlib.import_module(module).prepare


if __name__ == "__main__":
    sys.exit(main())
