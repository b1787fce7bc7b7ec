from django.contrib import admin
from django.urls import include, path

from config import health
from core.metrics import views as metrics_views

# The product's name, not "Django administration", on every admin page and tab.
admin.site.site_header = "WhatsApp message handler"
admin.site.site_title = "WhatsApp message handler"
admin.site.index_title = "Operations"
# The model list beside every page would leave a 1280 px screen too narrow for the
# dead letters' columns; the breadcrumbs lead back to it.
admin.site.enable_nav_sidebar = False
# "View site" and the index's first panel lead to the live overview (whatsapp.ops.overview).
admin.site.site_url = "/admin/overview/"
admin.site.index_template = "admin/whatsapp/index.html"

urlpatterns = [
    # Before the admin's own URLs, which would take "overview/" for an app's label.
    path("admin/overview/", include("whatsapp.ops.overview.urls")),
    # The agent inbox (inbox/), before the admin's URLs for the same reason.
    path("admin/conversations/", include("inbox.urls")),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", metrics_views.metrics),
    # Named by its dotted path, so config imports no app (the layers' contract).
    path("webhooks/", include("whatsapp.urls")),
]
