"""The in-cluster path a pod takes: the migrations Job registers the cluster, and the worker
reaches the API server with the service-account token, the CA and KUBERNETES_SERVICE_HOST/PORT,
here against the sandbox served over TLS."""

from __future__ import annotations

import base64
import runpy
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

REGISTER = ROOT / "deploy" / "docker" / "register_cluster.py"


class Registered:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _register(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Registered:
    """The migrate role's registration step, run in this process (the script is what the Job runs)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    returncode = runpy.run_path(str(REGISTER), run_name="register_cluster")["main"]()
    captured = capsys.readouterr()
    return Registered(returncode, captured.out, captured.err)


@pytest.fixture
def service_account(sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # type: ignore[no-untyped-def]
    """What the kubelet mounts into a pod, pointing at the sandbox."""
    from kubernetes.config import incluster_config

    kubeconfig = yaml.safe_load(Path(sandbox.kubeconfig).read_text())
    ca_pem = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "token").write_text(sandbox.token)
    (mount / "ca.crt").write_bytes(ca_pem)
    # The loader reads these module-level paths at call time; a pod has them at
    # /var/run/secrets/kubernetes.io/serviceaccount/.
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(mount / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(mount / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(sandbox.url.rsplit(":", 1)[1]))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return mount


@pytest.mark.integration
def test_a_registered_in_cluster_cluster_reaches_the_api_over_tls(
    db, sandbox, service_account: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    from kubernetes import client

    from k8s.client import api_client_for
    from k8s.models import Cluster

    result = _register({"AIOPS_REGISTER_CLUSTER": "local", "KUBECONFIG": ""}, monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    assert "registered cluster 'local' (in-cluster credentials) as the default" in result.stdout
    cluster = Cluster.objects.get(name="local")
    assert cluster.in_cluster and cluster.is_default and cluster.kubeconfig_path == ""

    api = api_client_for(cluster)
    assert api.configuration.host == sandbox.url  # from KUBERNETES_SERVICE_HOST/PORT
    assert api.configuration.verify_ssl and api.configuration.ssl_ca_cert == str(service_account / "ca.crt")
    namespaces = {ns.metadata.name for ns in client.CoreV1Api(api).list_namespace().items}
    assert "default" in namespaces and len(namespaces) > 1
    pods = client.CoreV1Api(api).list_pod_for_all_namespaces(limit=5)
    assert pods.items, "the demo scenario has pods"

    # Running the Job again (every `kubectl apply -k`) changes nothing.
    again = _register({"AIOPS_REGISTER_CLUSTER": "local", "KUBECONFIG": ""}, monkeypatch, capsys)
    assert again.returncode == 0 and "already registered; left unchanged" in again.stdout
    assert Cluster.objects.filter(name="local").count() == 1


@pytest.mark.integration
def test_the_token_and_the_ca_are_what_admit_the_pod(service_account: Path) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError, SSLError

    from k8s.client import ClusterConfigError, api_client_in_cluster

    (service_account / "token").write_text("not-the-token")
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(api_client_in_cluster()).list_namespace()
    assert refused.value.status == 401

    # A CA that did not sign the server's certificate: the TLS handshake fails.
    from k8s.sandbox.server import generate_certificate

    _, _, other_ca = generate_certificate(service_account.parent / "other")
    (service_account / "ca.crt").write_bytes(other_ca)
    (service_account / "token").write_text("anything")
    other = api_client_in_cluster()
    other.configuration.retries = 0
    with pytest.raises((MaxRetryError, SSLError)):
        client.CoreV1Api(other).list_namespace(_request_timeout=5)

    (service_account / "token").unlink()
    with pytest.raises(ClusterConfigError, match="in-cluster configuration"):
        api_client_in_cluster()


@pytest.mark.django_db
def test_registration_refuses_a_bad_cluster_name_and_uses_a_kubeconfig_when_given(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from k8s.models import Cluster

    bad = _register({"AIOPS_REGISTER_CLUSTER": "Not_A_Name"}, monkeypatch, capsys)
    assert bad.returncode == 2
    assert "AIOPS_REGISTER_CLUSTER='Not_A_Name' cannot be registered" in bad.stderr
    assert not Cluster.objects.exists()

    compose = _register({"AIOPS_REGISTER_CLUSTER": "default", "KUBECONFIG": "/run/secrets/kubeconfig"}, monkeypatch, capsys)
    assert compose.returncode == 0, compose.stderr
    cluster = Cluster.objects.get(name="default")
    assert not cluster.in_cluster and cluster.kubeconfig_path == "/run/secrets/kubeconfig"

    nothing = _register({"AIOPS_REGISTER_CLUSTER": ""}, monkeypatch, capsys)
    assert nothing.returncode == 0 and nothing.stdout == ""
