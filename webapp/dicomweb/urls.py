"""DICOMweb routes (PS3.18): QIDO-RS, WADO-RS, STOW-RS under /dicomweb/."""
from django.urls import path, re_path

from . import views

app_name = "dicomweb"

S = "studies/<str:study_uid>"
R = f"{S}/series/<str:series_uid>"
I = f"{R}/instances/<str:sop_uid>"

urlpatterns = [
    path("studies", views.studies_root, name="studies"),
    path(S, views.study_root, name="study"),
    path(f"{S}/metadata", views.study_metadata, name="study_metadata"),
    path(f"{S}/series", views.search_series, name="study_series"),
    path(f"{S}/instances", views.search_instances, name="study_instances"),
    path(f"{S}/thumbnail", views.study_thumbnail, name="study_thumbnail"),
    path(R, views.retrieve_series, name="series"),
    path(f"{R}/metadata", views.series_metadata, name="series_metadata"),
    path(f"{R}/instances", views.search_instances, name="series_instances"),
    path(f"{R}/thumbnail", views.series_thumbnail, name="series_thumbnail"),
    path(I, views.retrieve_instance, name="instance"),
    path(f"{I}/metadata", views.instance_metadata, name="instance_metadata"),
    path(f"{I}/rendered", views.instance_rendered, name="instance_rendered"),
    path(f"{I}/thumbnail", views.instance_thumbnail, name="instance_thumbnail"),
    path(f"{I}/frames/<str:frame_list>", views.frames, name="frames"),
    path(f"{I}/frames/<str:frame_list>/rendered", views.frame_rendered, name="frame_rendered"),
    path(f"{I}/bulkdata/<str:tag>", views.bulkdata, name="bulkdata"),
    path("series", views.search_series, name="all_series"),
    path("instances", views.search_instances, name="all_instances"),
    re_path(r"^.*$", views.unknown_resource),
]
