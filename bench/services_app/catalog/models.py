from django.db import models


class Product(models.Model):
    name = models.CharField(max_length=100)
    price_cents = models.IntegerField()
    stock = models.IntegerField()

    class Meta:
        app_label = "catalog"


class Order(models.Model):
    customer = models.CharField(max_length=100)
    total_cents = models.IntegerField()

    class Meta:
        app_label = "catalog"
