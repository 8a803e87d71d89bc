"""The watcher's manifest: its own identity that may list and watch the six kinds the detectors
read and nothing else, the `watch` role of the image, and a metrics port."""

from __future__ import annotations

from tests.deploy.manifests import find, permission_triples, render

SIX_KINDS = {("", "pods"), ("", "nodes"), ("apps", "deployments"), ("apps", "replicasets"),
             ("autoscaling", "horizontalpodautoscalers"), ("batch", "jobs")}


def test_the_watcher_may_list_and_watch_the_six_kinds_and_nothing_else() -> None:
    for overlay in ("default", "read-only"):
        objects = render(overlay)
        role = find(objects, "ClusterRole", "aiops-watch")
        assert permission_triples(role["rules"]) == {(g, r, v) for g, r in SIX_KINDS for v in ("list", "watch")}
        binding = find(objects, "ClusterRoleBinding", "aiops-watch")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aiops-watch", "namespace": "aiops"}]
        assert binding["roleRef"]["name"] == "aiops-watch"
        # No other binding gives the watcher's identity anything.
        others = [b for b in objects if b["kind"] in ("ClusterRoleBinding", "RoleBinding") and b is not binding]
        assert all(s["name"] != "aiops-watch" for b in others for s in b.get("subjects", []))


def test_the_watch_deployment_runs_the_watch_role_with_metrics() -> None:
    deployment = find(render("default"), "Deployment", "aiops-watch")
    assert deployment["spec"]["replicas"] >= 2  # a standby to take over
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["watch"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AIOPS_WATCH_METRICS_PORT"] == "9100"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100}]
