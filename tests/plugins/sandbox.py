"""Shared test fixtures: the sandbox cluster (loaded by tests/conftest.py).

`sandbox` (session): one sandbox served over TLS with a bearer token on 127.0.0.1, in this
process, seeded with the `demo` scenario. Its simulation advances only on `.tick()`, so tests
are deterministic; writes (a deleted pod's replacement, a rollout, a scale) reconcile at once.
    .kubeconfig  path of a kubeconfig that kubectl and the kubernetes client use unchanged
    .url         https://127.0.0.1:PORT
    .token       the bearer token (also in the kubeconfig)
    .sim         the simulation itself (`.sim.store.all("pods")`: the stored objects, read-only)
    .api_client()                      a kubernetes ApiClient for it
    .fault(type, target, **options)    inject a fault ("ns/name", or a node name)
    .clear(target)                     `fault clear`
    .reset("demo" | "empty")           reseed
    .tick(times=1)                     advance the simulation (restart counts grow...)
    .generate(pods, nodes=None, deployments=None)   the scale generator
    .faults()                          the active faults
    .interrupt_watches()               end every open watch stream (an API server restart)
    .watch_outage()                    context manager: watches end and are refused (503) inside it

`sandbox_cluster` (function, needs the database): resets the sandbox to `demo`, then returns
the `k8s.Cluster` row named "sandbox" (is_default=True) pointing at its kubeconfig.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k8s.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    instance = Sandbox(tls=True, state_dir=tmp_path_factory.mktemp("sandbox"), scenario="demo").start()
    yield instance
    instance.stop()


@pytest.fixture
def sandbox_cluster(sandbox: Sandbox, db):  # type: ignore[no-untyped-def]
    from k8s.models import Cluster

    sandbox.reset("demo")
    Cluster.objects.filter(is_default=True).exclude(name="sandbox").update(is_default=False)
    cluster, _ = Cluster.objects.update_or_create(
        name="sandbox",
        defaults={"kubeconfig_path": sandbox.kubeconfig, "context": "", "in_cluster": False, "enabled": True, "is_default": True},
    )
    return cluster
