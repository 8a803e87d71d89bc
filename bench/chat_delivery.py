"""Chat delivery through the outbox against sending directly, in one run.

A fake Telegram Bot API runs in this process (tests/fakes/telegram_server.py: real HTTP, the
real python-telegram-bot client); PostgreSQL and Redis are the embedded ones; one real Celery
worker (concurrency 2, as `make run` starts it) delivers.

  direct   `TelegramTransport().send()` called N times here, one after another: the platform
           call alone (no database, no queue) -- the floor;
  outbox   N rows written in one transaction (a burst of notifications), each delivered by its
           own `channels.deliver_message` task: wall time from commit to the last delivery, and
           each message's latency from its row's creation to its delivery (p50, p95);
  flood    the same, with the fake answering the first N/10 sendMessage calls with
           429 retry_after=1: the delay a rate limit adds, and that nothing is sent twice.

Run:
  AIOPS_DB_USER=postgres .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-chat -- .venv/bin/python bench/chat_delivery.py
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.telegram_server import FakeTelegram  # noqa: E402

TOKEN = "123456:BENCH-token"
CHAT = "-100200300"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _worker_env() -> dict[str, str]:
    """The child sees exactly this process's stores (explicit URLs, as the tests' worker does)."""
    from django.conf import settings

    from tests.conftest import database_url

    return {
        **os.environ,
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        "AIOPS_SECRET_KEY": settings.SECRET_KEY,
        "AIOPS_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",  # "ready." must reach the log file while we wait for it
        "AIOPS_LOG_LEVEL": "INFO",  # ... and it is an INFO line
    }


def start_worker(log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "aiops_site", "worker", "--concurrency", "2", "--loglevel", "INFO",
         "--without-heartbeat", "--without-mingle", "--without-gossip", "--hostname", f"bench-{os.getpid()}@%h"],
        cwd=ROOT, env=_worker_env(), stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while b"ready." not in log_path.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.terminate()
            worker.wait(30)
            raise SystemExit(f"worker did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return worker


def run_outbox(n: int, fake: FakeTelegram, label: str) -> dict[str, object]:
    from django.db import transaction

    from channels.models import MessageState, OutboundMessage
    from channels.services import queue_message

    OutboundMessage.objects.all().delete()
    fake.requests.clear()
    with transaction.atomic():
        for i in range(n):
            queue_message(kind="telegram", address=CHAT, text=f"🔴 **Incident #{i}** crash_loop Deployment/shop/web-{i}")
    committed = time.perf_counter()
    deadline = time.monotonic() + 300
    while OutboundMessage.objects.exclude(state=MessageState.DELIVERED).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{label}: not all delivered in 300 s")
        time.sleep(0.05)
    wall = time.perf_counter() - committed
    rows = list(OutboundMessage.objects.values_list("created_at", "delivered_at", "attempts"))
    latencies = [(delivered - created).total_seconds() for created, delivered, _ in rows]
    sent = len(fake.calls("sendMessage", succeeded=True))
    return {
        "wall_s": round(wall, 3),
        "per_s": round(n / wall, 1),
        "latency_p50_s": round(percentile(latencies, 0.5), 3),
        "latency_p95_s": round(percentile(latencies, 0.95), 3),
        "attempts": sum(a for _, _, a in rows),
        "delivered_once": sent == n,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    n = args.messages

    fake = FakeTelegram(TOKEN)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "aiops_site.settings",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": "bench-secret",
        "TELEGRAM_API_BASE_URL": fake.base_url,
        "AIOPS_LOG_LEVEL": "WARNING",
    })
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from aiops_site.celery import app
    from channels.telegram.transport import TelegramTransport

    app.control.purge()

    transport = TelegramTransport()
    started = time.perf_counter()
    for i in range(n):
        transport.send(CHAT, transport.split(f"🔴 **Incident #{i}** crash_loop Deployment/shop/web-{i}"),
                       buttons=[], reply_to="", start=0, on_part=lambda *_: None)
    direct_wall = time.perf_counter() - started
    direct = {"wall_s": round(direct_wall, 3), "per_s": round(n / direct_wall, 1),
              "per_message_ms": round(direct_wall / n * 1000, 2)}

    log_path = Path(os.environ.get("AIOPS_RUN_DIR", ROOT / ".run")) / "bench-chat-worker.log"
    worker = start_worker(log_path)
    try:
        outbox = run_outbox(n, fake, "outbox")
        # The first tenth of the calls hit flood control (the fake answers scripts in order).
        for _ in range(n // 10):
            fake.script_flood("sendMessage", retry_after=1)
        flood = run_outbox(n, fake, "flood")
    finally:
        worker.terminate()
        worker.wait(30)
        fake.stop()

    result = {
        "messages": n,
        "direct": direct,
        "outbox": outbox,
        "flood": flood,
        "outbox_vs_direct_throughput": round(outbox["per_s"] / direct["per_s"], 2),  # type: ignore[operator]
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps({"direct": direct, "outbox": outbox, "flood": flood}, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
