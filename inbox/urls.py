from django.urls import path

from inbox import views

app_name = "inbox"

urlpatterns = [
    path("", views.list_page, name="list"),
    path("data.json", views.list_data, name="list-data"),
    path("<str:business_id>/<str:lead_id>/", views.thread_page, name="thread"),
    path("<str:business_id>/<str:lead_id>/data.json", views.thread_data, name="thread-data"),
    path("<str:business_id>/<str:lead_id>/act", views.act, name="act"),
]
