"""Prometheus metrics of the sandbox cluster (exported by the process that serves it)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SANDBOX_REQUESTS = Counter(
    "aiops_sandbox_requests_total", "Kubernetes API requests the sandbox answered.", ["verb", "code"]
)
# One sandbox process: under PROMETHEUS_MULTIPROC_DIR (make run) its live value is the value.
SANDBOX_FAULTS_ACTIVE = Gauge("aiops_sandbox_faults_active", "Faults currently active in the sandbox.", ["type"],
                              multiprocess_mode="livemax")
SANDBOX_FAULTS_CLEARED = Counter(
    "aiops_sandbox_faults_cleared_total", "Faults cleared, by what cleared them.", ["type", "by"]
)
SANDBOX_OBJECTS = Gauge("aiops_sandbox_objects", "Objects the sandbox holds.", ["resource"], multiprocess_mode="livemax")
