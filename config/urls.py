from django.contrib import admin
from django.urls import include, path

from config import health
from core.metrics import views as metrics_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", metrics_views.metrics),
    # Named by its dotted path, so config imports no app (the layers' contract).
    path("webhooks/", include("whatsapp.urls")),
]
