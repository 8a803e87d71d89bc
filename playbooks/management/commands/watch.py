"""``manage.py watch``: hold Kubernetes watch streams on the enabled clusters (detection in seconds).

Run any number of these: the clusters are shared through Redis leases, one owner each, and a
dead process's clusters move to the others within ``AIOPS_WATCH_LEASE_TTL`` seconds (plus one
scan). SIGTERM/SIGINT release the leases at once (the clusters fall back to the poll until
another process takes them). The 30-second poll keeps running beside it as the resync.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from kubernetes.client import ApiClient

from k8s.listing import list_calls
from playbooks.services.watch import WatchService


def _limit_malloc_arenas() -> None:
    # glibc gives each thread that allocates its own malloc arena; the streams' threads parse
    # JSON pages in turn, and a dozen arenas each keeping freed pages cost more resident memory
    # than the objects held (measured: ~60 MB at 2,000 pods). Two arenas, as MALLOC_ARENA_MAX=2 would.
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc


class Command(BaseCommand):
    help = "Watch the enabled clusters' pods, nodes, deployments, replicasets, HPAs and jobs; open incidents in seconds."
    # Django's system checks import every URLconf, view and admin module (the REST API's schema
    # generator among them): 26 MB this long-lived process never uses. The web role runs them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--identity", default="", help="Name of this process in leases and on cluster rows "
                                                            "(default: host:pid:random).")
        parser.add_argument("--scan", type=float, default=1.0, help="Seconds between lease scans (default 1).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["scan"] <= 0 or options["scan"] > settings.AIOPS_WATCH_LEASE_TTL / 2:
            raise CommandError(f"--scan {options['scan']} must be above 0 and at most half of "
                               f"AIOPS_WATCH_LEASE_TTL ({settings.AIOPS_WATCH_LEASE_TTL}s), or leases expire between renewals")
        _limit_malloc_arenas()
        # The client's API classes import lazily and slowly (seconds on a busy machine): load them
        # now, not between taking a cluster's lease and renewing it.
        list_calls(ApiClient())
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if settings.AIOPS_WATCH_METRICS_PORT:
            from aiops_site.metrics import start_metrics_server

            start_metrics_server(settings.AIOPS_WATCH_METRICS_PORT, settings.AIOPS_METRICS_ADDRESS, web=False, what="watch")
        WatchService(identity=options["identity"] or None, scan_s=options["scan"]).run(stop)
