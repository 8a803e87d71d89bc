"""The LLM client's errors: each message is one sentence a person can read (the provider's own
words go to the log only)."""

from __future__ import annotations


class LLMError(Exception):
    """The LLM call failed; the message says why in words an operator can act on."""


class LLMNotConfigured(LLMError):
    pass


class LLMUnavailable(LLMError):
    """The provider is down, rate-limiting us, or the breaker is open: try again later."""


class CircuitOpen(LLMUnavailable):
    def __init__(self, endpoint: str, retry_in: float) -> None:
        self.retry_in = retry_in
        self.endpoint = endpoint
        super().__init__(
            f"the language model endpoint keeps failing, so calls to it are paused for {retry_in:.0f} s more (circuit open)"
        )


class UnknownModel(LLMError):
    def __init__(self, alias: str, valid: list[str]) -> None:
        self.alias = alias
        self.valid = valid
        super().__init__(f"there is no model {alias!r} (choose one of: {', '.join(valid) or 'none configured'})")


class CapabilityRefused(LLMError):
    """The endpoint refused an optional part of the request (tools, a response_format).

    Not an outage: never retried, never counted by the breaker; the caller drops the feature.
    """

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"the language model endpoint refused part of the request (HTTP {status})")


class TimeLimitReached(LLMUnavailable):
    """The caller's deadline passed before an answer came."""
