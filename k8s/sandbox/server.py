"""The sandbox's HTTP(S) server, its kubeconfig, and `Sandbox`: start, control, stop.

Plain `http.server` with a thread per connection: kubectl and the kubernetes client need
HTTP/1.1 keep-alive and chunked watch streams, nothing more. Every request needs the
bearer token written into the kubeconfig (the admin endpoint mutates the cluster).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import ipaddress
import os
import secrets
import socket
import ssl
import sys
import tempfile
import threading
from base64 import b64encode
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import structlog
import yaml

from k8s.sandbox import faults as fault_rules
from k8s.sandbox import scenarios
from k8s.sandbox.api import MAX_BODY, Api, Request
from k8s.sandbox.errors import ApiError
from k8s.sandbox.simulation import Simulation

log = structlog.get_logger(__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aiops-sandbox/1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; with Nagle on, the second waits for the
        # client's delayed ACK (40 ms a request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > MAX_BODY:
                    raise ApiError(413, "RequestEntityTooLarge", "the request body is too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, "RequestEntityTooLarge", "the request body is too large")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except (ApiError, ValueError) as exc:
            error = exc if isinstance(exc, ApiError) else ApiError.bad_request(f"malformed request body: {exc}")
            self._send(error.code, "application/json", orjson.dumps(error.status()))
            self.close_connection = True
            return
        response = self.server.api.handle(Request.build(self.command, self.path, dict(self.headers.items()), body))
        if response.stream is None:
            self._send(response.status, response.content_type, response.body, response.headers)
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        try:
            for chunk in response.stream:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        except Exception:  # a bug mid-stream: end this watch (the client re-lists), keep serving
            log.exception("sandbox.watch_failed", path=self.path)
            self.close_connection = True

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (http.server's signature)
        log.debug("sandbox.request", line=format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: Api

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops its connection (a watcher stopping mid-stream) is not a server error.
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
            log.debug("sandbox.connection_dropped", client=str(client_address))
            return
        super().handle_error(request, client_address)


def generate_certificate(directory: Path) -> tuple[Path, Path, bytes]:
    """A CA and a server certificate for 127.0.0.1/localhost; returns (cert, key, CA PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiops-sandbox-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "sandbox-server.crt", directory / "sandbox-server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path, ca.public_bytes(serialization.Encoding.PEM)


def write_kubeconfig(path: Path, url: str, token: str, ca_pem: bytes | None) -> None:
    cluster: dict[str, Any] = {"server": url}
    if ca_pem:
        cluster["certificate-authority-data"] = b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": cluster}],
        "users": [{"name": "sandbox-admin", "user": {"token": token}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox-admin", "namespace": "default"}}],
        "current-context": "sandbox",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole and then renamed: a reader never sees half a kubeconfig (or a world-readable token).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kubeconfig-")
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Sandbox:
    """A sandbox cluster served on 127.0.0.1 from this process.

    `tick_interval` None means the simulation only advances on `tick()` (tests); the CLI
    runs a loop. Reconciliation (a deleted pod's replacement, a rollout) happens on every
    write regardless.
    """

    def __init__(self, *, port: int = 0, tls: bool = False, token: str | None = None, scenario: str = "demo",
                 kubeconfig: str | Path | None = None, state_dir: str | Path | None = None,
                 tick_interval: float | None = None, seed: int = 7) -> None:
        self.sim = Simulation(seed=seed)
        self.token = token or secrets.token_urlsafe(32)
        self.tls = tls
        self.port = port
        self.scenario = scenario
        self._tmp = None if state_dir or kubeconfig else tempfile.TemporaryDirectory(prefix="aiops-sandbox-")
        self.state_dir = Path(state_dir or (Path(kubeconfig).parent if kubeconfig else self._tmp.name))  # type: ignore[union-attr]
        self.kubeconfig = str(Path(kubeconfig) if kubeconfig else self.state_dir / "kubeconfig")
        self.tick_interval = tick_interval
        self.sim.realtime = bool(tick_interval)
        self.api = Api(self.sim, self.token, api_needs_token=tls)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._generated = False
        self.url = ""

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Sandbox:
        scenarios.load(self.sim, self.scenario)
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.api = self.api
        ca_pem = None
        if self.tls:
            cert, key, ca_pem = generate_certificate(self.state_dir / "pki")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cert, key)
            # The handshake happens in each connection's thread, not in the accept loop.
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self.port = server.server_address[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        write_kubeconfig(Path(self.kubeconfig), self.url, self.token, ca_pem)
        self._threads.append(threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                              name="sandbox-http", daemon=True))
        if self.tick_interval:
            self._threads.append(threading.Thread(target=self._loop, name="sandbox-loop", daemon=True))
        for thread in self._threads:
            thread.start()
        log.info("sandbox.started", url=self.url, kubeconfig=self.kubeconfig, scenario=self.scenario, tls=self.tls)
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_interval):
            try:
                self.sim.tick()
            except Exception:
                log.exception("sandbox.tick_failed")

    def stop(self) -> None:
        self._stop.set()
        self.api.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()
        if self._generated:
            # `generate` froze the seeded objects out of the collector's sight; a stopped
            # sandbox in a longer-lived process (a test session) must be collectable again.
            for table in self.sim.store.objects.values():
                table.clear()
            self.sim.store.log.clear()
            gc.unfreeze()
        log.info("sandbox.stopped", url=self.url)

    def wait(self) -> None:
        self._stop.wait()

    def request_stop(self) -> None:
        """Make `wait()` return (safe from a signal handler); call `stop()` afterwards."""
        self._stop.set()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control ---------------------------------------------------------------------------
    def api_client(self):  # type: ignore[no-untyped-def]
        from k8s.client import api_client_for_kubeconfig

        return api_client_for_kubeconfig(self.kubeconfig)

    def fault(self, ftype: str, target: str, **opts: Any) -> dict[str, Any]:
        return fault_rules.inject(self.sim, ftype, target, **opts).describe()

    def clear(self, target: str) -> list[dict[str, Any]]:
        return [f.describe() for f in fault_rules.clear(self.sim, target)]

    def reset(self, scenario: str = "demo") -> None:
        scenarios.load(self.sim, scenario)

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self.sim.tick()

    def generate(self, pods: int, **kwargs: Any) -> dict[str, int]:
        self._generated = True
        return scenarios.generate(self.sim, pods=pods, **kwargs)

    def crowd_node(self, workloads: int, **kwargs: Any) -> dict[str, Any]:
        """One node holding every pod of `workloads` deployments (see `scenarios.crowd_node`)."""
        return scenarios.crowd_node(self.sim, workloads=workloads, **kwargs)

    def interrupt_watches(self) -> None:
        """End every open watch stream, as an API server restart does (clients reconnect)."""
        self.api.interrupt_watches()

    @contextlib.contextmanager
    def watch_outage(self) -> Iterator[None]:
        """Open watch streams end and new ones are refused with 503 until the block exits."""
        self.api.watch_outage.set()
        self.api.interrupt_watches()
        try:
            yield
        finally:
            self.api.watch_outage.clear()

    def faults(self) -> list[dict[str, Any]]:
        with self.sim.lock:
            return [f.describe() for f in self.sim.faults]
