"""Register the cluster a container deployment watches, once: `AIOPS_REGISTER_CLUSTER=NAME`.

Run by the image's `migrate` role after migrating. With KUBECONFIG set (compose mounts one)
the cluster uses that file; without it (a pod) it uses the pod's in-cluster credentials. An
existing row of that name is left as it is (an operator may have edited it in the admin), so
running this again is harmless. The first registered cluster becomes the default.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    name = os.environ.get("AIOPS_REGISTER_CLUSTER", "").strip()
    if not name:
        return 0
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    sys.path.insert(0, os.getcwd())
    import django

    django.setup()
    from django.core.exceptions import ValidationError
    from django.db import transaction

    from k8s.models import Cluster

    kubeconfig = os.environ.get("KUBECONFIG", "").strip()
    with transaction.atomic():
        existing = Cluster.objects.select_for_update().filter(name=name).first()
        if existing is not None:
            print(f"cluster {name!r} is already registered; left unchanged")
            return 0
        cluster = Cluster(
            name=name,
            in_cluster=not kubeconfig,
            kubeconfig_path=kubeconfig,
            is_default=not Cluster.objects.filter(is_default=True).exists(),
        )
        try:
            cluster.full_clean()
        except ValidationError as exc:
            print(f"AIOPS_REGISTER_CLUSTER={name!r} cannot be registered: {'; '.join(exc.messages)}", file=sys.stderr)
            return 2
        cluster.save()
    how = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster credentials"
    print(f"registered cluster {name!r} ({how}){' as the default' if cluster.is_default else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
