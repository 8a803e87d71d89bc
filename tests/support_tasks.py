"""Tasks that exist only for tests; the test worker loads them with `--include`."""

from __future__ import annotations

import structlog
from celery import shared_task

log = structlog.get_logger(__name__)


@shared_task(name="tests.log_and_chain")
def log_and_chain(depth: int) -> str:
    log.info("test_task_ran", depth=depth)
    if depth > 0:
        log_and_chain.delay(depth - 1)
    return "ok"
