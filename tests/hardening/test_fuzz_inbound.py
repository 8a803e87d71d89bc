"""Fuzzing every inbound endpoint (#13, What to build 1): no input yields a 5xx.

Hypothesis builds payloads shaped like each sender's (Alertmanager, Telegram, Slack events and
interactions, Discord interactions, the console's POSTs) with their fields replaced by hostile
values: any JSON, over-long text, NUL and control characters, newlines, look-alike letters,
huge numbers, odd timestamps. Each request is authenticated as the real sender would
authenticate it (bearer token, secret header, HMAC, Ed25519 signature, a logged-in session), so
the fuzzing reaches past the door. Django's test client raises what a view raises, so a bug
fails the test with its traceback; and every answer must be below 500.

Examples per endpoint: AIOPS_FUZZ_EXAMPLES (default 25, ~30 s in all on a loaded 2-core machine).
"""

from __future__ import annotations

import json
import os
import string
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.channels import platforms
from tests.hardening.conftest import ALERTMANAGER_TOKEN, ALERTMANAGER_URL
from tests.plugins.chat import TELEGRAM_SECRET

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("AIOPS_FUZZ_EXAMPLES", "25"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])

# --- hostile values ----------------------------------------------------------------------------
nasty_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=600),
    st.sampled_from(["", " ", "\x00", "a\x00b", "cart\n", "node-1\r\n", "c\u0430rt", "\u202e", "x" * 254,
                     "x" * 5000, "{{ 7*7 }}", "'; DROP TABLE x; --", "<script>alert(1)</script>", "%s%s%n",
                     "\ud7ff", "\U0001f525", "../../etc/passwd", "0" * 40, "-1", "1e309"]),
)
numbers = st.one_of(st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False))
json_scalars = st.one_of(st.none(), st.booleans(), numbers, nasty_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(nasty_text, inner, max_size=3), max_leaves=6)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a well-formed value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, json_values)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    zone = draw(st.sampled_from(["Z", "+00:00", "+14:00", "-12:00", "+05:30", ""]))
    return moment.isoformat() + zone


label_names = st.one_of(st.sampled_from(["alertname", "namespace", "deployment", "statefulset", "pod", "node",
                                         "severity", "cluster", "job_name", "container"]),
                        st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True))
alerts = st.fixed_dictionaries(
    {
        "status": maybe(st.sampled_from(["firing", "resolved"])),
        "labels": maybe(st.dictionaries(label_names, nasty_text, max_size=6).map(
            lambda labels: {"alertname": "Fuzz", **labels})),
        "startsAt": maybe(timestamps()),
        "fingerprint": maybe(st.from_regex(r"[0-9a-f]{1,16}", fullmatch=True)),
    },
    optional={
        "annotations": maybe(st.dictionaries(nasty_text, nasty_text, max_size=3)),
        "endsAt": maybe(timestamps()),
        "generatorURL": nasty_text,
    },
)
alertmanager_batches = st.fixed_dictionaries(
    {"status": maybe(st.sampled_from(["firing", "resolved"])), "alerts": maybe(st.lists(alerts, min_size=1, max_size=4))},
    optional={"version": maybe(st.just("4")), "receiver": nasty_text, "groupKey": nasty_text,
              "truncatedAlerts": maybe(st.integers(min_value=0, max_value=10)), "groupLabels": json_values,
              "commonLabels": json_values, "externalURL": nasty_text},
)

commands = st.one_of(
    nasty_text,
    st.sampled_from(["/help", "/incident list", "/incident show 1", "/approval list", "/alert list", "/k8s pods",
                     "/k8s scale shop/web 500", "/k8s scale shop/web \uff15", "/k8s restart shop/cart\n",
                     "/k8s logs shop/web-1 app", "/model", "/status", "approve ABCDEF", "reject ZZZZ no",
                     "/incident close 99999999999999999999", "/k8s drain node-1"]),
    st.builds(lambda verb, arg: f"{verb} {arg}", st.sampled_from(["/k8s scale", "/incident show", "/k8s describe pod",
                                                                  "/k8s rollback", "approve"]), nasty_text),
)
ids = st.one_of(st.integers(min_value=1, max_value=2**53), numbers, nasty_text)


# --- Alertmanager ------------------------------------------------------------------------------
@fuzz
@given(body=st.one_of(alertmanager_batches, json_values))
def test_alertmanager_never_answers_5xx(client, settings, body) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_ALERTMANAGER_TOKEN = ALERTMANAGER_TOKEN
    response = client.post(ALERTMANAGER_URL, data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {ALERTMANAGER_TOKEN}")
    assert response.status_code < 500, response.content[:500]
    assert response.status_code in (200, 400), response.content[:500]
    if response.status_code == 400:
        assert response.json()["error"]  # a reason a person can act on


# --- Telegram ----------------------------------------------------------------------------------
telegram_users = st.fixed_dictionaries({"id": maybe(st.integers(min_value=1, max_value=2**40)),
                                        "is_bot": maybe(st.booleans()), "first_name": maybe(nasty_text)})
telegram_chats = st.fixed_dictionaries({"id": maybe(st.integers(min_value=-(2**45), max_value=2**45)),
                                        "type": maybe(st.sampled_from(["private", "group", "supergroup"]))})
telegram_messages = st.fixed_dictionaries({"message_id": maybe(st.integers(min_value=1, max_value=2**31)),
                                           "date": maybe(st.integers(min_value=0, max_value=2**33)),
                                           "chat": maybe(telegram_chats), "from": maybe(telegram_users),
                                           "text": maybe(commands)})
telegram_updates = st.one_of(
    st.fixed_dictionaries({"update_id": maybe(st.integers(min_value=0, max_value=2**40)), "message": telegram_messages}),
    st.fixed_dictionaries({"update_id": maybe(st.integers(min_value=0, max_value=2**40)),
                           "callback_query": st.fixed_dictionaries({
                               "id": maybe(nasty_text), "chat_instance": maybe(nasty_text), "from": telegram_users,
                               "data": maybe(st.one_of(nasty_text, st.sampled_from(["a:1:approve", "a:99:reject"]))),
                               "message": maybe(telegram_messages)})}),
    json_values,
)


@fuzz
@given(update=telegram_updates)
def test_telegram_never_answers_5xx(client, chat, update) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/api/webhooks/telegram", data=json.dumps(update), content_type="application/json",
                           HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=TELEGRAM_SECRET)
    assert response.status_code < 500, response.content[:500]


# --- Slack -------------------------------------------------------------------------------------
slack_events = st.one_of(
    st.fixed_dictionaries({"type": maybe(st.sampled_from(["event_callback", "url_verification"])),
                           "event_id": maybe(nasty_text), "challenge": json_values,
                           "event": maybe(st.fixed_dictionaries({
                               "type": maybe(st.sampled_from(["message", "app_mention"])), "user": maybe(nasty_text),
                               "channel": maybe(st.sampled_from(["C0OPS", "D0DM"])), "text": maybe(commands),
                               "ts": maybe(nasty_text), "subtype": st.one_of(st.none(), nasty_text)}))}),
    json_values,
)
slack_actions = st.fixed_dictionaries({
    "type": maybe(st.just("block_actions")), "trigger_id": maybe(nasty_text),
    "user": maybe(st.fixed_dictionaries({"id": maybe(nasty_text), "username": maybe(nasty_text)})),
    "channel": maybe(st.fixed_dictionaries({"id": maybe(nasty_text)})),
    "message": maybe(st.fixed_dictionaries({"ts": maybe(nasty_text)})),
    "actions": maybe(st.lists(st.fixed_dictionaries({"action_id": maybe(nasty_text), "value": maybe(st.one_of(
        nasty_text, st.sampled_from(["a:1:approve", "a:0:reject"]))), "type": maybe(st.just("button"))}), max_size=2)),
})


@fuzz
@given(event=slack_events)
def test_slack_events_never_answer_5xx(client, chat, event) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(event).encode()
    response = client.post("/api/webhooks/slack/events", data=body, content_type="application/json",
                           **platforms.slack_signed(body))
    assert response.status_code < 500, response.content[:500]


@fuzz
@given(payload=st.one_of(slack_actions, json_values), raw=st.one_of(st.none(), nasty_text))
def test_slack_interactions_never_answer_5xx(client, chat, payload, raw) -> None:  # type: ignore[no-untyped-def]
    body = urlencode({"payload": raw if raw is not None else json.dumps(payload)}).encode()
    response = client.post("/api/webhooks/slack/interactions", data=body,
                           content_type="application/x-www-form-urlencoded", **platforms.slack_signed(body))
    assert response.status_code < 500, response.content[:500]


# --- Discord -----------------------------------------------------------------------------------
discord_users = st.fixed_dictionaries({"user": maybe(st.fixed_dictionaries({"id": maybe(nasty_text),
                                                                            "username": maybe(nasty_text)}))})
discord_interactions = st.one_of(
    st.fixed_dictionaries({
        "id": maybe(st.integers(min_value=1, max_value=2**63).map(str)), "type": maybe(st.sampled_from([1, 2, 3])),
        "token": maybe(nasty_text), "channel_id": maybe(nasty_text), "member": maybe(discord_users),
        "message": maybe(st.fixed_dictionaries({"id": maybe(nasty_text)})),
        "data": maybe(st.fixed_dictionaries({
            "name": maybe(st.just("aiops")), "custom_id": maybe(nasty_text), "component_type": maybe(st.just(2)),
            "options": maybe(st.lists(st.fixed_dictionaries({"name": maybe(st.just("command")), "type": maybe(
                st.sampled_from([1, 2, 3])), "value": maybe(commands)}), max_size=2))})),
    }),
    json_values,
)


@fuzz
@given(interaction=discord_interactions)
def test_discord_never_answers_5xx(client, chat, interaction) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(interaction).encode()
    signed = chat.discord.sign(body)
    response = client.post("/api/webhooks/discord/interactions", data=body, content_type="application/json",
                           HTTP_X_SIGNATURE_ED25519=signed["X-Signature-Ed25519"],
                           HTTP_X_SIGNATURE_TIMESTAMP=signed["X-Signature-Timestamp"])
    assert response.status_code < 500, response.content[:500]


# --- the web console ---------------------------------------------------------------------------
form_values = st.one_of(nasty_text.filter(lambda text: "\x00" not in text), st.just(""))


@pytest.fixture
def operator(client, django_user_model):  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user("fuzz-operator", password="x" * 12)
    client.force_login(user)
    return client


@fuzz
@given(text=st.one_of(commands, nasty_text), fetch=st.booleans())
def test_console_chat_never_answers_5xx(operator, chat, text, fetch) -> None:  # type: ignore[no-untyped-def]
    headers = {"HTTP_X_REQUESTED_WITH": "fetch"} if fetch else {}
    response = operator.post("/console/chat", data={"text": text}, **headers)
    assert response.status_code < 500, response.content[:500]


@fuzz
@given(approval=st.one_of(st.integers(min_value=0, max_value=2**63 - 1), st.just(2**64)),
       decision=st.one_of(st.sampled_from(["approve", "reject"]), form_values), reason=form_values)
def test_console_decide_never_answers_5xx(operator, chat, approval, decision, reason) -> None:  # type: ignore[no-untyped-def]
    response = operator.post(f"/console/approvals/{approval}/decide", data={"decision": decision, "reason": reason})
    assert response.status_code < 500, response.content[:500]


@fuzz
@given(username=st.one_of(nasty_text, st.text(alphabet=string.printable, min_size=140, max_size=300)), password=form_values)
def test_console_login_never_answers_5xx(client, username, password) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/console/login/", data={"username": username, "password": password})
    assert response.status_code < 500, response.content[:500]
