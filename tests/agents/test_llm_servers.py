"""The LLM path against the strict fake's modes: each behaviour of a real server that broke the
assistant or the RCA (issue #12's list), and what the person sees when it happens.

The real llama-cpp-python server is met in tests/agents/test_llama_cpp.py; these tests cover
vLLM and Ollama, which cannot run here, by the behaviour the fake emulates for them.
"""

from __future__ import annotations

import json
import time

import openai
import pytest
from django.contrib.auth import get_user_model
from prometheus_client import REGISTRY

from agents import conversations, llm
from agents.llm import compat
from agents.models import Message
from tests.fakes.openai_server import LLAMA_CPP_NULL_CONTENT, Recorded, Reply, error, json_reply, text, tool_calls

pytestmark = pytest.mark.django_db

SCHEMA = {"type": "object", "properties": {"cause": {"type": "string"}}, "required": ["cause"]}
JSON_PROMPT = [{"role": "system", "content": 'Answer with one JSON object {"cause": "..."}.'}, {"role": "user", "content": "why?"}]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def alice(db):  # type: ignore[no-untyped-def]
    return get_user_model().objects.create_user("alice-servers", password="x")


@pytest.fixture
def builtin_tools(db):  # type: ignore[no-untyped-def]
    """Our tools in the registry from code; a LOW call fails (no MCP server), the loop goes on."""
    from agents.registry import register_builtin

    return register_builtin("http://127.0.0.1:9/mcp")


@pytest.fixture
def endpoint(fake_llm, settings):  # type: ignore[no-untyped-def]
    """The default alias on the fake, with nothing learned about it yet."""
    endpoint = llm.resolve(settings.LLM_DEFAULT_MODEL)
    compat.Capabilities(endpoint.base_url, endpoint.model).forget()
    yield endpoint
    compat.Capabilities(endpoint.base_url, endpoint.model).forget()


def answer_after_tool(recorded: Recorded) -> Reply:
    if any(m["role"] == "tool" for m in recorded.messages):
        return text("I looked: the payments pods are crash-looping.")
    return tool_calls(("list_pods", {"namespace": "payments"}))


def _no_null_content(recorded: Recorded) -> bool:
    return all(m.get("content") is not None for m in recorded.messages)


# 1 + 2: tools offered with a tool_choice; the second round after a tool call carries no null.


@pytest.mark.parametrize("mode", ["openai", "vllm", "ollama"])
def test_a_tool_round_passes_each_strict_server(mode, builtin_tools, fake_llm, endpoint, alice, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.mode = mode
    fake_llm.respond_with(answer_after_tool)
    result = conversations.answer(alice, "web", "what is failing in payments?")
    assert result.text == "I looked: the payments pods are crash-looping."
    first, second = fake_llm.completions
    assert first.json["tool_choice"] == "auto" and first.json["tools"]
    assert first.json["max_tokens"] == settings.LLM_MAX_TOKENS_CHAT
    assistant = [m for m in second.messages if m["role"] == "assistant"][-1]
    assert assistant["content"] == "" and assistant["tool_calls"][0]["function"]["name"] == "list_pods"
    assert _no_null_content(second)


def test_llama_cpp_python_calls_a_tool_only_when_named_and_the_answer_follows(builtin_tools, fake_llm, endpoint, alice, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.mode = "llama-cpp-python"
    # With tool_choice "auto" this server parses no tool call: the model's call comes back as text.
    fake_llm.script(tool_calls(("list_pods", {"namespace": "payments"})))
    written = conversations.answer(alice, "web", "what is failing in payments?")
    assert '"name": "list_pods"' in written.text and len(fake_llm.completions) == 1

    settings.LLM_TOOL_CHOICE = "list_pods"
    fake_llm.reset()
    fake_llm.mode = "llama-cpp-python"
    fake_llm.respond_with(lambda r: text("Pods listed.") if r.json.get("tool_choice") == "auto" else tool_calls(("list_pods", {})))
    result = conversations.answer(alice, "web", "what is failing in payments?")
    assert result.text == "Pods listed."
    first, second = fake_llm.completions
    assert first.json["tool_choice"] == {"type": "function", "function": {"name": "list_pods"}}
    assert second.json["tool_choice"] == "auto"  # forced once; then the model decides
    assert _no_null_content(second)
    # Our schemas carry DNS-1123 patterns with "\." that crashed its grammar parser: not sent.
    assert "pattern" not in json.dumps(first.json["tools"]) and fake_llm.crashes == 0
    stored = Message.objects.get(pk=result.message_id)
    assert stored.tool_calls[0]["name"] == "list_pods"


def test_a_null_content_is_what_llama_cpp_python_refuses_and_the_dump_reaches_nobody(fake_llm, endpoint, alice, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.mode = "llama-cpp-python"
    client = openai.OpenAI(base_url=fake_llm.url, api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError, match="validation errors"):  # what the old client sent
        client.chat.completions.create(model="fake-model", max_tokens=5, messages=[
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": []}])
    settings.LLM_MAX_RETRIES = 0
    fake_llm.script(error(500, LLAMA_CPP_NULL_CONTENT))
    result = conversations.answer(alice, "telegram", "how are my pods?")
    assert result.text == "I could not answer because the language model endpoint kept failing (1 attempt); commands such as /status still work."
    for leak in ("pydantic", "validation", "/usr/lib", "Input should", "{"):
        assert leak not in result.text


# 3: structured output learned once, from a 5xx, with no retries and no breaker count.


def test_rca_structured_output_steps_down_on_a_5xx_and_remembers_it(fake_llm, endpoint, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.mode = "llama-cpp-python"
    settings.LLM_BREAKER_THRESHOLD = 1  # one counted failure would open the circuit
    fake_llm.respond_with(lambda r: json_reply({"cause": "OOM"}))
    learned_before = _metric("aiops_llm_capability_fallbacks_total", feature="structured", fallback="json_object")

    first = llm.complete_json(JSON_PROMPT, alias=endpoint.alias, schema=SCHEMA, name="rca")
    assert json.loads(first.content) == {"cause": "OOM"} and first.structured == "json_object"
    formats = [r.json.get("response_format", {}).get("type") for r in fake_llm.completions]
    assert formats == ["json_schema", "json_object"]  # no retries of the refused level
    assert not llm.CircuitBreaker(endpoint.base_url).is_open()
    assert _metric("aiops_llm_capability_fallbacks_total", feature="structured", fallback="json_object") == learned_before + 1

    second = llm.complete_json(JSON_PROMPT, alias=endpoint.alias, schema=SCHEMA, name="rca")
    assert second.structured == "json_object"
    assert [r.json["response_format"]["type"] for r in fake_llm.completions[2:]] == ["json_object"]  # learned once
    assert all(r.json["max_tokens"] == settings.LLM_MAX_TOKENS_RCA for r in fake_llm.completions)


def test_a_server_refusing_both_formats_gets_the_prompt_alone(fake_llm, endpoint) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(error(400, "response_format is not supported"), error(500, "json_object?"), json_reply({"cause": "x"}))
    completion = llm.complete_json(JSON_PROMPT, alias=endpoint.alias, schema=SCHEMA, name="rca")
    assert completion.structured == "prompt" and "response_format" not in fake_llm.completions[-1].json
    assert compat.Capabilities(endpoint.base_url, endpoint.model).get("structured") == "prompt"


def test_openai_and_ollama_keep_json_schema(fake_llm, endpoint) -> None:  # type: ignore[no-untyped-def]
    for mode in ("openai", "ollama", "vllm"):
        fake_llm.mode = mode
        fake_llm.script(json_reply({"cause": "x"}))
        assert llm.complete_json(JSON_PROMPT, alias=endpoint.alias, schema=SCHEMA, name="rca").structured == "json_schema"
    assert compat.Capabilities(endpoint.base_url, endpoint.model).get("structured") is None


def test_an_outage_during_the_ladder_still_counts_once(fake_llm, endpoint, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_MAX_RETRIES = 1
    fake_llm.respond_with(lambda r: error(503, "down"))
    with pytest.raises(llm.LLMUnavailable):
        llm.complete_json(JSON_PROMPT, alias=endpoint.alias, schema=SCHEMA, name="rca")
    # 503 is an outage, not a refusal of json_schema: retried, counted, nothing learned.
    assert len(fake_llm.completions) == 2
    assert compat.Capabilities(endpoint.base_url, endpoint.model).get("structured") is None


# 4: max_tokens always, and a deadline below the task's limit.


def test_every_request_is_bounded_so_a_local_model_cannot_write_for_minutes(builtin_tools, fake_llm, endpoint, alice, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.mode = "llama-cpp-python"
    fake_llm.unbounded_delay = 60  # what a request without max_tokens costs on this server
    fake_llm.respond_with(lambda r: text("short answer"))
    started = time.monotonic()
    assert conversations.answer(alice, "web", "hi").text == "short answer"
    llm.complete_json(JSON_PROMPT, alias=endpoint.alias, schema=SCHEMA, name="rca", purpose="rca")
    assert time.monotonic() - started < 20
    sent = [r.json["max_tokens"] for r in fake_llm.completions]
    assert sent[0] == settings.LLM_MAX_TOKENS_CHAT and sent[-1] == settings.LLM_MAX_TOKENS_RCA


def test_a_slow_model_ends_at_the_deadline_not_at_the_task_kill(fake_llm, endpoint, alice, settings) -> None:  # type: ignore[no-untyped-def]
    from agents.tasks_llm import answer_message

    assert answer_message.soft_time_limit > settings.LLM_CHAT_TIME_LIMIT >= 5
    assert answer_message.time_limit > answer_message.soft_time_limit
    settings.LLM_CHAT_TIME_LIMIT = 3
    settings.LLM_RETRY_BACKOFF = 0.01
    fake_llm.respond_with(lambda r: text("too late", delay=10))
    started = time.monotonic()
    result = conversations.answer(alice, "web", "hi")
    assert time.monotonic() - started < 6
    assert result.text.startswith("I ran out of time answering this")
    assert Message.objects.get(pk=result.message_id).error == "time_limit"


def test_vllm_refuses_a_max_tokens_beyond_its_context_in_one_sentence(fake_llm, endpoint, alice, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.mode = "vllm"
    fake_llm.context_length = 512
    settings.LLM_MAX_TOKENS_CHAT = 1000
    result = conversations.answer(alice, "web", "hi")
    assert result.text == "I could not answer because the language model endpoint refused the request (HTTP 400)."
    assert len(fake_llm.completions) == 1  # not retried


# 6: a server that refuses tools: a tool-less answer that says so, learned once.


@pytest.mark.parametrize("mode", ["ollama", "vllm"])
def test_a_server_without_tools_gets_a_toolless_answer_that_says_so(mode, builtin_tools, fake_llm, endpoint, alice) -> None:  # type: ignore[no-untyped-def]
    fake_llm.mode = mode
    fake_llm.tools_supported = False
    fake_llm.respond_with(lambda r: text("From what I know: check the pods."))
    result = conversations.answer(alice, "web", "what is failing?")
    assert result.text.startswith("From what I know: check the pods.")
    assert "does not accept tools, so I answered without looking at your clusters" in result.text
    assert [bool(r.json.get("tools")) for r in fake_llm.completions] == [True, False]
    conversations.answer(alice, "web", "and now?")
    assert "tools" not in fake_llm.completions[-1].json and len(fake_llm.completions) == 3  # learned
    assert not llm.CircuitBreaker(endpoint.base_url).is_open()


def test_a_passing_500_does_not_cost_chat_its_tools(builtin_tools, fake_llm, endpoint, alice, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(error(500, "internal error"))
    fake_llm.respond_with(lambda r: text("fine"))
    assert conversations.answer(alice, "web", "hi").text == "fine"
    assert [bool(r.json.get("tools")) for r in fake_llm.completions] == [True, True]  # retried as it was
    assert compat.Capabilities(endpoint.base_url, endpoint.model).get("tools") is None


# 7: notices are not the model's turns; /model takes the default and served models; logs keep counts.


def test_a_failure_notice_is_not_fed_back_as_the_models_answer(fake_llm, endpoint, alice, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_MAX_RETRIES = 0
    fake_llm.script(error(503, "down"))
    notice = conversations.answer(alice, "telegram", "first question")
    assert "could not answer" in notice.text
    fake_llm.respond_with(lambda r: text(f"answer to {len(r.messages)} messages"))
    conversations.answer(alice, "telegram", "second question")
    contents = [m["content"] for m in fake_llm.completions[-1].messages]
    assert contents[1:] == ["second question"]
    assert not any("could not answer" in c for c in contents)


def test_model_accepts_the_configured_default_and_what_the_endpoint_serves(fake_llm, alice, settings) -> None:  # type: ignore[no-untyped-def]
    from agents.llm.breaker import _redis

    settings.LLM_BASE_URL = fake_llm.url
    settings.LLM_API_KEY = "local"
    settings.LLM_DEFAULT_MODEL = "gemma3-270m"  # a raw model id, not an alias
    fake_llm.models = ["gemma3-270m", "qwen2.5-0.5b"]
    for key in _redis().scan_iter("aiops:llm:models:*"):
        _redis().delete(key)
    listing = conversations.set_model(alice, "web", "")
    assert "gemma3-270m" in listing and "qwen2.5-0.5b" in listing
    assert conversations.set_model(alice, "web", "gemma3-270m").startswith("Model set to gemma3-270m")
    assert conversations.set_model(alice, "web", "qwen2.5-0.5b").startswith("Model set to qwen2.5-0.5b")
    fake_llm.script(text("hello from qwen"))
    assert conversations.answer(alice, "web", "hi").text == "hello from qwen"
    assert fake_llm.completions[-1].json["model"] == "qwen2.5-0.5b"
    assert conversations.set_model(alice, "web", "nope").startswith("Unknown model 'nope'")


def test_log_masking_keeps_token_counts_and_still_masks_tokens() -> None:
    from agents.redaction import redact_log_event

    event = redact_log_event(None, "info", {"event": "task", "result": "{'text': 'hi', 'tokens': 1066}",
                                            "line": "max_tokens=800 token=abcdef123"})
    assert event["result"] == "{'text': 'hi', 'tokens': 1066}"
    assert event["line"].startswith("max_tokens=800 token=[TOKEN_")


# 5: the RCA always leaves a report, whatever the model does and however slow it is.

CRASHING_POD = {
    "pod": {
        "metadata": {"name": "api-1", "namespace": "shop", "labels": {"app": "api"}},
        "spec": {"containers": [{"name": "api", "image": "shop/api:1"}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "api", "ready": False, "restartCount": 5, "image": "shop/api:1",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]},
    },
    "events": [],
}
GOOD_REPORT = {
    "root_cause": "The container exceeds its memory limit.", "failure_class": "oom_killed", "confidence": 0.7,
    "evidence": [{"source": "status", "detail": "OOMKilled"}],
    "recommended_actions": [{"action": "Raise the memory limit", "playbook": None}], "related_resources": [],
}


def test_an_rca_on_llama_cpp_python_goes_through_the_ladder_to_a_validated_report(fake_llm, endpoint) -> None:  # type: ignore[no-untyped-def]
    from agents.rca import analyze

    fake_llm.mode = "llama-cpp-python"
    fake_llm.respond_with(lambda r: json_reply(GOOD_REPORT))
    report = analyze(json.loads(json.dumps(CRASHING_POD)))
    assert report["method"] == "llm" and report["structured_output"] == "json_object"
    assert [r.json.get("response_format", {}).get("type") for r in fake_llm.completions] == ["json_schema", "json_object"]


def test_a_model_slower_than_the_deadline_leaves_the_deterministic_report_with_the_reason(fake_llm, endpoint, settings) -> None:  # type: ignore[no-untyped-def]
    from agents.rca import analyze

    settings.LLM_RCA_TIME_LIMIT = 2
    fake_llm.respond_with(lambda r: json_reply(GOOD_REPORT, delay=30))
    before = _metric("aiops_rca_fallbacks_total", reason="time_limit")
    started = time.monotonic()
    report = analyze(json.loads(json.dumps(CRASHING_POD)))
    assert time.monotonic() - started < 6
    assert report["method"] == "deterministic" and report["failure_class"] == "oom_killed"
    assert report["fallback"] == {"reason": "time_limit", "detail": "the LLM did not finish within the time allowed for it"}
    assert _metric("aiops_rca_fallbacks_total", reason="time_limit") == before + 1
    assert not llm.CircuitBreaker(endpoint.base_url).is_open()


def test_a_report_cut_by_max_tokens_is_not_sent_for_repair(fake_llm, endpoint, settings) -> None:  # type: ignore[no-untyped-def]
    from agents.rca import analyze

    settings.LLM_MAX_TOKENS_RCA = 64
    fake_llm.script(Reply(message={"role": "assistant", "content": '{"root_cause": "The contai'}, finish_reason="length"))
    report = analyze(json.loads(json.dumps(CRASHING_POD)))
    assert report["method"] == "deterministic" and report["fallback"]["reason"] == "invalid_output"
    assert "cut at 64 tokens (LLM_MAX_TOKENS_RCA)" in report["fallback"]["detail"]
    assert len(fake_llm.completions) == 1  # a repair within the same budget would be cut again
