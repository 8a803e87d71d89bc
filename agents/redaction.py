"""Redaction: nothing secret leaves for the LLM, and nothing secret lands in our logs.

A `Redactor` replaces secrets (passwords, tokens, bearer/basic credentials, private keys,
credentials in URLs, well-known API key formats) and emails with placeholders such as
`[PASSWORD_1]`, the same value always getting the same placeholder, so the model can still
reason ("the same token appears in both lines"). With `LLM_REDACT_RESOURCE_NAMES`, known
resource names (namespaces, workloads, pods, nodes: given by the caller from the data it sends)
become `anon-ns-1`, `anon-res-1`, which stay valid Kubernetes names so the model can pass
them back as tool arguments.

`restore()` puts identifiers (emails, resource names) back into what the model wrote and into
its tool arguments. Secret values are never put back: an answer that quotes a password shows
`[PASSWORD_1]`, since the answer goes to a chat room. `redact_log_event` is the structlog
processor that applies the same secret patterns to every log line.

This module imports nothing of Django's, so logging can use it before apps are loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# Secret kinds are never restored; identifier kinds are.
SECRET_KINDS = frozenset({"PRIVATE_KEY", "TOKEN", "PASSWORD", "SECRET", "API_KEY", "CREDENTIAL"})

_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----.*?(?:-----END \1-----|\Z)", re.DOTALL
)
# "Authorization: Bearer xyz", "bearer xyz", "Basic dXNlcjpwYXNz" (Basic needs a digit or base64
# padding so that "basic functionality" stays readable).
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic(?=\s+\S*[0-9=+/]))(\s+)([A-Za-z0-9._~+/=-]{8,})")
# user:password@ in URLs (postgres://app:s3cret@db/...)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)([^\s@/]+)(@)")
# Key formats that are secret wherever they appear.
_KNOWN_TOKENS: list[tuple[str, re.Pattern[str]]] = [
    ("TOKEN", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b")),
    ("TOKEN", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{40,}\b")),
    ("TOKEN", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("TOKEN", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b")),  # JWT
    ("TOKEN", re.compile(r"\b\d{8,10}:[A-Za-z0-9_-]{35}\b")),  # Telegram bot token
    ("API_KEY", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b")),
    ("API_KEY", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("API_KEY", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
]
# key=value / key: value / "key": "value" where the key says it is secret.
_SECRET_KEY_NAMES = r"(?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|client[_-]?secret|credentials?|auth[_-]?token|session[_-]?id|cookie)"
# The key's prefix (DB_ in DB_PASSWORD) is not part of the match: starting at the keyword keeps
# the scan linear (a leading [\w.-]* would be retried at every character of every word).
_KEY_VALUE = re.compile(r"(?i)(" + _SECRET_KEY_NAMES + r"[\w.-]*[\"']?\s*[:=]\s*[\"']?)([^\s\"',;&}]{3,})")
_KEY_QUOTED_VALUE = re.compile(r"(?i)(" + _SECRET_KEY_NAMES + r"[\w.-]*[\"']?\s*[:=]\s*)([\"'])([^\"'\n]{3,}?)(\2)")
# Keys that name a count ("tokens", "prompt_tokens", "token_count"): a number after them is no secret.
_COUNT_KEY = re.compile(r"(?i)^tokens?(?:_count|_used)|^tokens\b|^tokens[\"']")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# A cheap test for "this line may hold a secret": every pattern above needs one of these.
# Plain substring tests (memchr-fast), not a case-insensitive regex alternation (~20x slower).
_TRIGGER_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "bearer", "basic", "cookie", "session", "cred",
                  "@", "://", "github_pat", "sk-")
_TRIGGER_CASED = ("eyJ", "xox", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "AKIA", "ASIA", "AIza", ":AA")


def _may_hold_secret(line: str) -> bool:
    lower = line.lower()
    return any(word in lower for word in _TRIGGER_WORDS) or any(word in line for word in _TRIGGER_CASED)


_PLACEHOLDER = re.compile(r"\[(?:PRIVATE_KEY|TOKEN|PASSWORD|SECRET|API_KEY|CREDENTIAL|EMAIL)_\d+\]|anon-(?:ns|res)-\d+(?![0-9])")
_NAME_CHARS = "A-Za-z0-9"


def _kind_for_key(key: str) -> str:
    lowered = key.lower()
    if "pass" in lowered or "pwd" in lowered:
        return "PASSWORD"
    if "key" in lowered:
        return "API_KEY"
    if "token" in lowered or "cookie" in lowered or "session" in lowered:
        return "TOKEN"
    if "cred" in lowered:
        return "CREDENTIAL"
    return "SECRET"


class Redactor:
    """One mapping of values to placeholders, kept for one exchange with the model."""

    def __init__(self, *, resource_names: bool = False) -> None:
        self.redact_resource_names = resource_names
        self._by_value: dict[str, str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self._names: dict[str, str] = {}  # resource name -> "ns" | "res"
        self._names_pattern: re.Pattern[str] | None = None

    @property
    def replaced(self) -> int:
        return len(self._by_value)

    def _placeholder(self, kind: str, value: str) -> str:
        existing = self._by_value.get(value)
        if existing is not None:
            return existing
        self._counters[kind] = self._counters.get(kind, 0) + 1
        number = self._counters[kind]
        placeholder = f"anon-{kind}-{number}" if kind in ("ns", "res") else f"[{kind}_{number}]"
        self._by_value[value] = placeholder
        self._by_placeholder[placeholder] = value
        return placeholder

    def add_names(self, names: Iterable[str], *, namespace: bool = False) -> None:
        """Resource names to anonymise (only with resource-name redaction on)."""
        if not self.redact_resource_names:
            return
        for name in names:
            # Very short or generic names ("default", "app") would mangle ordinary words.
            if name and len(name) >= 4 and name not in {"default", "kube-system"}:
                self._names.setdefault(name, "ns" if namespace else "res")
        self._names_pattern = None

    def add_names_from(self, data: Any) -> None:
        """Collect namespace/name fields from API-shaped JSON (tool data, RCA bundles)."""
        if not self.redact_resource_names:
            return
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, Mapping):
                for key, value in item.items():
                    if isinstance(value, str) and key in ("name", "podName", "nodeName", "workload", "pod", "node"):
                        self.add_names([value])
                    elif isinstance(value, str) and key == "namespace":
                        self.add_names([value], namespace=True)
                    elif isinstance(value, Mapping | list):
                        stack.append(value)
            elif isinstance(item, list):
                stack.extend(item)

    def redact(self, text: str) -> str:
        if not text:
            return text
        if "-----BEGIN" in text:
            text = _PRIVATE_KEY.sub(lambda m: self._placeholder("PRIVATE_KEY", m.group(0)), text)
        # Line by line, and only lines with a trigger: in a log, secrets sit on a few lines, and a
        # cheap literal scan spares the other 99% the dozen patterns below.
        lines = text.split("\n")
        for index, line in enumerate(lines):
            if _may_hold_secret(line):
                lines[index] = self._redact_line(line)
        text = "\n".join(lines)
        if self._names:
            text = self._names_regex().sub(lambda m: self._placeholder(self._names[m.group(0)], m.group(0)), text)
        return text

    def _redact_line(self, text: str) -> str:
        text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + self._placeholder("PASSWORD", m.group(2)) + m.group(3), text)
        text = _AUTH_SCHEME.sub(lambda m: m.group(1) + m.group(2) + self._placeholder("TOKEN", m.group(3)), text)
        for kind, pattern in _KNOWN_TOKENS:
            text = pattern.sub(lambda m, kind=kind: self._placeholder(kind, m.group(0)), text)
        text = _KEY_QUOTED_VALUE.sub(self._key_quoted_value, text)
        text = _KEY_VALUE.sub(self._key_value, text)
        if "@" in text:
            text = _EMAIL.sub(lambda m: self._placeholder("EMAIL", m.group(0)), text)
        return text

    def _key_value(self, match: re.Match[str]) -> str:
        value = match.group(2)
        if _PLACEHOLDER.fullmatch(value):  # already replaced by a more specific pattern
            return match.group(0)
        if value.isdigit() and _COUNT_KEY.search(match.group(1)):
            return match.group(0)  # 'tokens': 1066 is a count of LLM tokens, not a secret
        return match.group(1) + self._placeholder(_kind_for_key(match.group(1)), value)

    def _key_quoted_value(self, match: re.Match[str]) -> str:
        value = match.group(3)
        if _PLACEHOLDER.fullmatch(value):
            return match.group(0)
        return match.group(1) + match.group(2) + self._placeholder(_kind_for_key(match.group(1)), value) + match.group(4)

    def _names_regex(self) -> re.Pattern[str]:
        if self._names_pattern is None:
            # Longest first, so a pod name wins over the deployment name it starts with.
            alternatives = "|".join(re.escape(n) for n in sorted(self._names, key=len, reverse=True))
            self._names_pattern = re.compile(rf"(?<![{_NAME_CHARS}])(?:{alternatives})(?![{_NAME_CHARS}])")
        return self._names_pattern

    def redact_json(self, data: Any) -> Any:
        """Redact every string in a JSON-shaped value (keys stay: they are the schema)."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, Mapping):
            return {key: self.redact_json(value) for key, value in data.items()}
        if isinstance(data, list):
            return [self.redact_json(item) for item in data]
        return data

    def restore(self, text: str) -> str:
        """Put identifiers back; secrets stay masked."""
        if not text or not self._by_placeholder:
            return text

        def put_back(match: re.Match[str]) -> str:
            placeholder = match.group(0)
            value = self._by_placeholder.get(placeholder)
            if value is None:
                return placeholder
            kind = placeholder.strip("[]").rsplit("_", 1)[0]
            return placeholder if kind in SECRET_KINDS else value

        return _PLACEHOLDER.sub(put_back, text)

    def restore_json(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.restore(data)
        if isinstance(data, Mapping):
            return {key: self.restore_json(value) for key, value in data.items()}
        if isinstance(data, list):
            return [self.restore_json(item) for item in data]
        return data


def redact_secrets(text: str) -> str:
    """Secrets and emails out of one string, with a throwaway mapping (for logs)."""
    return Redactor().redact(text)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_secrets(value) if _may_hold_secret(value) else value
    if depth < 3 and isinstance(value, Mapping):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if depth < 3 and isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    return value


_LOG_SECRET_KEYS = re.compile(r"(?i)password|passwd|secret|token|api_?key|authorization|cookie|private_key")


def redact_log_event(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask secrets in every value of a log event (not the key names)."""
    for key, value in event_dict.items():
        if key in ("timestamp", "level", "logger", "request_id", "task_id"):
            continue
        if isinstance(value, str) and value and _LOG_SECRET_KEYS.search(key) and not key.endswith(("_id", "_count", "tokens")):
            # `log.info("x", password=...)`: the whole value is the secret.
            event_dict[key] = "[REDACTED]"
        else:
            event_dict[key] = _redact_value(value)
    return event_dict
