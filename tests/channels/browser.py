"""The console in a real browser (Debian's Chromium through Playwright): launching it, axe-core
checks and screenshots. axe-core comes from npm (pinned in .ci/run), injected into the page."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = Path(os.environ.get("AIOPS_AXE_JS", ROOT / ".cache/npm/node_modules/axe-core/axe.min.js"))
ARTIFACTS = Path(os.environ.get("AIOPS_TEST_ARTIFACTS", ROOT / ".run/test-artifacts"))
WIDTHS = {"desktop": (1440, 900), "phone": (390, 844)}
SECONDS: dict[str, float] = {}  # what the checks cost, written next to the screenshots


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path="/usr/bin/chromium", headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


def axe_violations(page: Any) -> list[str]:
    """Serious and critical axe-core violations of the page as it is now, one line each."""
    if not AXE_JS.exists():
        raise AssertionError(f"axe-core is not installed at {AXE_JS}: run .ci/run (npm install axe-core)")
    # Evaluated through the DevTools protocol, not as a <script> tag: the console's CSP
    # (script-src 'self') refuses inline scripts, and must stay on while it is checked.
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_JS.read_text() + "\n;undefined")
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    found = []
    for violation in result["violations"]:
        if violation.get("impact") in ("serious", "critical"):
            targets = [json.dumps(node["target"]) for node in violation["nodes"][:3]]
            found.append(f"{violation['impact']} {violation['id']}: {violation['help']} at {', '.join(targets)}")
    return found


def check_page(page: Any, name: str) -> None:
    """At both widths: 0 serious/critical axe violations, nothing wider than the screen, and a
    full-page screenshot saved as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    problems = []
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            problems.append(f"{name} at {width}px is {overflow}px wider than the screen")
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
        problems += [f"{name} at {width}px: {v}" for v in axe_violations(page)]
    page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})
    SECONDS[name] = round(time.monotonic() - started, 2)
    (ARTIFACTS / "check-seconds.json").write_text(json.dumps(SECONDS, indent=2))
    assert not problems, "\n".join(problems)
