"""Database models and the engine (SQLite by default, ``SHOP_DATABASE_URL`` to change)."""
from __future__ import annotations

import os
import tempfile

from sqlalchemy import ForeignKey, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class Category(Base):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    price_cents: Mapped[int]
    stock: Mapped[int]
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(64))
    total_cents: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="new")


def make_engine(url: str | None = None):
    url = url or os.environ.get("SHOP_DATABASE_URL")
    if not url:
        path = os.path.join(tempfile.mkdtemp(prefix="shop-"), "shop.db")
        url = f"sqlite:///{path}"
    return create_engine(url)


def seed(engine) -> sessionmaker:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session, session.begin():
        session.add_all(
            [
                Category(id=1, name="all", parent_id=None),
                Category(id=2, name="kitchen", parent_id=1),
                Category(id=3, name="knives", parent_id=2),
                Product(id=1, name="chef knife", price_cents=4999, stock=10, category_id=3),
                Product(id=2, name="pan", price_cents=2999, stock=5, category_id=2),
                Product(id=3, name="apron", price_cents=1299, stock=0, category_id=1),
            ]
        )
    return factory


def session_for(factory: sessionmaker) -> Session:
    return factory()
