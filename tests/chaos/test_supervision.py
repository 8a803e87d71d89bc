"""Finding 5 of issue 13: `make run` had no supervision (one worker killed with -9 made honcho stop
everything; nothing restarted anything) and stopped PostgreSQL together with the apps, slowly,
leaving its lock file.

The real launcher on its own run directory and ports: every process is SIGKILLed in turn and must
be back within 10 s with /ready answering 200; then SIGTERM stops the apps before the databases,
removes the lock and is done within 10 s.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest

from aiops_site.supervision import process_names
from tests.conftest import ROOT, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PROCESSES = ["web", "worker", "outbound", "watch", "beat", "flower", "mcp", "sandbox"]
# supervisord's names: `web` is two instances, web_0 and web_1 (aiops_site/supervision.py).
SUPERVISED = [process for name in PROCESSES for process in process_names(name)]
BACK_WITHIN = 10.0  # the bound, for the process and for /ready; the figures: docs/reliability.md


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=3) as response:
            return response.status == 200
    except Exception:
        return False


@pytest.fixture
def run_dir() -> Any:
    # Not under pytest's base temp: other sessions on the machine reset its mode to 0700, and the
    # embedded PostgreSQL runs as a user of its own that must reach its data directory.
    path = Path(tempfile.mkdtemp(prefix="aiops-supervised-"))
    path.chmod(0o755)
    yield path / "run"
    shutil.rmtree(path, ignore_errors=True)


# It migrates a fresh database and starts the whole system before ten kills: 221 s at load 20.
@pytest.mark.timeout(420)
def test_every_process_killed_with_sigkill_is_back_within_10s_and_sigterm_stops_in_order(
        tmp_path: Path, run_dir: Path) -> None:
    web_port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "AIOPS_SECRET_KEY",
                                                             "KUBECONFIG", "AIOPS_MCP_URL", "AIOPS_DB_USER"}}
    env.update(AIOPS_RUN_DIR=str(run_dir), AIOPS_WEB_PORT=str(web_port), AIOPS_FLOWER_PORT=str(flower_port),
               AIOPS_LOG_FORMAT="json")
    log_path = tmp_path / "launch.log"
    log = open(log_path, "wb")
    launcher = subprocess.Popen([sys.executable, "-m", "aiops_site.launch"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    conf = run_dir / "supervisor" / "supervisord.conf"

    def ctl(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args],
                              capture_output=True, text=True, timeout=30).stdout.strip()

    rpc: list[Any] = []

    def pid(program: str) -> int:
        """The program's pid from supervisord (XML-RPC on its socket: no process start per poll)."""
        from supervisor.xmlrpc import SupervisorTransport

        from aiops_site.supervision import socket_path

        if not rpc:
            if not (run_dir / "supervisor_password").exists():
                return 0
            transport = SupervisorTransport("aiops", (run_dir / "supervisor_password").read_text().strip(),
                                            f"unix://{socket_path(run_dir)}")
            rpc.append(xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport))
        try:
            info = rpc[0].supervisor.getProcessInfo(program)
        except (OSError, xmlrpc.client.Fault):
            return 0
        return int(info["pid"]) if info["statename"] == "RUNNING" else 0

    def output() -> str:
        return log_path.read_text(errors="replace")

    recovered: dict[str, float] = {}  # kill -> /ready 200 again
    serving: dict[str, float] = {}  # a web instance killed -> its new workers listening on the port
    respawned: dict[str, float] = {}  # kill -> a new process RUNNING (up for supervisord's startsecs, 2 s)
    try:
        def up() -> bool:
            assert launcher.poll() is None, output()[-3000:]
            return _ready(web_port) and all(pid(f"apps:{name}") for name in SUPERVISED)

        wait_for(up, timeout=240, interval=1, message="the launched system to be ready")
        def listening(master: int) -> bool:
            import psutil

            try:
                return any(c.status == psutil.CONN_LISTEN and c.laddr.port == web_port
                           for child in psutil.Process(master).children() for c in child.net_connections("tcp"))
            except psutil.Error:
                return False

        for program in ["postgres", "redis", *(f"apps:{name}" for name in SUPERVISED)]:
            before = pid(program)
            assert before, ctl("status")
            killed_at = time.monotonic()
            os.kill(before, signal.SIGKILL)

            def back(program: str = program, before: int = before) -> bool:
                return pid(program) not in (0, before)

            try:
                wait_for(back, timeout=60, interval=0.1, message=f"{program} to be back after kill -9")
                respawned[program] = time.monotonic() - killed_at
                wait_for(lambda: _ready(web_port), timeout=60, interval=0.2, message="/ready after the kill")
                recovered[program] = time.monotonic() - killed_at
                if program.startswith("apps:web_"):
                    wait_for(lambda: listening(pid(program)), timeout=90, interval=0.2,  # noqa: B023
                             message=f"{program}'s new workers to listen")
                    serving[program] = time.monotonic() - killed_at
            except BaseException:
                logs = "".join((run_dir / f"{name}.log").read_text(errors="replace")[-1500:]
                               for name in ("postgres", "redis") if (run_dir / f"{name}.log").exists())
                print(ctl("status"), output()[-4000:], logs, sep="\n")
                raise
            name = program.split(":")[-1]
            # The restart is logged by supervisord.
            assert re.search(rf"exited: {name} \(terminated by SIGKILL; not expected\)", output())
        print("respawned in", {k: round(v, 1) for k, v in respawned.items()},
              "ready again in", {k: round(v, 1) for k, v in recovered.items()},
              "killed web instance serving again in", {k: round(v, 1) for k, v in serving.items()},
              f"load {os.getloadavg()[0]:.1f}")
        assert all(seconds < BACK_WITHIN for seconds in respawned.values()), (recovered, respawned)
        # /ready 200 again within the same 10 s: a killed web instance's twin answers meanwhile
        # (aiops_site/gunicorn_run.py); PostgreSQL's crash recovery starts with one syncfs()
        # (aiops_site/embedded.py). The figures, with the load they were measured at: docs/reliability.md.
        assert all(seconds < BACK_WITHIN for seconds in recovered.values()), (recovered, respawned)
        # A cause of the slow web restarts, checked without a clock: the killed master's workers
        # lived on holding the port, and the new master's bind failed until they noticed.
        assert "Connection in use" not in output(), output()[-3000:]
        assert set(serving) == {f"apps:{name}" for name in process_names("web")}, serving
        # The launcher, the run lock and every program: stopped by one SIGTERM, apps first.
        lock = run_dir / "run.lock"
        assert lock.exists()
        stopping = time.monotonic()
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(30)
        took = time.monotonic() - stopping
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(10)
        log.close()
    print("stopped in", round(took, 1))
    text = output()
    assert took < BACK_WITHIN, (took, text[-3000:])
    assert not lock.exists()
    stopped = [m.group(1) for m in re.finditer(r"stopped: (\w+) \(", text)]
    assert stopped[-2:] == ["redis", "postgres"] and set(stopped[:-2]) >= set(SUPERVISED), stopped
    leftovers = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True).stdout
    assert leftovers.strip() == "", leftovers


def test_the_launcher_refuses_a_web_port_already_in_use(run_dir: Path) -> None:
    """The web instances share their port (SO_REUSEPORT): a port another server already listens
    on would be shared with it silently, so the launcher refuses to start, naming the variable."""
    import socket

    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that would share it
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "AIOPS_DB_USER"}}
        env.update(AIOPS_RUN_DIR=str(run_dir), AIOPS_WEB_PORT=str(taken.getsockname()[1]))
        result = subprocess.run([sys.executable, "-m", "aiops_site.launch"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {env['AIOPS_WEB_PORT']} (AIOPS_WEB_PORT) is in use" in result.stdout
    assert not (run_dir / "supervisor").exists()  # nothing was started
