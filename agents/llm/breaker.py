"""The circuit breaker, its state in Redis so every worker fails fast while the provider is down
(closed -> open after LLM_BREAKER_THRESHOLD failed calls in a row -> after LLM_BREAKER_COOLDOWN
one probe call is let through -> closed on success, open again on failure)."""

from __future__ import annotations

import hashlib

import redis
import structlog
from django.conf import settings

from agents import metrics_llm as metrics
from agents.llm.errors import CircuitOpen

log = structlog.get_logger(__name__)

_redis_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis:
    url = settings.REDIS_URL
    client = _redis_clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _redis_clients[url] = client
    return client


class CircuitBreaker:
    """Shared by every process through three Redis keys per endpoint."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        prefix = "aiops:llm:breaker:" + hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        self.failures_key = prefix + ":failures"
        self.open_key = prefix + ":open"
        self.probe_key = prefix + ":probe"

    def _set_gauge(self, is_open: bool) -> None:
        metrics.LLM_CIRCUIT_OPEN.labels(self.endpoint).set(1 if is_open else 0)

    def before_call(self) -> bool:
        """Raise CircuitOpen while open; in half-open, let exactly one caller probe.

        Returns whether there is failure state to clear on success (so a healthy endpoint costs
        one Redis round trip per call, not two).
        """
        try:
            r = _redis()
            retry_in_ms, failures_raw = r.pipeline(transaction=False).pttl(self.open_key).get(self.failures_key).execute()
            if retry_in_ms and retry_in_ms > 0:
                self._set_gauge(True)
                raise CircuitOpen(self.endpoint, retry_in_ms / 1000)
            failures = int(failures_raw or 0)
            if failures >= settings.LLM_BREAKER_THRESHOLD:
                # Half-open: the one caller that wins the probe key tries; the rest still fail fast.
                probe_ms = int((settings.LLM_TIMEOUT + 5) * 1000)
                if not r.set(self.probe_key, "1", nx=True, px=probe_ms):
                    self._set_gauge(True)
                    raise CircuitOpen(self.endpoint, max(r.pttl(self.probe_key), 0) / 1000)
                log.info("llm_circuit_half_open", endpoint=self.endpoint)
            return failures > 0
        except redis.RedisError as exc:
            # Redis holds only what can be lost: without it the breaker is off, calls still go.
            log.warning("llm_circuit_unavailable", endpoint=self.endpoint, error=str(exc))
            return False

    def record_success(self) -> None:
        try:
            r = _redis()
            r.delete(self.failures_key, self.probe_key, self.open_key)
        except redis.RedisError:
            return
        self._set_gauge(False)

    def set_closed_gauge(self) -> None:
        self._set_gauge(False)

    def record_failure(self) -> None:
        try:
            r = _redis()
            pipe = r.pipeline()
            pipe.incr(self.failures_key)
            # Failures far apart are not an outage: forget them after a quiet spell.
            pipe.expire(self.failures_key, int(settings.LLM_BREAKER_COOLDOWN * 10) + 60)
            pipe.delete(self.probe_key)
            failures = pipe.execute()[0]
            if failures >= settings.LLM_BREAKER_THRESHOLD:
                r.set(self.open_key, "1", px=int(settings.LLM_BREAKER_COOLDOWN * 1000))
                self._set_gauge(True)
                log.warning(
                    "llm_circuit_opened", endpoint=self.endpoint, failures=failures, cooldown_s=settings.LLM_BREAKER_COOLDOWN
                )
        except redis.RedisError as exc:
            log.warning("llm_circuit_unavailable", endpoint=self.endpoint, error=str(exc))

    def reset(self) -> None:
        _redis().delete(self.failures_key, self.probe_key, self.open_key)
        self._set_gauge(False)

    def is_open(self) -> bool:
        return bool(_redis().exists(self.open_key))
