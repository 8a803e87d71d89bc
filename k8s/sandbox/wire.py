"""The sandbox API's request and response, what `server.py` moves as bytes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from k8s.sandbox.errors import ApiError

JSON = "application/json"
MAX_BODY = 3 * 1024 * 1024


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    stream: Iterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, data: Any) -> Response:
    return Response(status, orjson.dumps(data))


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""

    @classmethod
    def build(cls, method: str, target: str, headers: dict[str, str], body: bytes) -> Request:
        path, _, qs = target.partition("?")
        query = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        return cls(method, path.rstrip("/") or "/", query, {k.lower(): v for k, v in headers.items()}, body)

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")

    def json(self) -> Any:
        try:
            return orjson.loads(self.body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise ApiError.bad_request(f"the body of the request could not be decoded: {exc}") from None
