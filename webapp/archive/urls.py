from django.urls import path

from . import quarantine_views, views

app_name = "archive"

urlpatterns = [
    path("studies/", views.study_list, name="study_list"),
    path("next/", views.next_case_page, name="next_case"),
    path("studies/<str:study_uid>/", views.study_detail, name="study_detail"),
    path("series/<str:series_uid>/thumbnail.png", views.series_thumbnail, name="series_thumbnail"),
    path("upload/", views.upload_page, name="upload"),
    path("upload/batches/", views.upload_batch_create, name="upload_batch_create"),
    path("upload/batches/<int:batch_id>/", views.upload_batch_detail, name="upload_batch_detail"),
    path("upload/batches/<int:batch_id>/files", views.upload_batch_files, name="upload_batch_files"),
    path("upload/batches/<int:batch_id>/finish", views.upload_batch_finish, name="upload_batch_finish"),
    path("quarantine/", quarantine_views.quarantine_list, name="quarantine"),
    path("quarantine/<int:item_id>/release", quarantine_views.quarantine_release, name="quarantine_release"),
    path("quarantine/<int:item_id>/discard", quarantine_views.quarantine_discard, name="quarantine_discard"),
]
