from django.urls import path

from catalog import views

urlpatterns = [
    path("products/", views.products),
    path("products/<int:pk>/", views.product),
    path("orders/", views.order),
]
