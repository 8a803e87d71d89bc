from __future__ import annotations

from django.urls import path

from playbooks import views

urlpatterns = [
    path("webhooks/alertmanager", views.alertmanager_webhook, name="alertmanager-webhook"),
]
