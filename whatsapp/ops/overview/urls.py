from django.urls import path

from whatsapp.ops.overview import views

urlpatterns = [
    path("", views.page, name="whatsapp-overview"),
    path("data.json", views.data, name="whatsapp-overview-data"),
]
