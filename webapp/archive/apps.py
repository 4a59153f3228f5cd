from django.apps import AppConfig


class ArchiveConfig(AppConfig):
    name = "webapp.archive"
    label = "archive"
    verbose_name = "DICOM archive"
