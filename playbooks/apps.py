from django.apps import AppConfig


class PlaybooksConfig(AppConfig):
    name = "playbooks"
    verbose_name = "Incidents and playbooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from playbooks import admin_engine, admin_quiet, receivers  # noqa: F401  (engine and silences: their admin; receivers)
