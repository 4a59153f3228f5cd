from django.urls import path

from webapp.modelops import views as modelops_views

from . import views

app_name = "training"

urlpatterns = [
    path("models/", views.registry, name="registry"),
    path("models/runs.json", views.runs_json, name="runs_json"),
    path("models/retrain", views.retrain_now, name="retrain"),
    path("models/rollback", views.roll_back, name="rollback"),
    path("models/rerun-unreviewed", modelops_views.rerun_unreviewed, name="rerun_unreviewed"),  # the AI jobs page's action
    path("models/<int:version>/promote", views.promote, name="promote"),
    path("models/runs/<int:run_id>/approve", views.approve, name="approve"),
    path("models/runs/<int:run_id>/reject", views.reject, name="reject"),
]
