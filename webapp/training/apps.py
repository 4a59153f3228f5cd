from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TrainingConfig(AppConfig):
    name = "webapp.training"
    label = "training"
    verbose_name = "Training (the learning loop)"

    def ready(self):
        from .schedule import install_defaults

        post_migrate.connect(install_defaults, sender=self, dispatch_uid="training.install_defaults")
