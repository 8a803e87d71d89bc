from __future__ import annotations

from django.apps import AppConfig


class ChannelsConfig(AppConfig):
    name = "channels"
    verbose_name = "Chat channels"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from channels import receivers

        receivers.connect()
