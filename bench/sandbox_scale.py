"""How fast the sandbox serves a big cluster: the bed the poll benchmark stands on.

A sandbox in its own process (TLS + token, like a real API server) is seeded by its scale
generator with `--pods` pods. Then, through the real kubernetes client with
`_preload_content=False` (the watch loop's way), `--repeat` times each:

  whole   one list of every pod;
  paged   the same pods in pages of `--page` (`limit`/`continue`), the baseline being `whole`;
  small   one `read_node` request (p50 latency), what every `kubectl` call pays per request.

Run:  .venv/bin/python bench/sandbox_scale.py [--pods 10000] [--page 500] [--repeat 3]
Last line: one JSON object (seconds, bytes and the paged/whole ratio).
"""

from __future__ import annotations

import argparse
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
import json, sys, time
from k8s.sandbox import Sandbox
sb = Sandbox(tls=True, state_dir=sys.argv[1], scenario="empty").start()
started = time.perf_counter()
made = sb.generate(int(sys.argv[2]))
seconds = time.perf_counter() - started
print("BENCH-READY " + json.dumps({"kubeconfig": sb.kubeconfig, "made": made, "seed_s": seconds}), flush=True)
sys.stdin.read()
sb.stop()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    import orjson
    from kubernetes import client as k8s

    from k8s.client import api_client_for_kubeconfig

    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as state:
        server = subprocess.Popen([sys.executable, "-c", SANDBOX, state, str(args.pods)], cwd=ROOT, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "AIOPS_LOG_LEVEL": "WARNING"})
        try:
            assert server.stdout is not None
            line = ""
            while not line.startswith("BENCH-READY "):
                line = server.stdout.readline()
                if not line and server.poll() is not None:
                    raise SystemExit("the sandbox process exited before it was ready")
            ready = json.loads(line.split(" ", 1)[1])
            core = k8s.CoreV1Api(api_client_for_kubeconfig(ready["kubeconfig"]))
            core.read_node  # noqa: B018  (import the generated API module before timing)

            whole, paged, small, sizes = [], [], [], []
            for _ in range(args.repeat):
                started = time.perf_counter()
                body = core.list_pod_for_all_namespaces(_preload_content=False).data
                count = len(orjson.loads(body)["items"])
                whole.append(time.perf_counter() - started)
                sizes.append(len(body))
                assert count == args.pods, count

                started = time.perf_counter()
                token, count, pages = None, 0, 0
                while True:
                    page = orjson.loads(core.list_pod_for_all_namespaces(limit=args.page, _continue=token, _preload_content=False).data)
                    count += len(page["items"])
                    pages += 1
                    token = page["metadata"].get("continue")
                    if not token:
                        break
                paged.append(time.perf_counter() - started)
                assert count == args.pods, count

            node = core.list_node(limit=1).items[0].metadata.name
            for _ in range(50):
                started = time.perf_counter()
                core.read_node(node, _preload_content=False).data  # noqa: B018
                small.append(time.perf_counter() - started)
        finally:
            if server.stdin:
                server.stdin.close()
            server.wait(60)

    result = {
        "pods": args.pods,
        "seed_s": round(ready["seed_s"], 2),
        "list_bytes": sizes[0],
        "whole_s": round(statistics.median(whole), 3),
        "paged_s": round(statistics.median(paged), 3),
        "pages": pages,
        "paged_over_whole": round(statistics.median(paged) / statistics.median(whole), 2),
        "read_p50_ms": round(statistics.median(small) * 1000, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
