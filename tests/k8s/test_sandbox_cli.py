"""`manage.py sandbox serve|fault|fault clear|faults` as an operator runs them, and the
`make run` start-up step that registers the sandbox cluster."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from k8s.startup import prepare, sandbox_port
from tests.conftest import ROOT, wait_for


def manage(*args: str) -> str:
    """The command in this process (a `manage.py` start costs seconds); what it prints."""
    out = io.StringIO()
    call_command("sandbox", *args, stdout=out)
    return out.getvalue()


class Served:
    def __init__(self, directory: Path) -> None:
        self.kubeconfig = directory / "kubeconfig"
        self.log = open(directory / "serve.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "sandbox", "serve", "--tls", "--tick", "0.5", "--kubeconfig", str(self.kubeconfig)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for(lambda: "sandbox cluster serving" in self.output() or self.process.poll() is not None, timeout=90,
                 message="sandbox serve to start")
        assert self.process.poll() is None, self.output()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def kubectl(self, *args: str) -> str:
        result = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    instance = Served(tmp_path_factory.mktemp("served"))
    yield instance
    if instance.process.poll() is None:
        instance.process.kill()
        instance.process.wait()


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_it_serves_until_stopped_and_takes_faults_from_the_command_line(served: Served) -> None:
    assert served.kubeconfig.stat().st_mode & 0o077 == 0  # the token is not world-readable
    assert "CrashLoopBackOff" in served.kubectl("get", "pods", "-n", "payments")

    injected = manage("fault", "crash_loop", "shop/cart", "--persistent", "--option", "exit_code=3", "--option", "restarts=1",
                      "--kubeconfig", str(served.kubeconfig))
    assert "injected crash_loop on shop/cart" in injected
    pods = served.kubectl("get", "pods", "-n", "shop", "-l", "app.kubernetes.io/name=cart",
                          "-o", "jsonpath={.items[*].status.containerStatuses[0].lastState.terminated.exitCode}")
    assert pods.split() == ["3", "3"]
    # The simulation loop runs: restart counts grow while the fault is active, on the kubelet's
    # back-off (10 s after the first restart).
    def restarts() -> int:
        return int(served.kubectl("get", "pods", "-n", "shop", "-l", "app.kubernetes.io/name=cart",
                                  "-o", "jsonpath={.items[0].status.containerStatuses[0].restartCount}"))

    first = restarts()
    wait_for(lambda: restarts() > first, timeout=20, message="restart count to grow")

    assert "active   crash_loop           shop/cart" in manage("faults", "--kubeconfig", str(served.kubeconfig))
    with pytest.raises(CommandError, match="unknown fault type 'meltdown'"):
        manage("fault", "meltdown", "shop/cart", "--kubeconfig", str(served.kubeconfig))
    with pytest.raises(CommandError, match="no deployment or statefulset \\(or pod of one\\) named 'shop/ghost'"):
        manage("fault", "oom_killed", "shop/ghost", "--kubeconfig", str(served.kubeconfig))

    cleared = manage("fault", "clear", "shop/cart", "--kubeconfig", str(served.kubeconfig))
    assert "cleared crash_loop on shop/cart" in cleared
    states = served.kubectl("get", "pods", "-n", "shop", "-l", "app.kubernetes.io/name=cart",
                            "-o", "jsonpath={.items[*].status.containerStatuses[0].state}")
    assert states.count("running") == 2 and "CrashLoopBackOff" not in states

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(30) == 0
    assert "sandbox stopped" in served.output()


def test_it_names_the_bad_value_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=f"no sandbox kubeconfig at {tmp_path / 'none'}"):
        manage("fault", "crash_loop", "shop/cart", "--kubeconfig", str(tmp_path / "none"))
    with pytest.raises(CommandError, match="invalid choice: 'prod'"):
        manage("serve", "--scenario", "prod")
    with pytest.raises(CommandError, match="--option 'need' must look like KEY=VALUE"):
        manage("fault", "oom_killed", "shop/cart", "--option", "need", "--kubeconfig", str(tmp_path / "none"))
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nclusters: []\n")
    with pytest.raises(CommandError, match="is not a sandbox kubeconfig"):
        manage("fault", "clear", "shop/cart", "--kubeconfig", str(tmp_path / "kubeconfig"))


@pytest.mark.django_db
def test_make_run_registers_the_sandbox_cluster_on_a_port_kept_in_the_run_dir(tmp_path: Path) -> None:
    from k8s.models import Cluster

    env: dict[str, str] = {}
    prepare(tmp_path, env)
    cluster = Cluster.objects.get(name="sandbox")
    assert cluster.kubeconfig_path == str(tmp_path / "sandbox" / "kubeconfig") == env["AIOPS_SANDBOX_KUBECONFIG"]
    assert cluster.is_default and cluster.enabled
    assert int(env["AIOPS_SANDBOX_PORT"]) == int((tmp_path / "sandbox" / "port").read_text())
    again: dict[str, str] = {}
    prepare(tmp_path, again)
    assert again["AIOPS_SANDBOX_PORT"] == env["AIOPS_SANDBOX_PORT"]
    assert Cluster.objects.filter(name="sandbox").count() == 1


@pytest.mark.django_db
def test_make_run_leaves_the_sandbox_out_when_a_kubeconfig_is_configured(tmp_path: Path) -> None:
    from k8s.models import Cluster

    env = {"KUBECONFIG": str(tmp_path / "real-cluster")}
    prepare(tmp_path, env)
    assert not Cluster.objects.filter(name="sandbox").exists()
    assert "AIOPS_SANDBOX_PORT" not in env


def test_it_picks_a_new_port_when_the_kept_one_is_taken(tmp_path: Path) -> None:
    import socket

    first = sandbox_port(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", first))
        holder.listen()
        second = sandbox_port(tmp_path)
    assert second != first
    assert int((tmp_path / "port").read_text()) == second
