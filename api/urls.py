"""/api/v1/: one router; each resource's viewset lives in `api/views/<resource>.py`. A new
resource (silences, ...) registers here with the same base class and gets the same auth,
scopes, throttling, pages, errors and audit."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from api.views import approvals, incidents, runs

app_name = "api"

router = SimpleRouter()
router.register("incidents", incidents.IncidentViewSet, basename="incident")
router.register("runs", runs.RunViewSet, basename="run")
router.register("approvals", approvals.ApprovalViewSet, basename="approval")


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
    path("", include(router.urls)),
]
