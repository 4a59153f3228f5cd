from django.urls import path

from . import api

app_name = "review"

urlpatterns = [
    path("studies/<str:study_uid>/", api.case_detail, name="case"),
    path("studies/<str:study_uid>/actions/", api.case_action, name="case_action"),
    path("next/", api.next_case_view, name="next"),
]
