"""One transaction's worth of announcements (`playbooks.services.announce` announces a batch's
incidents in one): a receiver may keep a row it locked for the rest of the transaction and write
it once, just before the transaction's last statement, instead of locking, reading and writing it
again for every incident (storm control's storm row during a storm).

Outside `one_transaction()`, `cached` always loads and `write_before_end` writes at once: the
receivers behave as they do for a single incident."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

_UNIT: contextvars.ContextVar[dict[str, dict[Any, Any]] | None] = contextvars.ContextVar("aiops_unit", default=None)
MISSING = object()


@contextlib.contextmanager
def one_transaction() -> Iterator[None]:
    """Call inside the transaction; the deferred writes run when the block ends without an error
    (the caller then makes its last statement and commits)."""
    state: dict[str, dict[Any, Any]] = {"cache": {}, "writes": {}}
    token = _UNIT.set(state)
    try:
        yield
        for write in state["writes"].values():
            write()
    finally:
        _UNIT.reset(token)


def active() -> bool:
    return _UNIT.get() is not None


def cached(key: Any) -> Any:
    """What `remember` stored under `key` in this transaction, or MISSING."""
    state = _UNIT.get()
    return MISSING if state is None else state["cache"].get(key, MISSING)


def remember(key: Any, value: Any) -> None:
    state = _UNIT.get()
    if state is not None:
        state["cache"][key] = value


def write_before_end(key: Any, write: Callable[[], None]) -> None:
    """`write()` once at the end of the transaction (the last one registered under `key`), or now."""
    state = _UNIT.get()
    if state is None:
        write()
    else:
        state["writes"][key] = write
