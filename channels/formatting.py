"""The neutral markup every message is written in, and the two things each platform needs
from it: rendering with that platform's escaping, and splitting at its length limit.

Neutral markup is deliberately small: `**bold**`, `` `inline code` `` and fenced blocks
(a line starting with ```` ``` ````, optionally with a language, up to a line that is just
```` ``` ````). Everything else is literal text, escaped for the platform, so a pod name or a
log line can never be read as markup (or as an HTML tag, or an @everyone mention).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

_INLINE = re.compile(r"\*\*(?P<bold>[^*\n]+?)\*\*|`(?P<code>[^`\n]+)`")


@dataclass(frozen=True)
class Style:
    """How one platform writes each piece of neutral markup."""

    escape: Callable[[str], str]  # literal prose
    bold: Callable[[str], str]  # receives already-escaped text
    inline_code: Callable[[str], str]  # receives raw text
    fence: Callable[[str, str], str]  # (language, raw body)


def render(text: str, style: Style) -> str:
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    prose: list[str] = []

    def flush() -> None:
        if prose:
            out.append(_render_inline("\n".join(prose), style))
            prose.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is not None:
                flush()
                out.append(style.fence(line[3:].strip(), "\n".join(lines[i + 1 : end])))
                i = end + 1
                continue
        prose.append(line)
        i += 1
    flush()
    return "\n".join(out)


def _render_inline(text: str, style: Style) -> str:
    pieces: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        pieces.append(style.escape(text[position : match.start()]))
        if match["bold"] is not None:
            pieces.append(style.bold(style.escape(match["bold"])))
        else:
            pieces.append(style.inline_code(match["code"]))
        position = match.end()
    pieces.append(style.escape(text[position:]))
    return "".join(pieces)


def split_message(text: str, limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """Split neutral text into parts whose rendered size (`measure`) fits `limit`.

    Splits between lines, never inside a line unless one line alone is too long; a part that
    ends inside a fenced block closes it and the next part reopens it with the same language,
    so every part renders as valid markup on its own.
    """
    if measure(text) <= limit:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    opener: str | None = None  # the ``` line of the fence open at the end of `current`

    def closed(lines: list[str], fence: str | None) -> str:
        return "\n".join(lines) + ("\n```" if fence else "")

    for line in _wrap_long_lines(text.split("\n"), limit, measure):
        fence_after = opener
        if line.startswith("```"):
            fence_after = None if opener is not None and line.strip() == "```" else (line if opener is None else opener)
        if current and measure(closed([*current, line], fence_after)) > limit:
            parts.append(closed(current, opener))
            current = [opener] if opener else []
        current.append(line)
        opener = fence_after
    if current and any(piece.strip() for piece in current if piece != opener):
        parts.append(closed(current, opener))
    return parts


def _wrap_long_lines(lines: list[str], limit: int, measure: Callable[[str], int]) -> list[str]:
    # Room for a fence opener and closer around the line in its part.
    budget = max(limit - 40, 1)
    out: list[str] = []
    for line in lines:
        while measure(line) > budget and len(line) > 1:
            cut = _longest_prefix(line, budget, measure)
            space = line.rfind(" ", int(cut * 0.8), cut)
            cut = space + 1 if space > 0 else cut  # prefer to break between words
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return out


def _longest_prefix(text: str, budget: int, measure: Callable[[str], int]) -> int:
    """The most characters of `text` whose rendering fits `budget` (escaping may grow it)."""
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Words for people ----------------------------------------------------------------------
# Everything below turns what the engine stores (finding types, failure classes, JSON values,
# RCA reports) into plain words, once, for every platform and the console: a platform differs
# only in markup. Nothing here may produce a Python repr: values go through `value_text`.

FINDING_WORDS = {
    "crash_loop": "crash-looping",
    "oom_killed": "killed for running out of memory",
    "not_ready_node": "node not Ready",
    "replication_failure": "replicas not available",
    "image_pull_failure": "image cannot be pulled",
    "unschedulable": "pods cannot be scheduled",
    "probe_failure": "health probes failing",
    "hpa_maxed": "autoscaler at its maximum",
    "failed_job": "job failed",
    "evicted": "pods evicted",
    "high_restart_rate": "restarting often",
    "cluster_unreachable": "cluster unreachable",
}

CLASS_WORDS = {
    "oom_killed": "Out of memory",
    "app_crash": "The application crashes",
    "config_error": "A configuration error",
    "dependency_failure": "A dependency is unreachable",
    "image_pull_error": "The image cannot be pulled",
    "resource_exhaustion": "Not enough resources",
    "node_failure": "The node is failing",
    "probe_failure": "Health probes fail",
    "permission_error": "A permission is missing",
    "bad_rollout": "A bad rollout",
    "unknown": "Cause not determined",
}

SOURCE_WORDS = {
    "log": "container log",
    "previous_log": "log of the previous container",
    "event": "Kubernetes event",
    "status": "pod status",
    "node": "node status",
    "deployment": "deployment status",
    "replicaset": "ReplicaSet",
    "hpa": "autoscaler",
    "job": "job status",
    "metrics": "metrics",
    "tool": "tool result",
}


def words(code: str, vocabulary: dict[str, str]) -> str:
    """The plain words for a code; an unknown code reads as itself with spaces."""
    return vocabulary.get(code) or (code or "").replace("_", " ")


def value_text(value: Any) -> str:
    """Any stored JSON value as a person reads it: never a repr, never `None`."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple | set):
        return ", ".join(value_text(item) for item in value) or "—"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {value_text(item)}" for key, item in value.items()) or "—"
    return str(value)


def arguments_text(arguments: dict[str, Any] | None) -> str:
    return ", ".join(f"{key}={value_text(value)}" for key, value in sorted((arguments or {}).items())) or "no arguments"


def workload_label(kind: str, namespace: str, name: str) -> str:
    """`Deployment shop/cart`, `Node node-4`: no empty path segment (`Node//node-4`) ever."""
    path = f"{namespace}/{name}" if namespace else name
    return f"{kind} {path}".strip() if kind else path


# What a tool call does, in words; the codes follow it where people read them.
TOOL_WORDS = {
    "restart_pod": "Restart the pod {namespace}/{name}",
    "restart_deployment": "Restart the deployment {namespace}/{name}",
    "restart_workload": "Restart every pod of the {kind} {namespace}/{name} (rollout restart)",
    "rollout_history": "Read the rollout history of the deployment {namespace}/{name}",
    "rollout_status": "Read the rollout status of the deployment {namespace}/{name}",
    "delete_pod_force": "Force-delete the pod {namespace}/{name}",
    "query_prometheus": "Query Prometheus: {query}",
    "scale_deployment": "Scale the deployment {namespace}/{name} to {replicas} replicas",
    "rollback_deployment": "Roll back the deployment {namespace}/{name}",
    "set_hpa_max_replicas": "Raise the autoscaler {namespace}/{name} to at most {max_replicas} replicas",
    "cordon_node": "Cordon the node {name}",
    "uncordon_node": "Uncordon the node {name}",
    "drain_node": "Drain the node {name}",
    "patch_memory_limit": "Set the memory limit of {namespace}/{name} to {memory}",
    "describe_pod": "Describe the pod {namespace}/{name}",
    "describe_deployment": "Describe the deployment {namespace}/{name}",
    "describe_node": "Describe the node {name}",
    "get_pod_logs": "Read the logs of the pod {namespace}/{name}",
    "analyze_pod_logs": "Analyse the logs of the pod {namespace}/{name}",
    "list_pods": "List the pods",
    "list_events": "List the events",
}


class _Known(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def action_words(tool: str, arguments: dict[str, Any] | None) -> str:
    """`Restart the deployment shop/cart`; a tool without words (or missing an argument the
    words need) reads as `tool_name (arguments)`."""
    arguments = arguments or {}
    template = TOOL_WORDS.get(tool)
    if template:
        known = {k: value_text(v) for k, v in arguments.items()}
        if tool == "patch_memory_limit" and "name" not in known:
            known["name"] = known.get("pod", "")
        try:
            return template.format_map(_Known(known))
        except KeyError:
            pass
    name = " ".join(tool.replace("_", " ").split()).capitalize()
    return f"{name} ({arguments_text(arguments)})"


def incident_workload(incident: Any) -> str:
    if incident.fingerprint and not incident.workload_name:
        return f"alert {incident.alertname or incident.fingerprint[:12]}"
    return workload_label(incident.workload_kind, incident.namespace, incident.workload_name)


def incident_what(incident: Any) -> str:
    if incident.primary_type:
        return words(incident.primary_type, FINDING_WORDS)
    return incident.alertname or "incident"


def strip_prefix(text: str, *prefixes: str) -> str:
    """`text` without a leading `<prefix>: ` (a summary that repeats the workload it is about)."""
    for prefix in prefixes:
        if prefix and text.startswith(prefix + ": "):
            return text[len(prefix) + 2 :]
    return text


# --- The RCA report ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExcerptLine:
    number: int | None
    text: str
    highlighted: bool


@dataclass(frozen=True)
class Evidence:
    source: str  # plain words: "container log"
    where: str  # "line 12", "status.containerStatuses[0].state.waiting.reason", "3 times"
    detail: str
    excerpt: list[ExcerptLine]  # log evidence: the lines around the matching one


@dataclass(frozen=True)
class Action:
    text: str
    playbook: str


@dataclass(frozen=True)
class Report:
    failure_class: str
    class_words: str
    meaning: str  # what the class means (the RCA's own vocabulary)
    root_cause: str
    confidence: int | None  # percent
    evidence: list[Evidence]
    actions: list[Action]
    related: list[str]
    method: str  # "the LLM (model)" or "the built-in rules"
    note: str


def _excerpt(item: dict[str, Any]) -> list[ExcerptLine]:
    line = item.get("line")
    excerpt = item.get("excerpt")
    if isinstance(excerpt, dict) and isinstance(excerpt.get("lines"), list):
        first = excerpt.get("first") if isinstance(excerpt.get("first"), int) else None
        return [
            ExcerptLine(first + i if first is not None else None, str(text),
                        first is not None and first + i == line)
            for i, text in enumerate(excerpt["lines"])
        ]
    if item.get("source") in ("log", "previous_log") and item.get("detail"):
        return [ExcerptLine(line if isinstance(line, int) else None, str(item["detail"]), True)]
    return []


def _evidence(item: Any) -> Evidence | None:
    if isinstance(item, str):
        return Evidence("", "", item, [])
    if not isinstance(item, dict):
        return None
    source = str(item.get("source") or "")
    where = []
    if isinstance(item.get("line"), int):
        where.append(f"line {item['line']}")
    if item.get("field"):
        where.append(str(item["field"]))
    if isinstance(item.get("count"), int) and item["count"] > 1:
        where.append(f"seen {item['count']} times")
    if item.get("tool"):  # an investigation's tool call: what was asked, as a person reads it
        arguments = item.get("arguments") if isinstance(item.get("arguments"), dict) else {}
        where.append(f"{item['tool']}(" + ", ".join(f"{k}={value_text(v)}" for k, v in sorted(arguments.items())) + ")")
    return Evidence(words(source, SOURCE_WORDS), ", ".join(where), value_text(item.get("detail") or ""), _excerpt(item))


def _merged(evidence: list[Evidence]) -> list[Evidence]:
    """The same line seen in two places (the log and the previous container's log) is shown once,
    naming both places."""
    out: list[Evidence] = []
    for item in evidence:
        twin = next((i for i, e in enumerate(out) if e.detail == item.detail and e.detail), None)
        if twin is None:
            out.append(item)
        elif item.source and item.source not in out[twin].source:
            first = out[twin]
            out[twin] = Evidence(f"{first.source} and {item.source}", first.where, first.detail, first.excerpt)
    return out


def _action(item: Any) -> Action | None:
    if isinstance(item, str):
        return Action(item, "")
    if isinstance(item, dict):
        text = item.get("action") or item.get("description") or item.get("text")
        if text:
            return Action(value_text(text), str(item.get("playbook") or ""))
    return None


def repeats(detail: str, seen: list[str]) -> bool:
    """Whether `detail` says what one of `seen` already says: its message (after a leading
    `Reason: `) quoted in full, or a long stretch of it (a registry's error is quoted by the
    container status, the event and the root cause, each with its own prefix and ending)."""
    message = detail.split(": ", 1)[-1].strip()
    if not message:
        return False
    for earlier in seen:
        if message in earlier:
            return True
        match = SequenceMatcher(None, message, earlier, autojunk=False).find_longest_match(
            0, len(message), 0, len(earlier))
        if match.size >= min(40, max(len(message) * 0.6, 20)):
            return True
    return False


def _meaning(failure_class: str) -> str:
    from agents.rca.vocabulary import VOCABULARY

    found = next((c.meaning for c in VOCABULARY if c.name == failure_class), "")
    return found[:1].upper() + found[1:] + "." if found else ""


def _method(report: dict[str, Any]) -> str:
    if report.get("method") != "llm":
        return "the built-in rules"
    model = report.get("model")
    text = f"the LLM ({model})" if model else "the LLM"
    calls = (report.get("investigation") or {}).get("calls") if isinstance(report.get("investigation"), dict) else None
    if isinstance(calls, list) and calls:
        text += f", after {len(calls)} tool call{'s' if len(calls) != 1 else ''}"
    return text


def rca_report(report: Any) -> Report | None:
    """The stored report (the RCA engine's JSON) as a `Report` for people; None when empty."""
    if not isinstance(report, dict) or not report:
        return None
    failure_class = str(report.get("failure_class") or "unknown")
    confidence = report.get("confidence")
    percent = round(confidence * 100) if isinstance(confidence, int | float) and 0 <= confidence <= 1 else None
    actions = report.get("recommended_actions") or report.get("recommendations") or []
    return Report(
        failure_class=failure_class,
        class_words=words(failure_class, CLASS_WORDS),
        meaning=_meaning(failure_class),
        root_cause=value_text(report.get("root_cause") or report.get("summary") or ""),
        confidence=percent,
        evidence=_merged([e for e in (_evidence(i) for i in (report.get("evidence") or [])) if e is not None]),
        actions=[a for a in (_action(i) for i in (actions if isinstance(actions, list) else [])) if a is not None],
        related=[value_text(r) for r in (report.get("related_resources") or []) if r],
        method=_method(report),
        note=value_text(" ".join(str(part) for part in (report.get("note"), report.get("last_fix")) if part)),
    )


def rca_text(report: Report, *, evidence_limit: int = 4) -> str:
    """The report in neutral markup, for chat: plain words first, the codes after."""
    confidence = f", {report.confidence}% confident" if report.confidence is not None else ""
    lines = [f"**{report.class_words}** (`{report.failure_class}`{confidence})"]
    if report.root_cause:
        lines.append(shorten(report.root_cause, 1200))
    shown = 0
    seen = [report.root_cause]
    for item in report.evidence:
        if shown == evidence_limit:
            break
        # Evidence the root cause (or an earlier line) already quotes would only repeat it: an
        # image-pull error carries the registry's message in the cause, the status and the event.
        if repeats(item.detail, seen):
            continue
        seen.append(item.detail)
        if shown == 0:
            lines.append("**Evidence**")
        where = f" ({item.where})" if item.where else ""
        lines.append(f"- {item.source or 'evidence'}{where}: {shorten(item.detail, 300)}")
        shown += 1
    if report.actions:
        lines.append("**Recommended**")
        for action in report.actions[:5]:
            playbook = f" (playbook `{action.playbook}`)" if action.playbook else ""
            lines.append(f"- {shorten(action.text, 300)}{playbook}")
    if report.note:
        lines.append(report.note)
    return "\n".join(lines)
