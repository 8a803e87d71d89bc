"""gunicorn settings for the container's `web` role (read from the environment like every setting).

The master process serves the metrics of all its workers on AIOPS_WEB_METRICS_PORT, and
forgets a dead worker's live gauges; see aiops_site/metrics.py.
"""

from __future__ import annotations

from typing import Any

from aiops_site.env import env_int, env_list, env_str

bind = [f"0.0.0.0:{env_int('AIOPS_WEB_PORT', 8000, minimum=1, maximum=65535)}"]
workers = env_int("GUNICORN_WORKERS", 2, minimum=1)
threads = env_int("GUNICORN_THREADS", 4, minimum=1)
timeout = env_int("GUNICORN_TIMEOUT", 60, minimum=5)
graceful_timeout = 30
accesslog = "-"
# The heartbeat file goes to memory: the root filesystem is read-only in Kubernetes.
worker_tmp_dir = "/dev/shm"  # noqa: S108  (gunicorn's documented choice; only heartbeat files)
# Trust X-Forwarded-* only from the proxy in front (an ingress controller, a load balancer).
forwarded_allow_ips = ",".join(env_list("AIOPS_FORWARDED_ALLOW_IPS", ["127.0.0.1"]))

# gunicorn 25+ opens a control socket under $HOME by default; the home directory is read-only
# in the container, and resizing workers at run time is the orchestrator's job, not a socket's.
control_socket_disable = True

_metrics_port = env_int("AIOPS_WEB_METRICS_PORT", 0, minimum=0, maximum=65535)
_metrics_address = env_str("AIOPS_METRICS_ADDRESS", "127.0.0.1")


def when_ready(server: Any) -> None:
    from aiops_site.metrics import gunicorn_when_ready

    gunicorn_when_ready(_metrics_port, _metrics_address)


def child_exit(server: Any, worker: Any) -> None:
    from aiops_site.metrics import gunicorn_child_exit

    gunicorn_child_exit(worker.pid)
