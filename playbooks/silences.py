"""Silences: Alertmanager-style matchers over incidents, and what they hold back.

Matchers are `name op "value"` with op `=`, `!=`, `=~`, `!~` (regexes match the whole value, as
Alertmanager's do). Names: `cluster`, `namespace`, `kind` (the workload's), `workload` (its name),
`finding_type` (any of the incident's), `alertname` (any alert firing for it); any other name is a
workload label (`app="web"`). A missing value is the empty string, so `app!="web"` matches a
workload without the label. At least one matcher must not match the empty string, so no silence
quiets everything by accident.

Lifecycle (all in `playbooks.services.silences`): an incident that opens while a silence matches
it is recorded with a timeline line and `silenced_by`, but `incident_opened` is not sent: no
notification, no run. When the silence ends (the beat sweep, or the task queued for its end)
and the incident is still open, it is announced as if it had just opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

INCIDENT_NAMES = ("cluster", "namespace", "kind", "workload", "finding_type", "alertname")
ALIASES = {"type": "finding_type", "workload_kind": "kind", "workload_name": "workload", "ns": "namespace"}
OPS = ("=", "!=", "=~", "!~")
MAX_MATCHERS = 20
MAX_VALUE = 300
_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# name op "value" | name op value-without-spaces-or-commas
_MATCHER = re.compile(r'\s*(?P<name>[A-Za-z0-9_./-]+)\s*(?P<op>=~|!~|!=|=)\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s,"]*))\s*(?:,|$)')
_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
MAX_DURATION = timedelta(days=90)


class MatcherError(ValueError):
    """A matcher (or a duration) a person typed is not valid; the message says which and why."""


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    def text(self) -> str:
        value = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{value}"'

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    def test(self, values: list[str]) -> bool:
        values = values or [""]
        if self.op in ("=", "!="):
            hit = any(v == self.value for v in values)
        else:
            hit = any(re.fullmatch(self.value, v) is not None for v in values)
        return hit if self.op in ("=", "=~") else not hit

    def matches_empty(self) -> bool:
        return self.test([""])


def _matcher(name: Any, op: Any, value: Any, where: str) -> Matcher:
    if not isinstance(name, str) or not name:
        raise MatcherError(f"{where}: a matcher needs a name")
    name = ALIASES.get(name, name)
    if name not in INCIDENT_NAMES and not _LABEL_NAME.fullmatch(name):
        raise MatcherError(f"{where}: {name!r} is neither one of {', '.join(INCIDENT_NAMES)} nor a label name")
    if op not in OPS:
        raise MatcherError(f"{where}: the operator must be one of {', '.join(OPS)}, not {op!r}")
    if not isinstance(value, str):
        raise MatcherError(f"{where}: the value of {name} must be text")
    if len(value) > MAX_VALUE:
        raise MatcherError(f"{where}: the value of {name} is longer than {MAX_VALUE} characters")
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise MatcherError(f"{where}: {value!r} is not a valid regular expression ({exc})") from exc
    return Matcher(name, op, value)


def parse_matchers(value: Any) -> list[Matcher]:
    """Matchers from their stored form (a list of {name, op, value}) or from text such as
    `namespace="shop", workload=~"cart|web"`. Raises MatcherError naming the bad part."""
    if isinstance(value, str):
        matchers = _parse_text(value)
    elif isinstance(value, list):
        matchers = []
        for index, item in enumerate(value, 1):
            if not isinstance(item, dict):
                raise MatcherError(f"matcher {index}: expected name, op and value")
            matchers.append(_matcher(item.get("name"), item.get("op"), item.get("value"), f"matcher {index}"))
    else:
        raise MatcherError("matchers must be a list or text such as namespace=\"shop\"")
    if not matchers:
        raise MatcherError('a silence needs at least one matcher, e.g. namespace="shop"')
    if len(matchers) > MAX_MATCHERS:
        raise MatcherError(f"a silence takes at most {MAX_MATCHERS} matchers")
    if all(m.matches_empty() for m in matchers):
        raise MatcherError("at least one matcher must match something other than an empty value, "
                           "or the silence would quiet every incident")
    return matchers


def _parse_text(text: str) -> list[Matcher]:
    text = text.strip().removeprefix("{").removesuffix("}").strip()
    matchers: list[Matcher] = []
    position = 0
    while position < len(text):
        found = _MATCHER.match(text, position)
        if found is None or found.end() == position:
            raise MatcherError(f"cannot read a matcher at {text[position:position + 40]!r}: "
                               'write name="value", name!="value", name=~"regex" or name!~"regex"')
        raw = found["quoted"]
        value = re.sub(r"\\(.)", r"\1", raw) if raw is not None else found["bare"]
        matchers.append(_matcher(found["name"], found["op"], value, f"matcher {len(matchers) + 1}"))
        position = found.end()
    return matchers


def matchers_text(matchers: Any) -> str:
    try:
        return ", ".join(m.text() for m in parse_matchers(matchers))
    except MatcherError:
        return "(invalid matchers)"


def workload_matchers(namespace: str, name: str, kind: str = "") -> list[dict[str, str]]:
    found = [Matcher("namespace", "=", namespace).as_dict(), Matcher("workload", "=", name).as_dict()]
    if kind:
        found.append(Matcher("kind", "=", kind).as_dict())
    return found


def incident_values(incident: Any, cluster_names: dict[int, str] | None = None) -> dict[str, list[str]]:
    from playbooks.rules import _labels_of

    if cluster_names is not None:
        cluster = cluster_names.get(incident.cluster_id or 0, "")
    else:
        cluster = incident.cluster.name if incident.cluster_id else ""
    types = sorted({*(incident.finding_types or []), *([incident.primary_type] if incident.primary_type else [])})
    alerts = sorted({*([incident.alertname] if incident.alertname else []),
                     *(str(v) for v in (incident.alerts or {}).values())})
    values: dict[str, list[str]] = {f"label:{k}": [v] for k, v in _labels_of(incident).items()}
    values.update({
        "cluster": [cluster], "namespace": [incident.namespace or ""], "kind": [incident.workload_kind or ""],
        "workload": [incident.workload_name or ""], "finding_type": types, "alertname": alerts,
    })
    return values


def matches(matchers: Any, values: dict[str, list[str]]) -> bool:
    try:
        parsed = parse_matchers(matchers)
    except MatcherError:
        return False  # a row edited into nonsense silences nothing
    return all(m.test(values.get(m.name if m.name in INCIDENT_NAMES else f"label:{m.name}", [])) for m in parsed)


def parse_duration(text: str) -> timedelta:
    """`90m`, `2h`, `1h30m`, `3d`: a silence's length. Raises MatcherError for anything else."""
    found = _DURATION.fullmatch((text or "").strip().lower())
    if not text or found is None or not any(found.groupdict().values()):
        raise MatcherError(f"{text!r} is not a duration: write e.g. 30m, 2h, 1h30m or 3d")
    parts = {k: int(v or 0) for k, v in found.groupdict().items()}
    duration = timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])
    if duration < timedelta(minutes=1):
        raise MatcherError(f"{text!r} is shorter than a minute")
    if duration > MAX_DURATION:
        raise MatcherError(f"{text!r} is longer than {MAX_DURATION.days} days")
    return duration


def duration_words(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in parts if p) or "under a minute"


def when_words(moment: datetime, now: datetime | None = None) -> str:
    """`14:00 UTC` today, else `Dec 3 14:00 UTC`."""
    now = now or timezone.now()
    moment, now = moment.astimezone(UTC), now.astimezone(UTC)
    if moment.date() == now.date():
        return f"{moment:%H:%M} UTC"
    return f"{moment:%b} {moment.day} {moment:%H:%M} UTC"


def incident_matchers(incident: Any) -> list[dict[str, str]]:
    """Matchers for "silence this workload": its namespace, name and kind; an alert that names no
    workload by its alert name."""
    if incident.workload_name and not (incident.fingerprint and incident.workload_kind == ""):
        found = [Matcher("workload", "=", incident.workload_name).as_dict(),
                 Matcher("kind", "=", incident.workload_kind).as_dict()]
        if incident.namespace:
            found.insert(0, Matcher("namespace", "=", incident.namespace).as_dict())
        return found
    return [Matcher("alertname", "=", incident.alertname or "").as_dict()]
