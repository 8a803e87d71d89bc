"""gunicorn settings for `make run`'s `web` instances (the Procfile passes the port and the workers).

supervisord restarts a gunicorn master that dies; what decided how soon `/ready` answered again
was what the new master had to do first (issue 13: 20-39 s after `kill -9` on a loaded 2-core
machine). Three causes, three settings, and a fourth for what no setting makes fast enough:

- The workers of a SIGKILLed master lived on as orphans holding the listening socket until they
  noticed their parent had changed, so the new master's bind failed ("Connection in use") and it
  slept a second before trying again. `post_fork` gives every worker the kernel's parent-death
  signal: they die with their master and the port is free when supervisord starts the next one.
- Each worker imported Django on its own, side by side on the same two cores. `preload_app`
  imports it once, in the master, and forks workers that start serving at once.
- The first request then loaded the URLconf and every view module behind it. `on_starting` does
  that in the master too (and loads the broker's transport the readiness check uses), so the
  first `/ready` after a restart costs what any other one does. Nothing here opens a connection:
  database, Redis and broker connections are made in the workers, after the fork.
- Even so a restart is ~1.6 s of CPU, 10-25 s when twenty processes share the two cores.
  supervisord therefore runs two instances (aiops_site/supervision.py) and `reuse_port` lets
  their workers listen on the same port, each worker on a socket of its own: the kernel hands
  new connections to the sockets that exist, so while one instance is dead or starting the
  other answers everything, and a starting one takes connections only once its workers run.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any

preload_app = True
reuse_port = True
# gunicorn 25+ opens a control socket under $HOME by default: one path for every `make run` on the
# machine (a test's launcher and a developer's would take it from each other), and nothing uses it.
control_socket_disable = True
accesslog = "-"

_PR_SET_PDEATHSIG = 1


def on_starting(server: Any) -> None:
    from django.db import connections
    from django.urls import get_resolver, resolve

    get_resolver().url_patterns  # noqa: B018  (imports every view module now, not on the first request)
    resolve("/ready")
    from aiops_site.celery import app

    app.connection_for_write().transport  # noqa: B018  (imports kombu's Redis transport; connects nothing)
    connections.close_all()  # a connection made while loading must not be shared by the forked workers
    server.log.info("application loaded in the master; workers fork from it")


def post_fork(server: Any, worker: Any) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != server.pid:  # the master died before the signal was set
        os._exit(1)


def child_exit(server: Any, worker: Any) -> None:
    from aiops_site.metrics import gunicorn_child_exit

    gunicorn_child_exit(worker.pid)
