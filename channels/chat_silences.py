"""`/silence` in chat (every platform and the console's chat box, through the router):

    /silence <namespace>/<workload> <duration> <reason>    e.g. /silence shop/cart 2h upgrading the db
    /silence <matchers> <duration> <reason>                e.g. /silence namespace=shop,app=~web.* 30m drill
    /silence list
    /silence expire <id>
"""

from __future__ import annotations

from typing import Any

from channels.formatting import shorten
from channels.inbound import Inbound

USAGE = ("Usage: `/silence <namespace>/<workload> <duration> <reason>` (duration like 30m, 2h, 1d), "
         "`/silence list` or `/silence expire <id>`")


def handle(inbound: Inbound, args: list[str]) -> None:
    from channels.router import UsageError, reply

    sub = args[0].lower() if args else ""
    if sub in ("", "help"):
        raise UsageError(USAGE)
    if sub == "list":
        reply(inbound, list_text())
        return
    if sub == "expire":
        if len(args) != 2 or not args[1].lstrip("#").isdigit():
            raise UsageError("Usage: `/silence expire <id>`, e.g. `/silence expire 12`")
        reply(inbound, expire(inbound, int(args[1].lstrip("#"))))
        return
    if len(args) < 3:
        raise UsageError(USAGE)
    reply(inbound, create(inbound, args[0], args[1], " ".join(args[2:])))


def _matchers(target: str) -> Any:
    from channels.router import UsageError
    from playbooks.silences import workload_matchers

    if "=" in target or "~" in target:
        return target  # Alertmanager-style matchers, parsed (and refused with a reason) by the service
    namespace, slash, name = target.partition("/")
    if not slash or not namespace or not name:
        raise UsageError(f"Give the workload as `<namespace>/<name>`, not `{shorten(target, 80)}`. " + USAGE)
    return workload_matchers(namespace, name)


def create(inbound: Inbound, target: str, duration_text: str, reason: str) -> str:
    from channels.router import UsageError
    from playbooks.services.silences import SilenceRefused, create_silence, silence_line
    from playbooks.silences import MatcherError, matchers_text, parse_duration

    try:
        duration = parse_duration(duration_text)
    except MatcherError as exc:
        raise UsageError(f"{exc}. {USAGE}") from exc
    try:
        silence = create_silence(matchers_input=_matchers(target), duration=duration, reason=reason,
                                 user=inbound.user, via=inbound.kind)
    except SilenceRefused as exc:
        return f"Refused: {exc}."
    held = silence.incidents.filter(state="open").count()
    now_held = f" It holds {held} open incident{'s' if held != 1 else ''} now." if held else ""
    return (f"🔕 Silence #{silence.pk} created: {matchers_text(silence.matchers)}, {silence_line(silence)}."
            f"{now_held} Matching incidents notify nobody and start no run until it ends; "
            f"`/silence expire {silence.pk}` ends it early.")


def expire(inbound: Inbound, silence_id: int) -> str:
    from playbooks.services.silences import SilenceRefused, expire_silence

    try:
        silence = expire_silence(silence_id, user=inbound.user, via=inbound.kind)
    except SilenceRefused as exc:
        return f"Refused: {exc}."
    return (f"Silence #{silence.pk} expired. Incidents it held that are still open are announced now, and their "
            "rules run.")


def list_text() -> str:
    from playbooks.services.silences import silence_rows

    rows = [r for r in silence_rows(include_ended_hours=0) if r["state"] != "expired"]
    if not rows:
        return "No silences are active."
    lines = [f"**Silences** ({len(rows)})"]
    for row in rows[:30]:
        silence = row["silence"]
        when = f"from {row['from']} until {row['until']}" if row["state"] == "pending" else f"until {row['until']}"
        held = f", holds {row['held']} open incident{'s' if row['held'] != 1 else ''}" if row["held"] else ""
        lines.append(f"#{silence.pk} {row['matchers']} {when}{held}, by {silence.created_by_name or 'unknown'}: "
                     f"{shorten(silence.reason, 200)}")
    return "\n".join(lines)
