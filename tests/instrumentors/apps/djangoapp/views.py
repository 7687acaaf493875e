import asyncio
import json

import requests
from django.http import Http404, JsonResponse, StreamingHttpResponse

from .models import Item


def get_item(request, pk):
    try:
        item = Item.objects.get(pk=pk)
    except Item.DoesNotExist:
        raise Http404("no such item")
    return JsonResponse({"id": item.pk, "name": item.name})


def add_item(request):
    item = Item.objects.create(name=json.loads(request.body)["name"], api_key="k-123")
    item.name = item.name.upper()
    item.save()
    return JsonResponse({"id": item.pk}, status=201)


def delete_item(request, pk):
    Item.objects.filter(pk=pk).first().delete()
    return JsonResponse({"deleted": pk})


def boom(request):
    raise ZeroDivisionError("boom")


async def slow(request):
    await asyncio.sleep(0)
    return JsonResponse({"async": True})


def stream(request):
    return StreamingHttpResponse(b"chunk%d " % i for i in range(3))


def call(request):
    response = requests.get(request.GET["url"], timeout=10)
    return JsonResponse({"status": response.status_code})


def baggage(request):
    from opentelemetry import baggage as otel_baggage

    return JsonResponse({"user": otel_baggage.get_baggage("user")})



def names(request):
    """An N+1 pattern: one query for the ids, then one per item."""
    ids = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    return JsonResponse({"names": [Item.objects.get(pk=pk).name for pk in ids]})


def sql_kinds(request):
    """A raw cursor, executemany, and a transaction with a savepoint."""
    from django.db import connection, transaction

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO djangoapp_item (name, api_key) VALUES (%s, %s)", [("a", ""), ("b", "")])
        try:
            with transaction.atomic():  # a savepoint
                Item.objects.create(name="c")
                raise ValueError("roll the savepoint back")
        except ValueError:
            pass
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM djangoapp_item WHERE name = %s", ["a"])
            (count,) = cursor.fetchone()
    return JsonResponse({"a": count})


async def async_count(request):
    return JsonResponse({"count": await Item.objects.acount()})
