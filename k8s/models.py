from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models

from k8s.names import FullMatchValidator

DNS_LABEL = FullMatchValidator(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "Use lowercase letters, digits and '-', starting and ending with a letter or digit.",
)


class Cluster(models.Model):
    """A Kubernetes cluster the agent watches and acts on."""

    name = models.CharField(max_length=63, unique=True, validators=[DNS_LABEL])
    kubeconfig_path = models.CharField(
        max_length=500, blank=True, help_text="Path to a kubeconfig file; empty with in-cluster set."
    )
    context = models.CharField(max_length=253, blank=True, help_text="kubeconfig context; empty = current.")
    in_cluster = models.BooleanField(
        default=False, help_text="Use the pod's service account (KUBERNETES_SERVICE_HOST, token and CA)."
    )
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False, help_text="Used by tools called without a cluster name.")
    poll_interval = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Seconds between polls; empty = AIOPS_POLL_INTERVAL.",
    )
    ignored_namespaces = models.JSONField(default=list, blank=True, help_text="Namespaces never reported on.")
    prometheus_url = models.URLField(
        max_length=500, blank=True,
        help_text="This cluster's Prometheus (e.g. http://prometheus.monitoring:9090), for the query_prometheus tool.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Poll health, written by the watch loop.
    last_poll_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    # Which path detects faults on this cluster now, written by the `watch` process (and set
    # back to poll by the poll task when no watcher holds the cluster's lease).
    class DetectionMode(models.TextChoices):
        WATCH = "watch", "watch streams (seconds)"
        POLL = "poll", "poll only"

    detection_mode = models.CharField(max_length=8, choices=DetectionMode.choices, default=DetectionMode.POLL)
    detection_mode_since = models.DateTimeField(null=True, blank=True)
    watcher = models.CharField(max_length=200, blank=True, help_text="The watch process that holds this cluster's lease.")
    watch_error = models.TextField(blank=True, help_text="Why the streams are down, when they are.")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="k8s_one_default_cluster"
            ),
            models.CheckConstraint(
                condition=models.Q(in_cluster=True) | ~models.Q(kubeconfig_path=""),
                name="k8s_cluster_has_credentials",
                violation_error_message="Give a kubeconfig path or choose in-cluster.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def effective_poll_interval(self) -> int:
        from django.conf import settings

        return self.poll_interval or settings.AIOPS_POLL_INTERVAL
