"""`python -m k8s.mcp_server`: serve the Kubernetes tools over stdio (default) or streamable HTTP.

    python -m k8s.mcp_server                                   # stdio, KUBECONFIG / in-cluster
    python -m k8s.mcp_server --kubeconfig ~/.kube/config --context prod --read-only
    python -m k8s.mcp_server --http --port 0 --port-file .run/mcp_port --django

HTTP binds loopback only and requires `Authorization: Bearer $AIOPS_MCP_TOKEN`: this server
holds write access to clusters, so nothing but our workers may reach it. `--django` resolves
the `cluster` argument against registered Clusters (DJANGO_SETTINGS_MODULE, default ours).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m k8s.mcp_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP on /mcp instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (HTTP)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (HTTP); 0 picks a free one")
    parser.add_argument("--port-file", help="write the bound port here once listening (HTTP)")
    parser.add_argument("--read-only", action="store_true", help="serve the LOW (read-only) tools alone")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    parser.add_argument("--context", default=None, help="kubeconfig context when `cluster` is not given")
    parser.add_argument("--django", action="store_true",
                        help="resolve `cluster` against registered Clusters (needs the database)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per Kubernetes API request (default AIOPS_MCP_KUBE_TIMEOUT or 20)")
    args = parser.parse_args(argv)
    if args.timeout is None:
        raw = os.environ.get("AIOPS_MCP_KUBE_TIMEOUT", "").strip() or "20"
        try:
            args.timeout = float(raw)
        except ValueError:
            parser.error(f"AIOPS_MCP_KUBE_TIMEOUT={raw!r} is not a number")
    if args.http:
        try:
            loopback = ipaddress.ip_address(args.host).is_loopback
        except ValueError:
            loopback = args.host == "localhost"
        if not loopback:
            parser.error(f"--host {args.host!r} is not a loopback address; this server must not be reachable "
                         "from other machines")
        if not os.environ.get("AIOPS_MCP_TOKEN"):
            parser.error("AIOPS_MCP_TOKEN must be set to serve HTTP (every request must carry it)")
        if not 0 <= args.port <= 65535:
            parser.error(f"--port {args.port} is not a port number")
    from k8s.mcp_server.kube import BOUNDS, ToolFailure, _env_number

    for name in BOUNDS:
        try:
            _env_number(name)
        except ToolFailure as exc:
            parser.error(str(exc))
    if args.timeout <= 0:
        parser.error(f"--timeout / AIOPS_MCP_KUBE_TIMEOUT must be above 0, not {args.timeout:g}")
    if args.kubeconfig and not Path(args.kubeconfig).expanduser().is_file() and not args.django:
        parser.error(f"--kubeconfig {args.kubeconfig!r}: no such file")
    return args


def _configure_logging() -> None:
    # stdout carries the protocol on stdio: logs must go to stderr, as JSON lines.
    import structlog

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.django:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
        import django

        django.setup()  # our settings send logs to stderr
    else:
        _configure_logging()

    import anyio

    from k8s.mcp_server.server import BearerAuth, ClusterResolver, build_server

    resolver = ClusterResolver(kubeconfig=None if args.django else args.kubeconfig, context=args.context,
                               use_django=args.django)
    server = build_server(resolver, read_only=args.read_only, timeout=args.timeout)
    if not args.http:
        from mcp.server.stdio import stdio_server

        async def serve_stdio() -> None:
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())

        anyio.run(serve_stdio)
        return 0

    import structlog
    import uvicorn

    app = BearerAuth(server.streamable_http_app(streamable_http_path="/mcp", host=args.host),
                     os.environ["AIOPS_MCP_TOKEN"])
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"k8s.mcp_server: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    sock.listen(128)
    port = sock.getsockname()[1]
    if args.port_file:
        # Written after listen(): a client that reads the port can connect at once.
        tmp = Path(args.port_file).with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    structlog.get_logger("k8s.mcp_server").info("mcp_server_listening", url=f"http://{args.host}:{port}/mcp",
                                                read_only=args.read_only, django=args.django)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
