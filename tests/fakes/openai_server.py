"""A local fake of an OpenAI-compatible chat completions API, for tests.

It speaks the real wire format (`POST /v1/chat/completions`, `GET /v1/models`), so the real
`openai` SDK is what talks to it, from the test process or from a Celery worker process.
Tests script what it answers, in order (`script(...)`), or with a function of the request
(`respond_with(...)`), and read what it received (`requests`): that is how "the bearer token in
the log never reached the LLM" is asserted on the bytes the provider would have seen.

Replies: `text(...)`, `tool_calls(...)`, `json_reply(...)`, `error(...)`, `rate_limited(...)`,
`raw(...)`; any of them can be made slow with `delay=`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # For 200 replies built by text()/tool_calls(): filled per request (model, token counts).
    message: dict[str, Any] | None = None
    finish_reason: str = "stop"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: str

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.json or {}).get("messages") or [])


def text(content: str, *, delay: float = 0.0) -> Reply:
    return Reply(message={"role": "assistant", "content": content}, delay=delay)


def tool_calls(*calls: tuple[str, Any], content: str | None = None, delay: float = 0.0) -> Reply:
    """Each call is (name, arguments); arguments that are not a string are JSON-encoded, as the API does."""
    encoded = []
    for name, arguments in calls:
        encoded.append(
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    return Reply(
        message={"role": "assistant", "content": content, "tool_calls": encoded},
        finish_reason="tool_calls",
        delay=delay,
    )


def json_reply(obj: Any, *, delay: float = 0.0) -> Reply:
    """What a JSON-mode / json_schema response looks like: the JSON object as the message content."""
    return text(json.dumps(obj), delay=delay)


def error(status: int, message: str = "fake error", *, headers: dict[str, str] | None = None, delay: float = 0.0) -> Reply:
    body = json.dumps({"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error", "code": None}})
    return Reply(status=status, body=body.encode(), headers={"Content-Type": "application/json", **(headers or {})}, delay=delay)


def rate_limited(retry_after: float = 1, message: str = "Rate limit reached") -> Reply:
    return error(429, message, headers={"Retry-After": f"{retry_after:g}"})


def raw(body: str | bytes, *, status: int = 200, content_type: str = "application/json", delay: float = 0.0) -> Reply:
    data = body.encode() if isinstance(body, str) else body
    return Reply(status=status, body=data, headers={"Content-Type": content_type}, delay=delay)


class FakeOpenAI:
    """The server. `url` is the base URL to give the SDK (ends in /v1)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Reply] = []
        self._responder: Callable[[Recorded], Reply] | None = None
        self.default: Reply = error(500, "the fake LLM has no scripted reply left")
        self.requests: list[Recorded] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without TCP_NODELAY, Nagle plus the
                # client's delayed ACK add ~40 ms to every reply.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _record(self) -> Recorded:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                recorded = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(recorded)
                return recorded

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def do_GET(self) -> None:  # noqa: N802
                self._record()
                if self.path.rstrip("/").endswith("/models"):
                    body = json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]})
                    self._send(200, body.encode(), {"Content-Type": "application/json"})
                else:
                    self._send(404, b'{"error": {"message": "not found"}}', {"Content-Type": "application/json"})

            def do_POST(self) -> None:  # noqa: N802
                recorded = self._record()
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}', {"Content-Type": "application/json"})
                    return
                reply = fake._next(recorded)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.message is None:
                    self._send(reply.status, reply.body, reply.headers)
                    return
                request = recorded.json or {}
                prompt_tokens = max(1, len(recorded.body) // 4)
                completion_tokens = max(1, len(json.dumps(reply.message)) // 4)
                body = {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": request.get("model", "fake-model"),
                    "choices": [{"index": 0, "message": reply.message, "finish_reason": reply.finish_reason, "logprobs": None}],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
                self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()

    # --- scripting ---------------------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order to the next chat completion requests."""
        with self._lock:
            self._queue.extend(replies)

    def respond_with(self, responder: Callable[[Recorded], Reply] | None) -> None:
        """Answer with a function of the request once the queue is empty."""
        self._responder = responder

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
        self._responder = None
        self.default = error(500, "the fake LLM has no scripted reply left")

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
        if self._responder is not None:
            return self._responder(recorded)
        return self.default

    @property
    def completions(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    def received_text(self) -> str:
        """Everything the provider received (headers and bodies), for 'never reached the LLM' checks."""
        with self._lock:
            return "\n".join(f"{r.headers}\n{r.body}" for r in self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
