"""The catalogue's own rules: what a basket costs."""


class OutOfStock(Exception):
    pass


def line_total(price_cents: int, quantity: int) -> int:
    return price_cents * quantity


def discount(subtotal: int, customer: str) -> int:
    if customer.startswith("vip"):
        return subtotal // 10
    return subtotal // 50 if subtotal > 10_000 else 0


def tax(amount: int) -> int:
    return round(amount * 0.2)


def quote(products: list, items: dict, customer: str) -> int:
    subtotal = 0
    for product in products:
        quantity = items[str(product.pk)]
        if quantity > product.stock:
            raise OutOfStock(product.name)
        subtotal += line_total(product.price_cents, quantity)
    net = subtotal - discount(subtotal, customer)
    return net + tax(net)


def describe(product) -> dict:
    return {"id": product.pk, "name": product.name, "price": format_price(product.price_cents)}


def format_price(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"
