"""The RCA playbook step on the real worker: a model slower than the step allows still leaves
the incident a report (the deterministic one, with the reason), and the run goes on."""

from __future__ import annotations

import time

import pytest

from playbooks.models import Incident, PlaybookRun, Rule, Step
from playbooks.services.poll import poll
from tests.conftest import wait_for
from tests.fakes.openai_server import json_reply

pytestmark = [pytest.mark.integration]


def test_a_model_sleeping_past_the_deadline_still_leaves_a_report(engine, fake_llm) -> None:  # type: ignore[no-untyped-def]
    Rule.objects.exclude(name="image_pull_failure").update(enabled=False)
    # The step's own limit bounds the LLM part (here 20 - 10 s of margin = 10 s), not the model.
    Step.objects.filter(playbook__name="image_pull_diagnosis", kind="rca").update(timeout_seconds=20)
    fake_llm.respond_with(lambda r: json_reply({"root_cause": "too late"}, delay=120))
    engine.sandbox.fault("image_pull_failure", "shop/frontend")
    engine.sandbox.tick()
    started = time.monotonic()
    poll(engine.cluster)
    run = PlaybookRun.objects.get(incident__workload_name="frontend")

    def finished() -> PlaybookRun | None:
        run.refresh_from_db()
        return run if run.state == "finished" else None

    wait_for(finished, timeout=90, interval=0.5, message="the diagnosis run to finish")
    elapsed = time.monotonic() - started
    rca = run.steps.get(kind="rca")
    assert rca.state == "succeeded", (rca.state, rca.error)
    incident = Incident.objects.get(pk=run.incident_id)
    report = incident.rca_report
    assert report["method"] == "deterministic" and report["failure_class"] == "image_pull_error"
    assert report["fallback"]["reason"] == "time_limit"
    # The run went on past the RCA to its end (diagnostic playbooks end by handing off to people).
    later = run.steps.filter(order__gt=rca.order)
    assert later.exists() and all(step.state == "succeeded" for step in later), [(s.name, s.state) for s in later]
    assert run.outcome in ("completed", "handed_off") and elapsed < 60
    assert fake_llm.completions  # the model was asked, and was too slow
