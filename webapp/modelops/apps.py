from django.apps import AppConfig


class ModelopsConfig(AppConfig):
    name = "webapp.modelops"
    label = "modelops"
    verbose_name = "Model versions and inference runs"
