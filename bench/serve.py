"""The app under gunicorn as the Procfile runs it, on a free loopback port, for the benchmarks."""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(env: dict[str, str], workers: int, threads: int, log_path: Path) -> Iterator[int]:
    """Start gunicorn with `env`, wait until /health answers 200, yield its port; stop it after."""
    port = free_port()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "aiops_site.wsgi", "--bind", f"127.0.0.1:{port}", "--workers",
             str(workers), "--threads", str(threads), "--timeout", "60"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    probe.request("GET", "/health")
                    if probe.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"gunicorn did not come up:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield port
        finally:
            server.terminate()
            server.wait(30)
