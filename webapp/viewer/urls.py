from django.urls import path

from . import views

app_name = "viewer"

urlpatterns = [
    path("studies/<str:study_uid>/view/", views.study_viewer, name="study_viewer"),
]
