"""The issue's example with real frameworks: Flask request -> function -> SQL."""
from __future__ import annotations

import pytest

from scope_otel.capture import runtime

flask = pytest.importorskip("flask")
sqlalchemy = pytest.importorskip("sqlalchemy")
# Import before contrib instruments: contrib's instrument() imports this module
# while create_engine is wrapped, and the module keeps that wrapped reference
# after uninstrument(), so every later async engine would stay traced by contrib.
import sqlalchemy.ext.asyncio  # noqa: E402,F401


def test_function_in_a_flask_request_is_its_child_and_its_sql_is_the_functions_child(pipeline, fn):
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    engine = sqlalchemy.create_engine("sqlite://")
    # contrib 0.66b1 declares sqlalchemy < 2.1; the project pins 2.1, and the engine events work
    SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=pipeline.provider, skip_dep_check=True)
    load_orders = fn("load_orders", level="full")

    def orders_for(customer):  # what the AST rewriter makes of a planned function
        token = runtime.enter(load_orders, {"customer": customer})
        try:
            with engine.connect() as conn:
                rows = conn.execute(sqlalchemy.text("SELECT :c AS customer"), {"c": customer}).all()
            result = [tuple(r) for r in rows]
        except BaseException as exc:
            runtime.exception(token, exc)
            raise
        runtime.exit(token, result)
        return result

    app = flask.Flask("capture-tests")

    @app.route("/orders/<customer>")
    def orders(customer):
        return {"orders": orders_for(customer)}

    FlaskInstrumentor().instrument_app(app, tracer_provider=pipeline.provider)
    try:
        response = app.test_client().get("/orders/ann")
        assert response.status_code == 200 and response.json == {"orders": [["ann"]]}
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        SQLAlchemyInstrumentor().uninstrument()
    spans = pipeline.spans()
    request = next(s for s in spans if s.attributes.get("http.route") == "/orders/<customer>")
    func = next(s for s in spans if s.name == "load_orders")
    sql = next(s for s in spans if "SELECT" in s.name or s.attributes.get("db.statement", "").startswith("SELECT"))
    assert func.parent.span_id == request.context.span_id
    assert sql.parent.span_id == func.context.span_id
    assert request.context.trace_id == func.context.trace_id == sql.context.trace_id
    assert func.attributes["scope.arg.customer"] == "ann"
    assert func.attributes["scope.return"] == "[('ann',)]"
