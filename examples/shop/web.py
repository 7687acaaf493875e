"""The Flask application (``shop.web:app`` for WSGI servers)."""
from __future__ import annotations

from flask import Flask, jsonify, request

from shop import orders
from shop.db import make_engine, seed
from shop.worker import Fulfilment


def create_app(database_url: str | None = None) -> Flask:
    app = Flask("shop")
    factory = seed(make_engine(database_url))
    fulfilment = Fulfilment(factory).start()
    app.extensions["fulfilment"] = fulfilment

    @app.get("/products")
    def products():
        with factory() as session:
            return jsonify(orders.list_products(session))

    @app.post("/orders")
    def create_order():
        body = request.get_json(force=True)
        with factory() as session, session.begin():
            try:
                order = orders.place_order(session, body["customer"], body["items"])
            except orders.OutOfStock as exc:
                return jsonify(error=str(exc)), 409
            order_id = order.id
            total = order.total_cents
        fulfilment.submit(order_id)
        return jsonify(id=order_id, total_cents=total), 201

    @app.get("/orders/<int:order_id>")
    def get_order(order_id: int):
        with factory() as session:
            order = session.get(orders.Order, order_id)
            if order is None:
                return jsonify(error="no such order"), 404
            return jsonify(id=order.id, status=order.status, total_cents=order.total_cents)

    @app.get("/boom")
    def boom():
        raise RuntimeError("the example's deliberate failure")

    return app


def __getattr__(name: str):
    # ``shop.web:app`` for WSGI servers, created on first use so that importing
    # this module (e.g. for create_app) does not start a second worker thread.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
