"""/api/v1/: one router; each resource's viewset lives in `api/views/<resource>.py`. A new
resource (silences, ...) registers here with the same base class and gets the same auth,
scopes, throttling, pages, errors and audit."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from api.views import approvals, ask, config, incidents, registry, runs, silences

app_name = "api"

router = SimpleRouter()
router.register("incidents", incidents.IncidentViewSet, basename="incident")
router.register("runs", runs.RunViewSet, basename="run")
router.register("approvals", approvals.ApprovalViewSet, basename="approval")
router.register("rules", config.RuleViewSet, basename="rule")
router.register("playbooks", config.PlaybookViewSet, basename="playbook")
router.register("clusters", registry.ClusterViewSet, basename="cluster")
router.register("tools", registry.ToolViewSet, basename="tool")
router.register("audit", registry.AuditViewSet, basename="audit")
router.register("ask", ask.AskViewSet, basename="ask")
router.register("silences", silences.SilenceViewSet, basename="silence")
router.register("maintenance-windows", silences.MaintenanceWindowViewSet, basename="maintenance-window")


class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 document: public, like the docs page (it holds no data)."""

    authentication_classes: list[type] = []
    permission_classes: list[type] = []


class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI with its files served from here and its start-up script a file of its own (the
    split view): the site's CSP allows scripts only from 'self', never inline."""

    authentication_classes: list[type] = []
    permission_classes: list[type] = []
    url_name = "api:schema"


urlpatterns = [
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", DocsView.as_view(), name="docs"),
    path("config/export/", config.ConfigViewSet.as_view({"get": "export"}), name="config-export"),
    path("config/import/", config.ConfigViewSet.as_view({"post": "load"}), name="config-import"),
    path("", include(router.urls)),
]
