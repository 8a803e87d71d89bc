"""Finding 1 of #13: a label value longer than the columns it lands in must not cost the batch.

Before: an Alertmanager batch with one `deployment` (or `namespace`, `node`, `alertname`) label
over 253 characters got `500` (DataError: value too long for type character varying(253)), the
valid alerts beside it were not stored, and Alertmanager retried the batch forever.
Now: such a value is kept whole in JSON; a value that is no Kubernetes name names no workload
(the alert is keyed by its fingerprint), and an over-long alertname is cut in its column only.
"""

from __future__ import annotations

import pytest

from playbooks.models import ClusterEvent, Incident
from tests.playbooks.test_alertmanager import alert, batch

pytestmark = pytest.mark.django_db

LONG = "x" * 300


@pytest.mark.parametrize("label", ["deployment", "namespace", "node", "pod", "alertname"])
def test_a_label_value_longer_than_any_column_keeps_the_whole_batch(post, fake_cluster, label) -> None:  # type: ignore[no-untyped-def]
    ok = alert("KubePodCrashLooping", fingerprint="0a0a", deployment="web", namespace="shop")
    long_labels = {"deployment": "cart", "namespace": "shop", "node": "node-1", "pod": "cart-0", label: LONG}
    name = long_labels.pop("alertname", "KubeDeploymentReplicasMismatch")
    odd = alert(name, fingerprint="0b0b", **long_labels)
    response = post(batch(ok, odd))
    assert response.status_code == 200, response.content
    assert response.json()["stored"] == 2
    assert ClusterEvent.objects.count() == 2
    event = ClusterEvent.objects.get(dedup_key__startswith="0b0b:")
    # Lossless: the full value is in the event's JSON, whatever the columns hold.
    assert event.data["labels"][label] == (LONG if label != "alertname" else name)
    incident = event.incident
    assert incident is not None and incident.state == "open"
    # A value that is no Kubernetes name is skipped; the next label that names a workload wins.
    expected = {"deployment": "Pod/shop/cart-0", "namespace": "Node//node-1"}.get(label, "Deployment/shop/cart")
    assert incident.workload_key == expected
    assert incident.alerts == {"0b0b": name}
    if label == "alertname":
        assert len(incident.alertname) == 200 and incident.alertname.endswith("\u2026")
        assert len(event.alertname) == 200
    assert Incident.objects.get(workload_name="web").alerts == {"0a0a": "KubePodCrashLooping"}


@pytest.mark.parametrize("value", ["cart\n", "Cart", "cart;rm", "c\u0430rt", "-cart", "x" * 254])
def test_a_label_that_is_no_kubernetes_name_names_no_workload(post, fake_cluster, value) -> None:  # type: ignore[no-untyped-def]
    response = post(batch(alert("KubeDeploymentReplicasMismatch", fingerprint="0c0c", deployment=value,
                                namespace="shop")))
    assert response.status_code == 200, response.content
    incident = Incident.objects.get()
    assert incident.workload_key == "Alert//0c0c"
    assert incident.evidence["alert:KubeDeploymentReplicasMismatch"]["labels"]["deployment"] == value


def test_a_resolved_batch_with_an_over_long_alertname_resolves(post, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    name = "A" * 250
    assert post(batch(alert(name, fingerprint="0d0d", deployment="web", namespace="shop"))).status_code == 200
    response = post(batch(alert(name, status="resolved", fingerprint="0d0d", deployment="web", namespace="shop"),
                          alert("Other", fingerprint="0e0e", deployment="api", namespace="shop")))
    assert response.status_code == 200, response.content
    assert Incident.objects.get(workload_name="web").state == "resolved"
    assert Incident.objects.get(workload_name="api").state == "open"
