from django.urls import re_path

from whatsapp.edge.webhook.views import whatsapp_webhook

urlpatterns = [
    # With or without the slash: a POST to a URL Django would redirect to add one would be lost.
    re_path(r"^whatsapp/?$", whatsapp_webhook, name="whatsapp-webhook"),
]
