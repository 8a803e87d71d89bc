"""Fixtures of the hardening room (#13: input limits, outages, names, login, privileges)."""

from __future__ import annotations

import json
from typing import Any

import pytest

ALERTMANAGER_URL = "/api/webhooks/alertmanager"
ALERTMANAGER_TOKEN = "am-secret-token"


@pytest.fixture
def post(client, settings):  # type: ignore[no-untyped-def]
    """POST an Alertmanager payload with the webhook's bearer token."""
    settings.AIOPS_ALERTMANAGER_TOKEN = ALERTMANAGER_TOKEN

    def send(body: Any, raw: bytes | None = None):  # type: ignore[no-untyped-def]
        data = raw if raw is not None else json.dumps(body)
        return client.post(ALERTMANAGER_URL, data=data, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {ALERTMANAGER_TOKEN}")

    return send
