"""Strict, typed readers for settings taken from the environment.

Every reader names the variable and the offending value when it refuses one, so a
typo stops start-up with a message an operator can act on instead of a default that
silently differs from what they meant (healthchecks' envbool/envint are the model).
A variable ``X`` may also be given as ``X_FILE`` naming a file that holds the value
(Docker and Kubernetes secrets are mounted that way).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class EnvError(ImproperlyConfigured):
    """A setting in the environment has a value we refuse."""


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is not None:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise EnvError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from exc
    return None


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise EnvError(f"{name}={value!r} is not a boolean (use one of: true, false, 1, 0, yes, no, on, off)")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise EnvError(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise EnvError(f"{name}={value!r} is below the minimum of {minimum}")
    if maximum is not None and number > maximum:
        raise EnvError(f"{name}={value!r} is above the maximum of {maximum}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value.strip())
    except ValueError:
        raise EnvError(f"{name}={value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise EnvError(f"{name}={value!r} is not a finite number")
    if minimum is not None and number < minimum:
        raise EnvError(f"{name}={value!r} is below the minimum of {minimum}")
    if maximum is not None and number > maximum:
        raise EnvError(f"{name}={value!r} is above the maximum of {maximum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _raw(name)
    if value is None or value == "":
        return default
    if value not in choices:
        raise EnvError(f"{name}={value!r} is not one of: {', '.join(choices)}")
    return value


def run_secret(run_dir: Path, filename: str, *, nbytes: int = 32) -> str:
    """Return the secret kept in ``run_dir/filename``, generating it (mode 0600) on first use.

    Used only for the embedded defaults: a fresh clone gets working secrets without the
    operator inventing any, and they survive restarts because they live beside the data.
    """
    path = run_dir / filename
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    run_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    # O_EXCL: when two processes start at once, exactly one writes and both read its value.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value
