"""A small Flask + SQLAlchemy shop: the app and engine exist at import time,
before any instrumentation (as under ``gunicorn --preload``).

The database is ``SHOP_DB`` (an SQLAlchemy URL), an SQLite file by default.
``/call`` makes an outgoing ``requests`` call to ``?url=``, so propagation can
be checked end to end.
"""
from __future__ import annotations

import os
import tempfile

import flask
import requests
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

DB_URL = os.environ.get("SHOP_DB") or "sqlite:///" + os.path.join(tempfile.gettempdir(), f"shop-{os.getpid()}.db")
engine = sa.create_engine(DB_URL)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "shop_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    secret_token: Mapped[str] = mapped_column(default="")


def reset_db() -> None:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Item(id=1, name="apple", secret_token="s3cret"), Item(id=2, name="pear")])
        session.commit()


app = flask.Flask(__name__)


@app.get("/items/<int:item_id>")
def get_item(item_id: int):
    with Session(engine) as session:
        item = session.get(Item, item_id)
        if item is None:
            flask.abort(404)
        return {"id": item.id, "name": item.name}


@app.post("/items")
def add_item():
    with Session(engine) as session:
        item = Item(name=flask.request.get_json()["name"])
        session.add(item)
        session.commit()
        return {"id": item.id}, 201


@app.get("/boom")
def boom():
    raise ZeroDivisionError("boom")


@app.get("/health")
def health():
    return "ok"


@app.get("/page")
def page():
    return flask.render_template_string("<p>{{ n }}</p>", n=3)


@app.get("/call")
def call():
    response = requests.get(flask.request.args["url"], timeout=10)
    return {"status": response.status_code, "seen": response.json()}


@app.get("/headers")
def headers():
    """Echo the propagation headers this request arrived with."""
    return {k.lower(): v for k, v in flask.request.headers.items() if k.lower() in ("traceparent", "tracestate", "baggage")}


if os.environ.get("SHOP_RESET_DB"):
    reset_db()
