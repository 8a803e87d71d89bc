"""The LLM path against a real OpenAI-compatible server: llama-cpp-python's `llama_cpp.server`
with Gemma 3 270M (tests/llama_cpp_server.py), on loopback, with nothing in between.

The model is too small to be right; these tests check the wire (what the real server accepts),
the app's handling and what the person sees. Each request is bounded by a small `max_tokens`;
the time limits are generous because a loaded 2-core machine runs this model ~10x slower.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from prometheus_client import REGISTRY

from agents import conversations, llm
from agents.llm.compat import Capabilities
from agents.models import AuditEntry, Message, ModelAlias
from tests.conftest import ROOT, free_port, wait_for
from tests.llama_cpp_server import MODEL_ALIAS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def _patient(settings):  # type: ignore[no-untyped-def]
    settings.LLM_TIMEOUT = 400
    settings.LLM_CHAT_TIME_LIMIT = 800
    settings.LLM_RCA_TIME_LIMIT = 800


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: str

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_llama_server(log_dir: Any) -> LlamaServer:
    port = free_port()
    log_path = str(log_dir / f"llama-{port}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.llama_cpp_server", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    server = LlamaServer(process, f"http://127.0.0.1:{port}/v1", log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {process.returncode}:\n{server.log()}")
        try:
            return httpx.get(server.url + "/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=120, interval=0.5, message="llama_cpp.server to serve /v1/models")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = start_llama_server(tmp_path_factory.mktemp("llama"))
    yield server
    server.stop()


def _point_default_model_at(server: LlamaServer, settings: Any) -> llm.Endpoint:
    ModelAlias.objects.update_or_create(
        name=settings.LLM_DEFAULT_MODEL, defaults={"model": MODEL_ALIAS, "base_url": server.url, "enabled": True}
    )
    endpoint = llm.resolve(settings.LLM_DEFAULT_MODEL)
    llm.CircuitBreaker(endpoint.base_url).reset()
    Capabilities(endpoint.base_url, endpoint.model).forget()
    return endpoint


@pytest.fixture
def alice(db):  # type: ignore[no-untyped-def]
    return get_user_model().objects.create_user("alice-llama", password="x")


def test_a_chat_question_makes_a_forced_low_tool_call_and_gets_an_answer(
    llama_server, sandbox_cluster, kube_tools, alice, settings  # type: ignore[no-untyped-def]
) -> None:
    _point_default_model_at(llama_server, settings)
    # This server returns tool calls only for a named tool; one with a small schema, so the forced
    # arguments fit in max_tokens.
    settings.LLM_TOOL_CHOICE = "list_namespaces"
    settings.LLM_MAX_TOKENS_CHAT = 32  # the forced arguments took 19 tokens
    settings.LLM_MAX_TOOL_ROUNDS = 1  # the forced call, then the answer
    settings.LLM_TOOL_OUTPUT_BUDGET = 1000  # the tool's output must fit the 2,048-token context
    started = time.monotonic()

    result = conversations.answer(alice, "web", "Which namespaces does the cluster have?")

    reply = Message.objects.get(pk=result.message_id)
    assert reply.error == "", result.text  # an answer, not a notice that none came
    assert result.text.strip() and result.text != "(the model gave no answer)"
    (call,) = reply.tool_calls
    assert call["name"] == "list_namespaces" and call["outcome"] in ("ran", "failed"), call
    # Run through call_tool and audited; the tiny model's arguments (a made-up cluster name, say)
    # may be refused by the MCP server's checks ("invalid"): that is the gate working, not the wire.
    audit = AuditEntry.objects.filter(tool="list_namespaces", actor="llm:alice-llama@web").latest("id")
    assert audit.outcome in ("ok", "error", "invalid"), audit.outcome
    # The second round (an assistant turn with a tool call, then the tool's output) was accepted.
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    print(f"chat with a forced tool call: {time.monotonic() - started:.1f}s, {reply.tokens} tokens, {call}")


def test_an_rca_goes_through_the_structured_output_fallbacks(llama_server, db, settings) -> None:  # type: ignore[no-untyped-def]
    from agents.rca import analyze

    endpoint = _point_default_model_at(llama_server, settings)
    settings.LLM_MAX_TOKENS_RCA = 48  # JSON sampled under a grammar is the slow part
    bundle = {
        "pod": {
            "metadata": {"name": "api-7d9f-abcde", "namespace": "shop", "labels": {"app": "api"}},
            "spec": {"containers": [{"name": "api", "image": "shop/api:1.4", "resources": {"limits": {"memory": "128Mi"}}}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "api", "ready": False, "restartCount": 6, "image": "shop/api:1.4",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]},
        },
        "events": [{"reason": "BackOff", "message": "Back-off restarting failed container api", "count": 12}],
    }
    started = time.monotonic()

    report = analyze(bundle)

    # json_schema is a 500 on this server: learned, and json_object used from then on.
    assert Capabilities(endpoint.base_url, endpoint.model).get("structured") == "json_object"
    if report["method"] == "llm":
        assert report["structured_output"] == "json_object" and report["failure_class"]
    else:
        assert report["failure_class"] == "oom_killed"  # the deterministic report
        assert report["fallback"]["reason"] == "invalid_output", report["fallback"]
        assert report["note"].startswith("Deterministic report: the LLM's report was ")  # invalid, or cut
    assert not llm.CircuitBreaker(endpoint.base_url).is_open()  # a refusal of json_schema is no outage
    print(f"RCA: {time.monotonic() - started:.1f}s, {report['method']}, {report.get('fallback')}")


def test_the_server_killed_mid_request_gives_the_person_one_clean_sentence(
    tmp_path, alice, settings  # type: ignore[no-untyped-def]
) -> None:
    server = start_llama_server(tmp_path)
    try:
        _point_default_model_at(server, settings)
        settings.LLM_MAX_TOKENS_CHAT = 400  # long enough to be cut
        settings.LLM_MAX_RETRIES = 1
        settings.LLM_RETRY_BACKOFF = 0.2
        # Killed from a timer while this thread's request is in the server, generating.
        killer = threading.Timer(3, os.kill, (server.process.pid, signal.SIGKILL))
        started = time.monotonic()
        killer.start()
        answer = conversations.answer(alice, "telegram", "Write a long story about Kubernetes pods.")
        elapsed = time.monotonic() - started
        killer.join()
    finally:
        server.stop()
    assert elapsed >= 2.9  # the first attempt was cut by the kill, not refused at connect
    assert answer.text == (
        "I could not answer because the language model endpoint could not be reached (2 attempts); "
        "commands such as /status still work."
    )
    assert Message.objects.get(pk=answer.message_id).error == "unavailable"


def test_an_rca_investigation_makes_a_forced_low_tool_call_and_leaves_a_report(
    llama_server, sandbox_cluster, kube_tools, settings  # type: ignore[no-untyped-def]
) -> None:
    from agents.rca import analyze, gather_bundle

    _point_default_model_at(llama_server, settings)
    # The compact prompt keeps prompt + tool results within the 2,048-token context; this server
    # returns a tool call only for a named tool, one whose arguments are all optional.
    settings.LLM_RCA_PROMPT = "compact"
    settings.LLM_RCA_TOOL_CHOICE = "list_events"
    settings.LLM_RCA_TOOL_ROUNDS = 1
    settings.LLM_RCA_TOOL_OUTPUT_BUDGET = 1000
    settings.LLM_MAX_TOKENS_RCA = 48
    bundle = gather_bundle(sandbox_cluster, {"kind": "Deployment", "namespace": "payments", "name": "ledger"})
    outcomes = ("ran", "failed", "refused", "bad_arguments", "budget_exhausted")
    before = sum(_metric("aiops_rca_tool_calls_total", outcome=o) for o in outcomes)
    started = time.monotonic()

    report = analyze(bundle, context={"cluster": "", "subject": "Deployment payments/ledger"})

    # The forced call was made (the tiny model's arguments may be cut or refused by the tool's
    # checks: that is the gate working), and the requests after it were accepted by the server.
    assert sum(_metric("aiops_rca_tool_calls_total", outcome=o) for o in outcomes) == before + 1
    if report["method"] == "llm":
        (call,) = report["investigation"]["calls"]
        assert call["tool"] == "list_events"
        if call["audit_id"]:
            assert AuditEntry.objects.get(pk=call["audit_id"]).actor == "llm:rca"
    else:  # the tiny model's JSON was cut or invalid: the deterministic report, with why
        assert report["fallback"]["reason"] == "invalid_output", report["fallback"]
    audited = AuditEntry.objects.filter(tool="list_events", actor="llm:rca")
    assert all(a.outcome in ("ok", "error", "invalid") for a in audited)
    print(f"RCA investigation: {time.monotonic() - started:.1f}s, {report['method']}, {report.get('fallback')}")
