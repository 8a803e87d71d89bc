"""Log patterns: what a container's log says went wrong, as pure functions over text.

`analyze_logs(text)` finds the known failure signatures (the seed's 14 plus missing
configuration, permission denied and explained exit codes), each with its 1-based line
number. It is linear in the size of the log: each pattern declares the literal keywords every match
contains, the text is scanned for those with ``str.find`` (C, memchr-fast), and the regular
expressions run only on the lines that hold one. The expressions themselves have no nested or
unbounded quantifiers between literals (gaps are bounded, e.g. ``[^\\n]{0,100}``), so even a
line that holds a keyword is matched in time linear in its length. 10 MB of logs is the
design size (see bench/log_patterns.py).
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from typing import Any

# Matches kept per pattern (all are counted): a log of 100k identical timeouts needs a count
# and a few examples, not 100k rows in an RCA prompt.
MAX_MATCHES_PER_PATTERN = 20
MAX_LINE_TEXT = 500


@dataclass(frozen=True)
class LogPattern:
    name: str
    category: str
    severity: str
    regex: str
    explanation: str
    # Lower-case literals of which every match of `regex` contains at least one: the scan looks
    # for these with str.find (memchr-fast, linear) and runs `regex` only on lines that have one.
    keywords: tuple[str, ...] = ()


PATTERNS: tuple[LogPattern, ...] = (
    LogPattern(
        "oom", "memory", "critical",
        r"OutOfMemoryError|(?i:out of memory)|OOMKilled|(?i:oom[- ]kill)|Cannot allocate memory|\bMemoryError\b"
        r"|JavaScript heap out of memory|runtime: out of memory",
        "The process ran out of memory: raise the container's memory limit or find the leak.",
        ("outofmemory", "out of memory", "oomkilled", "oom-kill", "oom kill", "cannot allocate memory", "memoryerror"),
    ),
    LogPattern(
        "segfault", "crash", "critical",
        r"(?i:segmentation fault)|SIGSEGV|\bsegfault\b|\(core dumped\)",
        "The process crashed on an invalid memory access (native code, a bad library or corrupt memory).",
        ("segmentation fault", "sigsegv", "segfault", "(core dumped)"),
    ),
    LogPattern(
        "panic", "crash", "critical",
        r"(?:^|\s)panic: |(?:^|\s)fatal error: |goroutine \d{1,10} \[running\]|thread '[^'\n]{0,100}' panicked at|Kernel panic",
        "The program panicked (Go or Rust): the stack trace after this line names the failing code.",
        ("panic: ", "fatal error: ", "goroutine ", "panicked at", "kernel panic"),
    ),
    LogPattern(
        "java_stack_trace", "exception", "error",
        r"Exception in thread \"|(?:^|\s)at [\w$.<>]{1,300}\((?:[\w$]{1,200}\.(?:java|kt|scala):\d{1,7}|Native Method|Unknown Source)\)"
        r"|(?:^|\s)Caused by: [\w$.]{1,300}(?:Exception|Error)",
        "A Java/JVM exception with its stack trace: the first 'at' line in application code is the culprit.",
        ('exception in thread "', ".java:", ".kt:", ".scala:", "native method", "unknown source", "caused by: "),
    ),
    LogPattern(
        "unhandled_exception", "exception", "error",
        r"Unhandled [Ee]xception[.:] {0,2}System\.[\w.]{1,200}|UnhandledPromiseRejection"
        r"|(?:^|\s)(?:TypeError|ReferenceError|RangeError|SyntaxError): |\b(?:NoMethodError|NameError|ArgumentError|LoadError)\b|rake aborted!",
        "An uncaught exception ended the program (.NET, Node.js or Ruby): the lines after it name the failing code.",
        ("unhandled exception", "unhandledpromiserejection", "typeerror: ", "referenceerror: ", "rangeerror: ", "syntaxerror: ",
         "nomethoderror", "nameerror", "argumenterror", "loaderror", "rake aborted!"),
    ),
    LogPattern(
        "python_traceback", "exception", "error",
        r"Traceback \(most recent call last\):",
        "An uncaught Python exception: the last line of the traceback names it.",
        ("traceback (most recent call last):",),
    ),
    LogPattern(
        "connection_refused", "network", "error",
        r"(?i:connection refused)|ECONNREFUSED",
        "Nothing listens at the address it connects to: the dependency is down, not ready, or the address/port is wrong.",
        ("connection refused", "econnrefused"),
    ),
    LogPattern(
        "timeout", "network", "warning",
        r"(?i:timed out)|(?i:deadline exceeded)|ETIMEDOUT|(?i:i/o timeout)|TimeoutError|TimeoutException"
        r"|(?i:timeout (?:exceeded|expired|error|while))|(?i:connection timeout)",
        "An operation timed out: a slow or unreachable dependency, a network policy, or a timeout set too low.",
        ("timed out", "deadline exceeded", "etimedout", "timeout"),
    ),
    LogPattern(
        "dns_failure", "network", "error",
        r"no such host|Name or service not known|Temporary failure in name resolution|getaddrinfo (?:ENOTFOUND|EAI_AGAIN)"
        r"|(?i:could not resolve host)|NXDOMAIN|UnknownHostException|server misbehaving|(?i:name resolution failed)"
        r"|Name does not resolve|host not found in (?:upstream|resolver)",
        "A host name did not resolve: check the service name and namespace, and that CoreDNS is healthy.",
        ("no such host", "name or service not known", "temporary failure in name resolution", "getaddrinfo ", "could not resolve host", "nxdomain", "unknownhostexception", "server misbehaving", "name resolution failed",
         "name does not resolve", "host not found in "),
    ),
    LogPattern(
        "tls_error", "security", "error",
        r"x509: |(?i:certificate (?:has expired|is not valid|signed by unknown authority|verify failed))"
        r"|CERTIFICATE_VERIFY_FAILED|SSLError|SSLHandshakeException|(?i:tls: handshake failure)"
        r"|(?i:tls handshake (?:timeout|error))|PKIX path building failed",
        "TLS failed: an expired or untrusted certificate, a wrong CA bundle, or a protocol mismatch.",
        ("x509: ", "certificate ", "certificate_verify_failed", "sslerror", "sslhandshakeexception", "tls: handshake failure", "tls handshake ", "pkix path building failed"),
    ),
    LogPattern(
        "auth_failure", "auth", "error",
        r"(?i:\bunauthori[sz]ed\b)|401 Unauthorized|403 Forbidden|(?i:authentication failed)"
        r"|(?i:invalid (?:credentials|token|api[ _-]?key|password))|(?i:access denied for user)"
        r"|(?i:password authentication failed)|(?i:login failed for user)",
        "Credentials were refused: a wrong, expired or missing secret, or a missing role/permission.",
        ("unauthori", "403 forbidden", "authentication failed", "invalid credentials", "invalid token", "invalid api", "invalid password", "access denied for user", "login failed for user"),
    ),
    LogPattern(
        "disk_full", "storage", "critical",
        r"(?i:no space left on device)|ENOSPC|(?i:disk quota exceeded)|(?i:\bdisk (?:is )?full\b)",
        "The disk or volume is full: free space, grow the volume, or fix what writes without bound.",
        ("no space left on device", "enospc", "disk quota exceeded", "disk full", "disk is full"),
    ),
    LogPattern(
        "file_not_found", "filesystem", "error",
        r"No such file or directory|FileNotFoundError|FileNotFoundException|ENOENT\b|(?i:cannot find the file)",
        "A file the program needs is missing: a volume not mounted, a ConfigMap key not projected, or a wrong path.",
        ("no such file or directory", "filenotfound", "enoent", "cannot find the file"),
    ),
    LogPattern(
        "port_in_use", "network", "error",
        r"(?i:address already in use)|EADDRINUSE|(?i:port is already allocated)",
        "The port is already taken: another process or container in the pod listens on it.",
        ("address already in use", "eaddrinuse", "port is already allocated"),
    ),
    LogPattern(
        "database_error", "database", "error",
        r"(?i:(?:psycopg2?|sqlalchemy|pymysql|mysql|postgres(?:ql)?|mongo(?:db)?|redis|sqlite3?)[\w.]{0,40}(?:error|exception))"
        r"|FATAL: {1,2}(?:database|role|password|sorry, too many clients)|SQLSTATE\[|(?i:deadlock detected)"
        r"|(?i:too many connections)|(?i:could not connect to server)|Communications link failure|ORA-\d{5}",
        "The database refused or failed a request: check it is up, reachable, and that the credentials and schema match.",
        ("psycopg", "sqlalchemy", "pymysql", "mysql", "postgres", "mongo", "redis", "sqlite", "fatal: ", "sqlstate[", "deadlock detected", "too many connections", "could not connect to server", "communications link failure", "ora-"),
    ),
    LogPattern(
        "missing_config", "config", "error",
        r"KeyError: '[A-Z][A-Z0-9_]{1,100}'"
        r"|(?i:env(?:ironment)? variable [^\n]{0,60}?(?:not set|required|missing|undefined))"
        r"|(?i:(?:missing|required) (?:environment variable|env var|config(?:uration)? (?:key|file|value|option)))"
        r"|(?i:config(?:uration)? file [^\n]{0,120}?not found)|couldn't find key [^\n]{0,100}? in (?:ConfigMap|Secret)"
        r"|(?:secret|configmap) \"[^\"\n]{1,253}\" not found"
        r"|(?i:is a required (?:env(?:ironment)? )?variable)|(?i:bootstrap checks? failed)",
        "A required environment variable or configuration is missing: check the Deployment's env, ConfigMaps and Secrets.",
        ("keyerror: '", "environment variable", "env variable", "missing environment", "required environment", "missing env var", "required env var", "missing config", "required config", "config file", "configuration file", "couldn't find key ", 'secret "', 'configmap "', "is a required ", "bootstrap check"),
    ),
    LogPattern(
        "permission_denied", "permissions", "error",
        r"(?i:permission denied)|EACCES|(?i:operation not permitted)|\bEPERM\b|PermissionError|AccessDeniedException"
        r"|(?i:read-only file system)|\bEROFS\b",
        "The process lacks a permission: file ownership vs. the pod's securityContext (runAsUser, fsGroup), or a read-only filesystem.",
        ("permission denied", "eacces", "operation not permitted", "eperm", "permissionerror", "accessdeniedexception", "read-only file system", "erofs"),
    ),
    LogPattern(
        "exit_code", "exit", "error",
        r"(?i:exit(?:ed)?(?: with)? (?:status|code)[ :=]{0,3}(?P<code>\d{1,3})\b)",
        "",  # explained from the code itself
        ("exit status", "exit code", "exited status", "exited code", "exit with status", "exit with code", "exited with status", "exited with code"),
    ),
)

_EXPLICIT_EXIT_CODES: dict[int, str] = {
    0: "exit code 0: the process finished successfully (a container that should keep running exited on its own)",
    1: "exit code 1: the application failed with a general error; its last log lines say why",
    2: "exit code 2: misuse of a command or invalid arguments (often a bad flag in the container's command)",
    125: "exit code 125: the container runtime could not run the container (bad runtime options)",
    126: "exit code 126: the command was found but cannot be executed (not executable, wrong architecture, or permission)",
    127: "exit code 127: command not found (a wrong command/entrypoint, or the binary is missing from the image)",
    128: "exit code 128: invalid exit argument",
    130: "exit code 130: interrupted by SIGINT (Ctrl-C)",
    134: "exit code 134: aborted by SIGABRT (a failed assertion or a library detecting corruption)",
    137: "exit code 137: killed by SIGKILL: the kernel's OOM killer (memory limit) or kubelet after the grace period (failed liveness probe, pod deletion)",
    139: "exit code 139: segmentation fault (SIGSEGV): native code accessed invalid memory",
    143: "exit code 143: terminated by SIGTERM: asked to stop (pod deleted, rollout, liveness probe failure, node drain)",
    255: "exit code 255: exit status out of range, or a fatal error the program reported as -1",
}


def explain_exit_code(code: int) -> str | None:
    """What a container's exit code means, or None for a code with no conventional meaning."""
    if code in _EXPLICIT_EXIT_CODES:
        return _EXPLICIT_EXIT_CODES[code]
    if 129 <= code <= 128 + 64:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"exit code {code}: killed by {name} (128 + {code - 128})"
    if 3 <= code <= 124:
        return f"exit code {code}: an application-specific error code (see the program's documentation)"
    return None


@dataclass(frozen=True)
class LogMatch:
    pattern: str
    category: str
    severity: str
    line: int  # 1-based
    text: str
    explanation: str


@dataclass
class LogAnalysis:
    matches: list[LogMatch] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    truncated: bool = False  # some matches were counted but not kept

    def categories(self) -> list[str]:
        seen: dict[str, None] = {}
        for match in self.matches:
            seen.setdefault(match.category, None)
        return list(seen)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "counts": dict(self.counts),
            "truncated": self.truncated,
            "matches": [
                {"pattern": m.pattern, "category": m.category, "severity": m.severity, "line": m.line,
                 "text": m.text, "explanation": m.explanation}
                for m in self.matches
            ],
        }


_COMPILED = tuple((p, re.compile(p.regex, re.MULTILINE)) for p in PATTERNS)


def _lowered(text: str) -> str:
    """``text.lower()`` with the same length, so offsets in it are offsets in ``text``."""
    lower = text.lower()
    if len(lower) == len(text):
        return lower
    # A few letters (e.g. U+0130) lower-case to two characters; leave those as they are.
    return "".join(ch if len(ch.lower()) != 1 else ch.lower() for ch in text)


def _candidate_lines(lower: str) -> dict[int, int]:
    """Start offset of every line holding a keyword -> bit mask of the patterns it may match."""
    candidates: dict[int, int] = {}
    find, rfind = lower.find, lower.rfind
    for index, pattern in enumerate(PATTERNS):
        bit = 1 << index
        for keyword in pattern.keywords:
            at = find(keyword)
            while at != -1:
                line_start = rfind("\n", 0, at) + 1
                candidates[line_start] = candidates.get(line_start, 0) | bit
                line_end = find("\n", at)
                if line_end == -1:
                    break
                # One hit per line is enough: jump to the next line, so a line repeating the
                # keyword a million times costs one step.
                at = find(keyword, line_end + 1)
    return candidates


def _explanation(pattern: LogPattern, found: re.Match[str]) -> str:
    if pattern.name != "exit_code":
        return pattern.explanation
    code = int(found.group("code"))
    return explain_exit_code(code) or f"exit code {code}: no conventional meaning"


def _line_text(line: str, start: int) -> str:
    if len(line) <= MAX_LINE_TEXT:
        return line
    # Keep the part around the match for a giant line (minified JSON logs).
    begin = max(0, min(start - MAX_LINE_TEXT // 4, len(line) - MAX_LINE_TEXT))
    return line[begin : begin + MAX_LINE_TEXT]


def analyze_logs(text: str) -> LogAnalysis:
    """Every known failure signature in ``text``, each with its 1-based line number."""
    analysis = LogAnalysis()
    if not text:
        return analysis
    analysis.lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    counts = analysis.counts
    kept: dict[str, int] = {}
    line_no = 1
    counted_to = 0
    for line_start in sorted(_candidate_lines(_lowered(text)).items()):
        start, mask = line_start
        end = text.find("\n", start)
        if end == -1:
            end = len(text)
        line_no += text.count("\n", counted_to, start)
        counted_to = start
        line = text[start:end].rstrip("\r")
        for index, (pattern, regex) in enumerate(_COMPILED):
            if not mask >> index & 1:
                continue
            found = regex.search(line)
            if found is None:
                continue
            counts[pattern.name] = counts.get(pattern.name, 0) + 1
            if kept.get(pattern.name, 0) >= MAX_MATCHES_PER_PATTERN:
                analysis.truncated = True
                continue
            kept[pattern.name] = kept.get(pattern.name, 0) + 1
            analysis.matches.append(
                LogMatch(pattern.name, pattern.category, pattern.severity, line_no,
                         _line_text(line, found.start()), _explanation(pattern, found))
            )
    return analysis
