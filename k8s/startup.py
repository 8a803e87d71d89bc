"""`make run` start-up step: when no kubeconfig is configured, register the sandbox cluster.

The launcher calls `prepare(run_dir, env)` after migrating and before supervisord starts the
Procfile; `env` is what the Procfile's processes get. The sandbox's port is kept under the
run directory, so `make run` serves it at the same URL each time and a second run directory
(`make test` uses its own) never collides with it.
"""

from __future__ import annotations

from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def sandbox_port(sandbox_dir: Path) -> int:
    """The port kept in the run directory if it is still free, else a new free one (kept)."""
    # The launcher's helper: make-run wiring, not sensing, so k8s's layering is kept.
    from aiops_site.embedded import kept_port

    return kept_port(sandbox_dir / "port")


def sandbox_wanted(env: dict[str, str]) -> bool:
    if env.get("KUBECONFIG"):
        return False
    wanted = env.get("AIOPS_LAUNCH_PROCESSES", "")
    return not wanted or "sandbox" in [name.strip() for name in wanted.split(",")]


def prepare(run_dir: Path, env: dict[str, str]) -> None:
    if not sandbox_wanted(env):
        log.info("sandbox.not_started", reason="KUBECONFIG is set" if env.get("KUBECONFIG") else "not in AIOPS_LAUNCH_PROCESSES")
        return
    import django

    django.setup()
    from django.db import transaction

    from k8s.models import Cluster

    sandbox_dir = Path(run_dir) / "sandbox"
    port = sandbox_port(sandbox_dir)
    kubeconfig = sandbox_dir / "kubeconfig"
    env["AIOPS_SANDBOX_PORT"] = str(port)
    env["AIOPS_SANDBOX_KUBECONFIG"] = str(kubeconfig)
    with transaction.atomic():
        has_default = Cluster.objects.filter(is_default=True).exclude(name="sandbox").exists()
        cluster, created = Cluster.objects.update_or_create(
            name="sandbox",
            defaults={"kubeconfig_path": str(kubeconfig), "context": "", "in_cluster": False},
            create_defaults={"kubeconfig_path": str(kubeconfig), "context": "", "in_cluster": False,
                             "enabled": True, "is_default": not has_default},
        )
    log.info("sandbox.registered", cluster=cluster.name, created=created, port=port, kubeconfig=str(kubeconfig))
