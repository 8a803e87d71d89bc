"""Finding 8 of issue 13: PostgreSQL restarted during an alert burst -> 0 acknowledged alerts lost,
and every answer that is not 200 is a 503 (with Retry-After) that Alertmanager retries.

gunicorn (as `make run` runs it) against a PostgreSQL and Redis of the test's own (the outage
room's `stack`); a burst of single-alert batches, each with its own fingerprint, from four
senders; PostgreSQL is stopped (fast shutdown) and started again in the middle.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import httpx
import pytest

from aiops_site import embedded
from tests.hardening.test_outage import _alertmanager, stack  # noqa: F401  (the fixture)
from tests.playbooks.test_alertmanager import alert, batch

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SENDERS = 4
PER_SENDER = 60


def _stored_keys(run_dir: Any) -> set[str]:
    out = subprocess.run(
        [str(embedded._pg_bin("psql")), "-At", "-h", str(embedded.pg_socket_dir(run_dir)), "-U", embedded.PG_USER,
         embedded.DB_NAME, "-c", "SELECT dedup_key FROM playbooks_clusterevent WHERE dedup_key IS NOT NULL"],
        check=True, capture_output=True, text=True).stdout
    return {line.split(":", 1)[0] for line in out.splitlines() if line}


def test_postgresql_restarted_during_an_alert_burst_loses_no_acknowledged_alert(stack) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    acknowledged: list[str] = []
    refused: list[tuple[int, str, str]] = []
    lock = threading.Lock()
    retry: list[dict[str, Any]] = []

    def send(sender: int) -> None:
        for n in range(PER_SENDER):
            fingerprint = f"{sender:02x}{n:04x}ffee"
            body = batch(alert(f"Burst{sender}", fingerprint=fingerprint, deployment=f"burst-{sender}-{n}",
                               namespace="shop"))
            try:
                response = _alertmanager(stack, body)
            except httpx.TransportError as exc:  # no answer at all: Alertmanager retries that too
                with lock:
                    refused.append((0, "", type(exc).__name__))
                continue
            with lock:
                if response.status_code == 200:
                    acknowledged.append(fingerprint)
                else:
                    refused.append((response.status_code, response.headers.get("Retry-After", ""),
                                    response.text[:200]))
                    retry.append(body)
            time.sleep(0.02)

    threads = [threading.Thread(target=send, args=(s,)) for s in range(SENDERS)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the burst is under way
    stopped_at = time.monotonic()
    stack.postgres.stop()
    time.sleep(1.5)
    stack.start_postgres()
    down_for = time.monotonic() - stopped_at
    for thread in threads:
        thread.join(300)
    stored = _stored_keys(stack.run_dir)
    lost = sorted(set(acknowledged) - stored)
    not_503 = [r for r in refused if r[0] != 503 or not r[1]]
    print(f"chaos postgres restart: {SENDERS * PER_SENDER} batches, {len(acknowledged)} acknowledged, "
          f"{len(refused)} refused ({len(refused) - len(not_503)} 503 with Retry-After), down_for={down_for:.1f}s, "
          f"lost={len(lost)}")
    assert not lost, lost[:10]
    assert not not_503, not_503[:5]
    assert refused, "PostgreSQL was never seen down: the burst did not cross the restart"
    # Alertmanager sends a refused batch again: every one of them is stored now.
    for body in retry:
        assert _alertmanager(stack, body).status_code == 200
    assert len(_stored_keys(stack.run_dir)) == SENDERS * PER_SENDER
