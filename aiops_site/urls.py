from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from aiops_site import views
from aiops_site.metrics import metrics_view
from api import console as api_console

# An exception raised outside a view (a session saved to a stopped database) reaches this:
# a dependency outage still answers 503 + Retry-After, anything else Django's own 500.
handler500 = "aiops_site.outage.server_error"
# A path under /api/v1/ that no route matches answers as the API's other errors do.
handler404 = "api.problems.not_found"

urlpatterns = [
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("api.urls")),  # the REST API, its schema and docs
    path("api/", include("playbooks.urls")),  # POST /api/webhooks/alertmanager
    path("console/tokens", api_console.tokens, name="api-console-tokens"),
    path("console/tokens/<int:token_id>/revoke", api_console.revoke, name="api-console-revoke"),
    path("", include("channels.urls")),  # /api/webhooks/{telegram,slack/*,discord/*}, /console/
    # Ahead of django-prometheus's /metrics: ours adds the Celery queue depths to the multiprocess files.
    path("metrics", metrics_view, name="metrics"),
    path("", include("django_prometheus.urls")),  # /metrics
]
