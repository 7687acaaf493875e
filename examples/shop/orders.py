"""Business logic: pricing, carts and orders."""
from __future__ import annotations

from sqlalchemy import select

from shop.db import Category, Order, Product


class OutOfStock(Exception):
    """A product in the cart has no stock left."""


class Cart:
    """A customer's cart; its state changes are what scope-otel records at ``full``."""

    def __init__(self, customer: str) -> None:
        self.customer = customer
        self.lines: list[tuple[int, int]] = []
        self.total_cents = 0

    def add(self, product: Product, quantity: int) -> None:
        if product.stock < quantity:
            raise OutOfStock(f"{product.name}: {product.stock} left, {quantity} wanted")
        self.lines.append((product.id, quantity))
        self.total_cents = self.total_cents + line_price(product.price_cents, quantity)


def line_price(unit_cents: int, quantity: int) -> int:
    """Price of a line with volume discount: 5% off from 3 items, 10% from 10."""
    discount = 0
    if quantity >= 10:
        discount = 10
    elif quantity >= 3:
        discount = 5
    return unit_cents * quantity * (100 - discount) // 100


def category_path(session, category_id: int | None) -> list[str]:
    """Names from the root category down to ``category_id`` (recursive)."""
    if category_id is None:
        return []
    category = session.get(Category, category_id)
    return category_path(session, category.parent_id) + [category.name]


def list_products(session) -> list[dict]:
    products = session.scalars(select(Product).order_by(Product.id)).all()
    return [
        {"id": p.id, "name": p.name, "price_cents": p.price_cents, "path": category_path(session, p.category_id)}
        for p in products
    ]


def place_order(session, customer: str, items: list[dict]) -> Order:
    """Check stock, price the cart and store the order; raises OutOfStock."""
    cart = Cart(customer)
    for item in items:
        product = session.get(Product, item["product_id"])
        cart.add(product, item["quantity"])
    for product_id, quantity in cart.lines:
        session.get(Product, product_id).stock -= quantity
    order = Order(customer=customer, total_cents=cart.total_cents, status="new")
    session.add(order)
    session.flush()
    return order
