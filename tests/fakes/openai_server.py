r"""A local fake of an OpenAI-compatible chat completions API, for tests.

It speaks the real wire format (`POST /v1/chat/completions`, `GET /v1/models`), so the real
`openai` SDK is what talks to it, from the test process or from a Celery worker process.
Tests script what it answers, in order (`script(...)`), or with a function of the request
(`respond_with(...)`), and read what it received (`requests`): that is how "the bearer token in
the log never reached the LLM" is asserted on the bytes the provider would have seen.

Replies: `text(...)`, `tool_calls(...)`, `json_reply(...)`, `error(...)`, `rate_limited(...)`,
`raw(...)`; any of them can be made slow with `delay=`.

It is no kinder than the server it plays. `mode` picks which (`reset()` returns to "openai"):

- "openai": OpenAI's own checks: `content: null` only beside tool calls; a tool message must
  answer a preceding tool call; arguments are strings; `json_object` needs the word "json" in
  the messages; a named `tool_choice` must be one of the tools.
- "llama-cpp-python" (0.3.36's `llama_cpp.server`, checked against the real one): `content:
  null` anywhere -> 500 with a pydantic dump; `json_schema` -> 500; tool calls come back only
  for a `tool_choice` naming the tool (otherwise the model's call is plain text: the server
  parses none); a forced tool whose schema has a `pattern` with `\.` crashes it (the connection
  drops; `crashes` counts it); without `max_tokens` a request takes `unbounded_delay` seconds
  and ends with finish_reason "length" (the model writes until the context is full).
- "vllm": tools with `tool_choice` "auto" (or none) -> 400 unless `tools_supported` (the server's
  --enable-auto-tool-choice); prompt + max_tokens over `context_length` -> 400; errors are
  vLLM's top-level `{"object": "error", "message": ...}`.
- "ollama": any tools -> 400 "... does not support tools" unless `tools_supported`; `content:
  null` without tool calls -> 400.
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


MODES = ("openai", "llama-cpp-python", "vllm", "ollama")

# What llama-cpp-python 0.3.36 answered to an assistant message with "content": null (as the real
# server sent it, abridged to 3 of its 7 errors): its request validation, wrapped as a 500.
LLAMA_CPP_NULL_CONTENT = (
    "7 validation errors:\n  {'type': 'literal_error', 'loc': ('body', 'messages', 1, "
    "'ChatCompletionRequestSystemMessage', 'role'), 'msg': \"Input should be 'system'\", 'input': 'assistant', "
    "'ctx': {'expected': \"'system'\"}}\n  {'type': 'string_type', 'loc': ('body', 'messages', 1, "
    "'ChatCompletionRequestAssistantMessage', 'content'), 'msg': 'Input should be a valid string', 'input': None}\n"
    "  {'type': 'missing', 'loc': ('body', 'messages', 1, 'ChatCompletionRequestToolMessage', 'tool_call_id'), "
    "'msg': 'Field required', 'input': {'role': 'assistant', 'content': None}}\n\n"
    "  File \"/usr/lib/python3/dist-packages/llama_cpp/server/app.py\", line 376, in create_chat_completion\n"
    "    POST /v1/chat/completions"
)
LLAMA_CPP_JSON_SCHEMA = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': "
    "\"Input should be 'text' or 'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or "
    "'json_object'\"}}\n\n  File \"/usr/lib/python3/dist-packages/llama_cpp/server/app.py\", line 376, in "
    "create_chat_completion\n    POST /v1/chat/completions"
)


def _error_body(mode: str, status: int, message: str, kind: str) -> bytes:
    if mode == "vllm":
        return json.dumps({"object": "error", "message": message, "type": kind, "param": None, "code": status}).encode()
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


class FakeOpenAI:
    """The server. `url` is the base URL to give the SDK (ends in /v1)."""

    def __init__(self, mode: str = "openai") -> None:
        self.mode = mode
        self.tools_supported = True
        self.context_length = 8192
        self.unbounded_delay = 0.0
        self.models = ["fake-model"]
        self.crashes = 0
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
                    data = [{"id": name, "object": "model", "owned_by": "fake"} for name in fake.models]
                    body = json.dumps({"object": "list", "data": data})
                    self._send(200, body.encode(), {"Content-Type": "application/json"})
                else:
                    self._send(404, b'{"error": {"message": "not found"}}', {"Content-Type": "application/json"})

            def do_POST(self) -> None:  # noqa: N802
                recorded = self._record()
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}', {"Content-Type": "application/json"})
                    return
                request = recorded.json if isinstance(recorded.json, dict) else {}
                refusal = fake._refuse(request)
                if refusal == "crash":
                    with fake._lock:
                        fake.crashes += 1
                    self.close_connection = True
                    self.request.shutdown(socket.SHUT_RDWR)
                    return
                if refusal is not None:
                    self._send(refusal.status, refusal.body, refusal.headers)
                    return
                reply = fake._shape(fake._next(recorded), request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.message is None:
                    self._send(reply.status, reply.body, reply.headers)
                    return
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

    # --- what each real server refuses ----------------------------------------------------------
    def _error(self, status: int, message: str) -> Reply:
        kind = {400: "invalid_request_error", 500: "internal_server_error"}.get(status, "api_error")
        if self.mode == "vllm":
            kind = "BadRequestError" if status == 400 else "InternalServerError"
        return Reply(status=status, body=_error_body(self.mode, status, message, kind), headers={"Content-Type": "application/json"})

    def _refuse(self, request: dict[str, Any]) -> Reply | str | None:
        messages = request.get("messages")
        if not request.get("model") or not isinstance(messages, list) or not messages:
            return self._error(400, "'model' and a non-empty 'messages' list are required")
        tools = request.get("tools") or []
        choice = request.get("tool_choice")
        names = {(t.get("function") or {}).get("name") for t in tools if isinstance(t, dict)}
        max_tokens = request.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return self._error(400, f"max_tokens must be a positive integer, not {max_tokens!r}")
        if isinstance(choice, dict) and (choice.get("function") or {}).get("name") not in names:
            return self._error(400, "tool_choice names a function that is not among the tools")
        if self.mode == "llama-cpp-python":
            if any(isinstance(m, dict) and m.get("content", "") is None for m in messages):
                return self._error(500, LLAMA_CPP_NULL_CONTENT)
            if (request.get("response_format") or {}).get("type") == "json_schema":
                return self._error(500, LLAMA_CPP_JSON_SCHEMA)
            if isinstance(choice, dict):
                forced = next(t for t in tools if (t.get("function") or {}).get("name") == choice["function"]["name"])
                if "\\." in json.dumps(forced):
                    return "crash"  # its grammar parser segfaulted on a pattern with an escaped dot
            return None
        issue = self._check_openai_rules(messages, names, request)
        if issue is not None:
            return issue
        if self.mode == "vllm":
            if tools and choice in (None, "auto") and not self.tools_supported:
                return self._error(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')
            prompt_tokens = max(1, len(json.dumps(messages)) // 4)
            wanted = max_tokens if max_tokens is not None else 16
            if prompt_tokens + wanted > self.context_length:
                return self._error(
                    400,
                    f"This model's maximum context length is {self.context_length} tokens. However, you requested "
                    f"{prompt_tokens + wanted} tokens ({prompt_tokens} in the messages, {wanted} in the completion). "
                    "Please reduce the length of the messages or completion.",
                )
        if self.mode == "ollama" and tools and not self.tools_supported:
            return self._error(400, f"registry.ollama.ai/library/{request['model']}:latest does not support tools")
        return None

    def _check_openai_rules(self, messages: list[Any], names: set[Any], request: dict[str, Any]) -> Reply | None:
        answered: set[str] = set()
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool", "developer"):
                return self._error(400, f"messages[{index}]: not a message with a known role")
            calls = message.get("tool_calls") or []
            if message.get("content") is None and not calls:
                if self.mode == "ollama":
                    return self._error(400, "invalid message content type: <nil>")
                return self._error(400, f"messages[{index}].content: null is only allowed beside tool_calls")
            for call in calls:
                if not isinstance((call.get("function") or {}).get("arguments"), str):
                    return self._error(400, f"messages[{index}].tool_calls: function.arguments must be a string")
                answered.add(call.get("id"))
            if message["role"] == "tool" and message.get("tool_call_id") not in answered:
                return self._error(
                    400, "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."
                )
        if self.mode == "openai" and (request.get("response_format") or {}).get("type") == "json_object":
            if "json" not in json.dumps(messages).lower():
                return self._error(
                    400, "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."
                )
        return None

    def _shape(self, reply: Reply, request: dict[str, Any]) -> Reply:
        """What this server makes of the model's reply for this request."""
        if self.mode != "llama-cpp-python" or reply.message is None:
            return reply
        choice = request.get("tool_choice")
        if isinstance(choice, dict) and request.get("tools"):
            # The grammar forces a call of that tool; the scripted call's arguments if it is one.
            name = choice["function"]["name"]
            calls = [c for c in reply.message.get("tool_calls") or [] if c["function"]["name"] == name]
            call = calls[0] if calls else {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                                            "function": {"name": name, "arguments": "{}"}}
            reply = Reply(message={"role": "assistant", "content": None, "tool_calls": [call]},
                          finish_reason="tool_calls", delay=reply.delay)
        elif reply.message.get("tool_calls"):
            # No tools in the prompt, or none parsed: what the model wrote is the answer.
            written = json.dumps([c["function"] for c in reply.message["tool_calls"]])
            reply = Reply(message={"role": "assistant", "content": written}, delay=reply.delay)
        if request.get("max_tokens") is None:
            reply = Reply(message=reply.message, finish_reason="length", delay=reply.delay + self.unbounded_delay)
        return reply

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
        self.mode = "openai"
        self.tools_supported = True
        self.context_length = 8192
        self.unbounded_delay = 0.0
        self.models = ["fake-model"]
        self.crashes = 0
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
