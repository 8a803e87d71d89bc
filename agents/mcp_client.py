"""The MCP client manager: one open session per configured server, per process.

Starting a stdio server per call costs ~1.5 s and an HTTP session handshake a round trip or
two, so each process keeps its sessions open. The `mcp` SDK is asyncio/anyio; our callers
(Celery prefork children, gunicorn threads) are synchronous, so the manager runs one event
loop in a daemon thread and callers submit coroutines to it. A session is entered and exited
by one "owner" task (anyio cancel scopes must be left by the task that entered them); calls
run as their own tasks on the same loop, so several threads can call one server at once.

A call that fails below the tool (the process died, the connection dropped) drops the session
and is sent once more on a fresh one; a second failure raises `MCPTransportError`. A tool
error is not a transport error: it comes back as `RawResult(is_error=True)` and is never
retried. Celery's prefork forks after import, so the manager is per PID: a child never uses
its parent's loop or pipes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import structlog

from agents import metrics

if TYPE_CHECKING:
    from agents.models import MCPServer

log = structlog.get_logger(__name__)

T = TypeVar("T")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
OPEN_TIMEOUT_FLOOR = 30.0
_CONNECTION_CLOSED = -32000
_REQUEST_TIMEOUT = -32001


class MCPTransportError(Exception):
    """The server could not be reached or the session broke; the call may be retried."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(f"MCP server {server!r}: {message}")
        self.server = server


class MCPTimeout(MCPTransportError):
    """The server did not answer in time. The tool may have run: mutating tools are idempotent."""


class MCPConfigError(ValueError):
    """A server's configuration cannot be used (missing environment variable, bad transport)."""


def expand_env(value: str, *, where: str) -> str:
    """Replace ${VAR} with the environment's value, so secrets stay out of the database. A
    setting of that name counts too: AIOPS_MCP_TOKEN may come from the run directory's file."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in os.environ:
            return os.environ[name]
        from django.conf import settings

        setting = getattr(settings, name, None) if settings.configured and name.isupper() else None
        if isinstance(setting, str) and setting:
            return setting
        raise MCPConfigError(f"{where} refers to ${{{name}}}, which is not set in the environment")

    return _ENV_REF.sub(replace, value)


@dataclass(frozen=True)
class ServerConfig:
    """What it takes to open a session, with ${VAR} references resolved."""

    name: str
    transport: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 30.0

    @classmethod
    def from_model(cls, server: MCPServer, default_timeout: float) -> ServerConfig:
        if not isinstance(server.args, list) or not all(isinstance(a, str) for a in server.args):
            raise MCPConfigError(f"server {server.name!r}: args must be a list of strings")
        for label, mapping in (("env", server.env), ("headers", server.headers)):
            if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
                raise MCPConfigError(f"server {server.name!r}: {label} must map names to strings")
        return cls(
            name=server.name,
            transport=server.transport,
            command=server.command,
            args=tuple(expand_env(a, where=f"server {server.name!r} args") for a in server.args),
            env=tuple(sorted((k, expand_env(v, where=f"server {server.name!r} env {k}")) for k, v in server.env.items())),
            url=expand_env(server.url, where=f"server {server.name!r} url"),
            headers=tuple(
                sorted((k, expand_env(v, where=f"server {server.name!r} header {k}")) for k, v in server.headers.items())
            ),
            timeout=server.timeout or default_timeout,
        )

    @property
    def key(self) -> str:
        """Changes when anything that shapes the session changes, so an edit reopens it."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


@dataclass
class RawResult:
    is_error: bool
    text: str
    structured: Any = None


@dataclass
class _Session:
    config: ServerConfig
    client: Any
    stop: asyncio.Event
    owner: asyncio.Task[None]
    opened_at: float = field(default_factory=time.monotonic)


def _make_client(config: ServerConfig) -> tuple[Any, Any]:
    """Return (client, http_client or None): the http client must be closed with the session."""
    from mcp import Client, StdioServerParameters
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    if config.transport == "stdio":
        env = {**os.environ, **dict(config.env)} if config.env else None
        params = StdioServerParameters(command=config.command, args=list(config.args), env=env)
        return Client(params, read_timeout_seconds=config.timeout), None
    if config.transport == "streamable-http":
        http = create_mcp_http_client(headers=dict(config.headers))
        return Client(streamable_http_client(config.url, http_client=http), read_timeout_seconds=config.timeout), http
    if config.transport == "sse":
        transport = sse_client(config.url, headers=dict(config.headers), timeout=config.timeout)
        return Client(transport, read_timeout_seconds=config.timeout), None
    raise MCPConfigError(f"server {config.name!r}: unknown transport {config.transport!r}")


def _is_transport_failure(exc: BaseException) -> bool:
    from mcp import MCPError

    if isinstance(exc, MCPError):
        return exc.code in (_CONNECTION_CLOSED, _REQUEST_TIMEOUT)
    return True


def _flatten(exc: BaseException) -> str:
    """anyio wraps failures in ExceptionGroups; people need the innermost message."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


class ClientManager:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sessions: dict[str, _Session] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    # --- the loop thread -------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="mcp-client-loop", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run(self, factory: Callable[[], Awaitable[T]], timeout: float, server: str = "") -> T:
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(factory(), loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except TimeoutError:
            # A safety net: the loop itself is stuck or overloaded; the inner timeouts did not fire.
            future.cancel()
            raise MCPTimeout(server or "?", f"no answer within {timeout:g} s (client loop)") from None

    # --- sessions --------------------------------------------------------------------
    async def _open(self, config: ServerConfig) -> _Session:
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        async def owner() -> None:
            client, http = _make_client(config)
            try:
                if http is not None:
                    async with http:
                        async with client:
                            ready.set_result(client)
                            await stop.wait()
                else:
                    async with client:
                        ready.set_result(client)
                        await stop.wait()
            except BaseException as exc:  # noqa: BLE001  (handed to the opener, or logged)
                if not ready.done():
                    ready.set_exception(exc)
                else:
                    log.info("mcp_session_closed_with_error", server=config.name, error=_flatten(exc))

        task = asyncio.create_task(owner(), name=f"mcp-session-{config.name}")
        # Starting a stdio server (imports, a cluster client) can take seconds on a busy host,
        # longer than a short per-call timeout: opening has a floor of its own.
        open_timeout = max(config.timeout, OPEN_TIMEOUT_FLOOR)
        try:
            client = await asyncio.wait_for(asyncio.shield(ready), open_timeout)
        except TimeoutError:
            stop.set()
            task.cancel()
            raise MCPTransportError(config.name, f"could not open a session within {open_timeout:g} s") from None
        except BaseException:
            stop.set()
            task.cancel()
            raise
        metrics.MCP_SESSIONS_OPENED.labels(config.name).inc()
        log.info("mcp_session_opened", server=config.name, transport=config.transport)
        return _Session(config=config, client=client, stop=stop, owner=task)

    async def _session(self, config: ServerConfig) -> _Session:
        lock = self._opening.setdefault(config.name, asyncio.Lock())
        async with lock:
            session = self._sessions.get(config.name)
            if session is not None and (session.config.key != config.key or session.owner.done()):
                await self._drop(config.name)
                session = None
            if session is None:
                session = await self._open(config)
                self._sessions[config.name] = session
            return session

    async def _drop(self, name: str) -> None:
        session = self._sessions.pop(name, None)
        if session is None:
            return
        session.stop.set()
        try:
            await asyncio.wait_for(session.owner, 5)
        except BaseException:  # noqa: BLE001  (a broken session may fail while closing; it is gone either way)
            session.owner.cancel()

    async def _with_session(self, config: ServerConfig, operation: Callable[[Any], Awaitable[T]]) -> T:
        last: BaseException | None = None
        for attempt in (1, 2):
            try:
                session = await self._session(config)
                return await asyncio.wait_for(operation(session.client), config.timeout)
            except TimeoutError:
                metrics.MCP_TRANSPORT_ERRORS.labels(config.name).inc()
                await self._drop(config.name)
                # Not resent: the tool may be running on the server; the caller decides.
                raise MCPTimeout(config.name, f"no answer within {config.timeout:g} s") from None
            except MCPConfigError:
                raise
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, asyncio.CancelledError) or not _is_transport_failure(exc):
                    raise
                metrics.MCP_TRANSPORT_ERRORS.labels(config.name).inc()
                last = exc
                log.warning("mcp_transport_failed", server=config.name, attempt=attempt, error=_flatten(exc))
                await self._drop(config.name)
        assert last is not None
        raise MCPTransportError(config.name, _flatten(last)) from last

    # --- the API ---------------------------------------------------------------------
    def call_tool(self, config: ServerConfig, tool: str, arguments: dict[str, Any]) -> RawResult:
        async def operation(client: Any) -> RawResult:
            from mcp import MCPError

            try:
                result = await client.call_tool(tool, arguments)
            except MCPError as exc:
                if _is_transport_failure(exc):
                    raise
                # The server refused the call itself (unknown tool, invalid params): a tool error.
                return RawResult(is_error=True, text=f"MCP error {exc.code}: {exc.message}")
            return RawResult(
                is_error=bool(result.is_error),
                text=_content_text(result.content),
                structured=result.structured_content,
            )

        return self._run(lambda: self._with_session(config, operation), self._deadline(config), config.name)

    def list_tools(self, config: ServerConfig) -> list[Any]:
        async def operation(client: Any) -> list[Any]:
            tools: list[Any] = []
            cursor: str | None = None
            while True:
                page = await client.list_tools(cursor=cursor, cache_mode="refresh")
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return tools

        return self._run(lambda: self._with_session(config, operation), self._deadline(config), config.name)

    @staticmethod
    def _deadline(config: ServerConfig) -> float:
        """Outer bound for a whole call from the caller's thread: two opens and two sends."""
        return 2 * (max(config.timeout, OPEN_TIMEOUT_FLOOR) + config.timeout) + 5

    def close(self, name: str | None = None) -> None:
        """Close one server's session (or all); the next call opens a fresh one."""
        if self._loop is None:
            return

        async def close_sessions() -> None:
            for server in [name] if name else list(self._sessions):
                await self._drop(server)

        self._run(close_sessions, 15)

    def open_sessions(self) -> list[str]:
        return sorted(self._sessions)


def _content_text(content: list[Any]) -> str:
    parts = []
    for block in content or []:
        text = getattr(block, "text", None)
        if text is not None:
            parts.append(text)
        else:
            parts.append(orjson.dumps(block.model_dump(mode="json", exclude_none=True)).decode())
    return "\n".join(parts)


_managers: dict[int, ClientManager] = {}
_managers_lock = threading.Lock()


def manager() -> ClientManager:
    """This process's manager (a forked child gets its own, never its parent's loop)."""
    pid = os.getpid()
    with _managers_lock:
        if pid not in _managers:
            _managers.clear()
            _managers[pid] = ClientManager()
        return _managers[pid]
