from django.urls import path

from . import views

urlpatterns = [
    path("items/<int:pk>/", views.get_item),
    path("items/", views.add_item),
    path("items/<int:pk>/delete/", views.delete_item),
    path("boom/", views.boom),
    path("async/", views.slow),
    path("stream/", views.stream),
    path("call/", views.call),
    path("baggage/", views.baggage),
    path("names/", views.names),
    path("sql/", views.sql_kinds),
    path("async-count/", views.async_count),
]
