from django.apps import AppConfig


class PlaybooksConfig(AppConfig):
    name = "playbooks"
    verbose_name = "Incidents and playbooks"
    default_auto_field = "django.db.models.BigAutoField"
