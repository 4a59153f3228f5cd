from django.apps import AppConfig


class DicomwebConfig(AppConfig):
    name = "webapp.dicomweb"
    label = "dicomweb"
    verbose_name = "DICOMweb (QIDO-RS, WADO-RS, STOW-RS)"
