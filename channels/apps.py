from django.apps import AppConfig


class ChannelsConfig(AppConfig):
    name = "channels"
    verbose_name = "Chat channels"
    default_auto_field = "django.db.models.BigAutoField"
