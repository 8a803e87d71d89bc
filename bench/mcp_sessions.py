"""What keeping MCP sessions open buys: one tool call on a kept session vs a session per call.

Issue 5 says starting a stdio server per call costs ~1.5 s; the client manager keeps one session
per server per process. In one run, against a sandbox cluster (its own process, TLS + token):

  kept_stdio   `--calls` calls of `list_namespaces` through `agents.mcp_client.ClientManager`
               to `python -m k8s.mcp_server` over stdio, the session opened once (not timed);
  kept_http    the same over streamable HTTP with the bearer token, to a server started once;
  per_call     the baseline: a fresh `mcp.Client` (a new stdio server process) for each call,
               `--baseline-calls` times.

Run: .venv/bin/python bench/mcp_sessions.py [--calls 50] [--baseline-calls 5]
Last line: one JSON object with the p50/p95 per-call milliseconds and the ratio per_call/kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SANDBOX = """
import json, sys
from k8s.sandbox import Sandbox
sb = Sandbox(tls=True, state_dir=sys.argv[1], scenario="demo").start()
print("BENCH-READY " + json.dumps({"kubeconfig": str(sb.kubeconfig)}), flush=True)
sys.stdin.read()
sb.stop()
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(samples: list[float], fn) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    samples.append((time.perf_counter() - started) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--baseline-calls", type=int, default=5)
    args = parser.parse_args()

    from mcp import Client, StdioServerParameters

    from agents.mcp_client import ClientManager, ServerConfig

    workdir = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    sandbox = subprocess.Popen([sys.executable, "-c", SANDBOX, str(workdir)], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = ""
    while not line.startswith("BENCH-READY"):
        line = sandbox.stdout.readline()  # type: ignore[union-attr]
        if not line and sandbox.poll() is not None:
            raise SystemExit("the sandbox did not start")
    kubeconfig = json.loads(line.split(" ", 1)[1])["kubeconfig"]

    token = os.urandom(16).hex()
    port_file = workdir / "port"
    http_server = subprocess.Popen(
        [sys.executable, "-m", "k8s.mcp_server", "--http", "--port", "0", "--port-file", str(port_file),
         "--kubeconfig", kubeconfig, "--read-only"],
        cwd=ROOT, env={**os.environ, "AIOPS_MCP_TOKEN": token}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while not port_file.exists():
            time.sleep(0.05)
        stdio = ServerConfig(name="bench-stdio", transport="stdio", command=sys.executable,
                             args=("-m", "k8s.mcp_server", "--kubeconfig", kubeconfig, "--read-only"), timeout=60)
        http = ServerConfig(name="bench-http", transport="streamable-http", timeout=60,
                            url=f"http://127.0.0.1:{port_file.read_text().strip()}/mcp",
                            headers=(("Authorization", f"Bearer {token}"),))
        manager = ClientManager()
        results: dict[str, list[float]] = {"kept_stdio": [], "kept_http": [], "per_call": []}
        for name, config in (("kept_stdio", stdio), ("kept_http", http)):
            manager.call_tool(config, "list_namespaces", {})  # opens the session (not timed)
            for _ in range(args.calls):
                timed(results[name], lambda c=config: manager.call_tool(c, "list_namespaces", {}))
        manager.close()

        async def one_fresh_call() -> None:
            params = StdioServerParameters(command=sys.executable, cwd=str(ROOT),
                                           args=["-m", "k8s.mcp_server", "--kubeconfig", kubeconfig, "--read-only"])
            async with Client(params) as client:
                result = await client.call_tool("list_namespaces", {})
                assert not result.is_error, result.content

        for _ in range(args.baseline_calls):
            timed(results["per_call"], lambda: asyncio.run(one_fresh_call()))
    finally:
        http_server.terminate()
        http_server.wait()
        sandbox.stdin.close()  # type: ignore[union-attr]
        sandbox.wait()

    summary: dict[str, float | int] = {"calls": args.calls, "baseline_calls": args.baseline_calls}
    for name, samples in results.items():
        summary[f"{name}_p50_ms"] = round(statistics.median(samples), 1)
        summary[f"{name}_p95_ms"] = round(percentile(samples, 0.95), 1)
    summary["per_call_over_kept_stdio"] = round(summary["per_call_p50_ms"] / summary["kept_stdio_p50_ms"], 1)
    summary["per_call_over_kept_http"] = round(summary["per_call_p50_ms"] / summary["kept_http_p50_ms"], 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
