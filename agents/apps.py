from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents: tools, approvals, LLM"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents import access
        from agents.db_roles import grant_after_migrate

        access.connect()
        # Once per `migrate` (sender=this app), after every app's tables exist.
        post_migrate.connect(grant_after_migrate, sender=self, dispatch_uid="agents.db_roles.grant")
