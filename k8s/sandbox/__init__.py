"""The sandbox cluster: a Kubernetes API on 127.0.0.1 that kubectl and the kubernetes client
accept unchanged, with a simulation loop and injectable faults (see `faults.py`)."""

from __future__ import annotations

from k8s.sandbox.faults import FAULT_TYPES, FaultError
from k8s.sandbox.scenarios import SCENARIOS
from k8s.sandbox.server import Sandbox

__all__ = ["FAULT_TYPES", "SCENARIOS", "FaultError", "Sandbox"]
