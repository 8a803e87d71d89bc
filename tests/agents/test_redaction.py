"""Redaction: what must never leave for the LLM or land in a log line."""

from __future__ import annotations

import pytest
import structlog

from agents.redaction import Redactor, redact_log_event

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcDEF123456789xyz", "abcDEF123456789xyz"),
        ("curl -H 'authorization: basic dXNlcjpodW50ZXIy'", "dXNlcjpodW50ZXIy"),
        ("DB_PASSWORD=hunter2!x", "hunter2!x"),
        ('{"password": "p@ss w0rd"}', "p@ss w0rd"),
        ("api_key: 'AbC123xyz'", "AbC123xyz"),
        ("postgres://app:s3cr3t@db.shop:5432/orders", "s3cr3t"),
        ("token ghp_0123456789abcdefghij0123456789abcdef in env", "ghp_0123456789abcdefghij0123456789abcdef"),
        ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
        ("key AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "eyJzdWIiOiIxMjM0NTY3ODkwIn0"),
        (f"mounted key:\n{KEY}\nok", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"),
        ("page ops-lead@example.com", "ops-lead@example.com"),
    ],
)
def test_secrets_are_replaced(text: str, secret: str) -> None:
    redacted = Redactor().redact(text)
    assert secret not in redacted
    assert "[" in redacted


def test_the_same_value_gets_the_same_placeholder_and_plain_words_stay() -> None:
    redactor = Redactor()
    out = redactor.redact("password=abc123 then again password=abc123, other password=zzz999; basic functionality ok")
    assert out == "password=[PASSWORD_1] then again password=[PASSWORD_1], other password=[PASSWORD_2]; basic functionality ok"


def test_identifiers_come_back_and_secrets_do_not() -> None:
    redactor = Redactor(resource_names=True)
    redactor.add_names_from({"items": [{"metadata": {"name": "payments-api-7d9f-abcde", "namespace": "payments"}}]})
    redactor.add_names(["payments-api"])
    sent = redactor.redact("payments-api-7d9f-abcde in payments (payments-api) mails ops@example.com with password=hunter22")
    assert "payments" not in sent and "ops@example.com" not in sent and "hunter22" not in sent
    assert "anon-res-1" in sent and "anon-ns-1" in sent
    # The model's answer and tool arguments use the placeholders; we put identifiers back.
    answer = redactor.restore(f"{sent.split()[0]} is failing; ask [EMAIL_1]; the password [PASSWORD_1] leaked")
    assert answer.startswith("payments-api-7d9f-abcde is failing; ask ops@example.com")
    assert "[PASSWORD_1]" in answer and "hunter22" not in answer
    assert redactor.restore_json({"namespace": "anon-ns-1", "name": "anon-res-2"}) == {"namespace": "payments", "name": "payments-api"}


def test_resource_names_stay_unless_configured() -> None:
    redactor = Redactor(resource_names=False)
    redactor.add_names(["payments-api"])
    assert redactor.redact("payments-api is down") == "payments-api is down"


def test_log_lines_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    assert redact_log_event(None, "info", {"event": "x", "password": "hunter22", "prompt_tokens": 5})["password"] == "[REDACTED]"
    structlog.get_logger("tests.redaction").warning(
        "connecting", dsn="postgres://app:s3cr3tpw@db/x", headers={"Authorization": "Bearer abcdefgh12345678"}, api_key="k-123"
    )
    err = str(caplog.records[-1].msg)  # what the handler renders, after every processor
    assert "connecting" in err and "[REDACTED]" in err
    for secret in ("s3cr3tpw", "abcdefgh12345678", "k-123"):
        assert secret not in err
