from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="archive:study_list"), name="home"),
    path("", include("webapp.accounts.urls")),
    path("", include("webapp.archive.urls")),
    path("dicomweb/", include("webapp.dicomweb.urls")),
    path("", include("webapp.modelops.urls")),
    path("", include("webapp.training.urls")),
    path("", include("webapp.viewer.urls")),
    path("api/review/", include("webapp.review.urls")),
    path("django-admin/", admin.site.urls),
]

handler500 = "webapp.dicomweb.errors.server_error"  # JSON under /dicomweb/, the usual page elsewhere
