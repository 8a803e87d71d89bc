"""Running a chat command's read-only tool (in a Celery task) and formatting its result for chat."""

from __future__ import annotations

from typing import Any

import structlog

from channels.formatting import arguments_text, shorten
from channels.models import InboundUpdate, OutboundMessage
from channels.services import queue_message

log = structlog.get_logger(__name__)

_MAX_ROWS = 60
_MAX_COLUMNS = 6


def run_read_tool(update_id: int, tool: str, args: dict[str, Any]) -> str:
    """Call a LOW tool for the person who sent update `update_id` and reply with the result.
    Idempotent through the reply's dedupe key: a redelivered task answers nothing twice."""
    from agents.services import ToolRefused, call_tool

    update = InboundUpdate.objects.select_related("user").filter(pk=update_id).first()
    if update is None or update.user is None:
        log.info("chat_tool_skipped", update=update_id, reason="update or user gone")
        return "missing"
    key = f"tool:{update_id}:{tool}"
    if OutboundMessage.objects.filter(dedupe_key=key).exists():
        return "already answered"
    actor = f"{update.platform}:{update.user.get_username()}"
    try:
        result = call_tool(tool, args, actor=actor, reason=f"chat command: {shorten(update.text, 200)}")
    except ToolRefused as exc:
        text = f"Refused: {exc.reason}"
    except Exception as exc:  # the MCP server down, a timeout: the person must hear about it
        log.warning("chat_tool_failed", tool=tool, error=str(exc))
        text = f"⚠️ {tool} could not run: {shorten(str(exc), 500)}"
    else:
        text = format_result(tool, args, result.ok, result.output, result.data, result.truncated)
    queue_message(kind=update.platform, address=update.address, text=text, reply_to=update.reply_to, dedupe_key=key)
    return "answered"


def format_result(tool: str, args: dict[str, Any], ok: bool, output: str, data: Any, truncated: bool) -> str:
    where = arguments_text({k: v for k, v in args.items() if k != "tail" and v is not None}) if args else ""
    where = "" if where == "no arguments" else where
    head = f"**{tool}**" + (f" ({where})" if where else "")
    if not ok:
        return f"⚠️ {head} failed:\n```\n{shorten(output, 3000)}\n```"
    rows = _rows(data)
    body = _table(rows) if rows is not None else (output or "(nothing)")
    note = "\n(output truncated)" if truncated else ""
    return f"{head}\n```\n{body}\n```{note}"


def _rows(data: Any) -> list[dict[str, Any]] | None:
    """A list of flat records, whether the tool returned a list or {"items": [...]}-style JSON."""
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        return data
    return None


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={_cell(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def _table(rows: list[dict[str, Any]]) -> str:
    columns = [k for k, v in rows[0].items() if not isinstance(v, dict | list)][:_MAX_COLUMNS] or list(rows[0])[:_MAX_COLUMNS]
    cells = [[shorten(_cell(row.get(c)), 60) for c in columns] for row in rows[:_MAX_ROWS]]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    if len(rows) > _MAX_ROWS:
        lines.append(f"... and {len(rows) - _MAX_ROWS} more")
    return "\n".join(lines)
