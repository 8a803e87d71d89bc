"""The common part of the fake chat-platform servers: a threaded HTTP server on 127.0.0.1:0
that records every request and can be told to answer the next calls of a method with a
scripted status (429 with a retry hint, 5xx), so client libraries meet real failure modes."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str  # HTTP method
    path: str
    api_method: str  # the platform's method name (sendMessage, chat.postMessage, ...)
    headers: dict[str, str]
    body: dict[str, Any]
    status: int = 0  # what the fake answered
    at: float = field(default_factory=time.monotonic)


@dataclass
class Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class FakeHTTPServer:
    """Subclasses implement `route(method, path, headers, body) -> (api_method, handler)`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._scripts: dict[str, deque[Scripted]] = defaultdict(deque)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet in tests)
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, payload, headers = fake._dispatch(self.command, self.path, dict(self.headers), raw)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- what tests use --------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._scripts.clear()
            self.reset_state()

    def reset_state(self) -> None:
        """Subclasses forget the messages they hold."""

    def script(self, api_method: str, status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
               times: int = 1) -> None:
        """Answer the next `times` calls of `api_method` with this status and body instead."""
        with self._lock:
            for _ in range(times):
                self._scripts[api_method].append(Scripted(status, body, headers or {}))

    def calls(self, api_method: str, *, succeeded: bool | None = None) -> list[Recorded]:
        with self._lock:
            found = [r for r in self.requests if r.api_method == api_method]
        if succeeded is None:
            return found
        return [r for r in found if (200 <= r.status < 300) == succeeded]

    # --- plumbing --------------------------------------------------------------------------
    def _dispatch(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        body = _parse_body(headers, raw, path)
        api_method, handler = self.route(method, urlsplit(path).path, headers, body)
        record = Recorded(method, path, api_method, {k.lower(): v for k, v in headers.items()}, body)
        with self._lock:
            self.requests.append(record)
            scripted = self._scripts[api_method].popleft() if self._scripts.get(api_method) else None
        if scripted is not None:
            record.status = scripted.status
            return scripted.status, scripted.body, scripted.headers
        with self._lock:
            status, payload = handler()
        record.status = status
        return status, payload, {}

    def route(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def _parse_body(headers: dict[str, str], raw: bytes, path: str) -> dict[str, Any]:
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if not raw:
        query = parse_qs(urlsplit(path).query)
        return {k: v[0] for k, v in query.items()}
    if "json" in content_type:
        return json.loads(raw)
    if "x-www-form-urlencoded" in content_type:
        return {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
    if "multipart/form-data" in content_type:
        return _parse_multipart(content_type, raw)
    return {"_raw": raw.decode(errors="replace")}


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = part.get_content() if part.get_content_maintype() == "text" else part.get_payload(decode=True)
    return fields
