from django.urls import path

from . import views

app_name = "modelops"

urlpatterns = [
    path("jobs/", views.job_list, name="jobs"),
    path("jobs/<int:run_id>/retry", views.retry_run, name="retry"),
    path("jobs/rerun-unreviewed", views.rerun_unreviewed, name="rerun_unreviewed"),
    path("jobs/recover", views.recover_stalled, name="recover"),
    path("studies/<str:study_uid>/rerun", views.rerun_study, name="rerun_study"),
]
