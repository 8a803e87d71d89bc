"""Print the metrics inventory (the README's "Metrics" table) from the code: every `aiops_*`
metric defined in an `<app>/metrics*.py` module or collected at scrape time.

    python deploy/metrics_inventory.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    import django

    django.setup()
    from aiops_site.metrics import inventory_markdown

    print(inventory_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
