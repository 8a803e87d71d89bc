"""`make run` start-up step: give the web console's notification feed a channel target, so the
embedded demo shows incidents, approvals and run outcomes in the console with no chat account.

Created once; an admin who edits or disables it later keeps their change (a row that exists,
in any state, is left alone)."""

from __future__ import annotations

from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def ensure_console_feed() -> bool:
    """True when the feed target was created now."""
    from channels.models import ChannelTarget, Kind

    _, created = ChannelTarget.objects.get_or_create(
        kind=Kind.WEB, address="feed",
        defaults={"name": "web console", "min_severity": "info", "approvals": True, "enabled": True},
    )
    if created:
        log.info("console_feed_target_created")
    return created


def prepare(run_dir: Path, env: dict[str, str]) -> None:
    ensure_console_feed()
