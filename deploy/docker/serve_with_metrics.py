"""`python deploy/docker/serve_with_metrics.py --port N MODULE -- ARGS...`: serve this process's
metrics on a port of their own, then run MODULE as `python -m MODULE ARGS...` would.

For a process with no metrics endpoint of its own, such as the MCP sidecar in Kubernetes: it is
a container of its own, whose prometheus_client files no other process can read. (A script, not
`python -m aiops_site.metrics`: running that module as __main__ would define its metrics twice.)
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve_with_metrics.py")
    parser.add_argument("--port", type=int, required=True, help="metrics port (0 picks a free one)")
    parser.add_argument("--address", default=os.environ.get("AIOPS_METRICS_ADDRESS", "127.0.0.1"))
    parser.add_argument("module", help="the module to run once the metrics server listens")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    if not 0 <= options.port <= 65535:
        parser.error(f"--port {options.port} is not a port number")

    from aiops_site.metrics import start_metrics_server

    start_metrics_server(options.port, options.address, web=False, what=options.module)
    sys.argv = [options.module, *[arg for arg in options.args if arg != "--"]]
    runpy.run_module(options.module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
