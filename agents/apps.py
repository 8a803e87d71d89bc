from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents: tools, approvals, LLM"
    default_auto_field = "django.db.models.BigAutoField"
