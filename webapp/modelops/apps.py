from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ModelopsConfig(AppConfig):
    name = "webapp.modelops"
    label = "modelops"
    verbose_name = "Model versions and inference runs"

    def ready(self) -> None:
        from .schedule import install_upkeep

        post_migrate.connect(install_upkeep, sender=self, dispatch_uid="modelops.install_upkeep")
