from __future__ import annotations

from django.contrib import admin

from k8s.models import Cluster


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "is_default", "in_cluster", "detection_mode", "watcher", "last_success_at",
                    "consecutive_failures"]
    list_filter = ["enabled", "in_cluster", "detection_mode"]
    search_fields = ["name", "context"]
    # Detection mode, its watcher and why the streams are down are written by the `watch` process.
    readonly_fields = ["created_at", "updated_at", "last_poll_at", "last_success_at", "consecutive_failures", "last_error",
                       "detection_mode", "detection_mode_since", "watcher", "watch_error"]
