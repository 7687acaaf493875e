import json

from django.http import JsonResponse

from catalog import pricing
from catalog.models import Order, Product


def products(request):
    return JsonResponse({"products": [pricing.describe(p) for p in Product.objects.order_by("pk")]})


def product(request, pk):
    try:
        return JsonResponse(pricing.describe(Product.objects.get(pk=pk)))
    except Product.DoesNotExist:
        return JsonResponse({"error": "no such product"}, status=404)


def order(request):
    body = json.loads(request.body)
    items = body["items"]
    chosen = list(Product.objects.filter(pk__in=[int(k) for k in items]))
    try:
        total = pricing.quote(chosen, items, body["customer"])
    except pricing.OutOfStock as exc:
        return JsonResponse({"error": f"out of stock: {exc}"}, status=409)
    placed = Order.objects.create(customer=body["customer"], total_cents=total)
    return JsonResponse({"id": placed.pk, "total_cents": total}, status=201)
