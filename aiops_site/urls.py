from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from aiops_site import views

urlpatterns = [
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),  # /metrics
]
