from django.contrib import admin
from django.urls import path

from config import health
from core.metrics import views as metrics_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", metrics_views.metrics),
]
