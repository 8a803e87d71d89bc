from django.apps import AppConfig


class K8sConfig(AppConfig):
    name = "k8s"
    verbose_name = "Kubernetes"
    default_auto_field = "django.db.models.BigAutoField"
