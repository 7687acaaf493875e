"""A tiny shop for the docker demo: a Flask route calling plain functions.

scope-otel records the route (Flask instrumentation) and, with
SCOPE_OTEL_INSTRUMENT=app and SCOPE_OTEL_LEVEL=full, every function of this
module with its arguments, return value and exceptions.  Try:

    curl localhost:8000/checkout?items=3,4   then   curl localhost:8000/checkout?items=x
"""
from flask import Flask, request

app = Flask(__name__)


def parse_items(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x]


def total(items: list[int], discount: float = 0.0) -> float:
    return round(sum(items) * (1 - discount), 2)


@app.get("/checkout")
def checkout():
    try:
        items = parse_items(request.args.get("items", "1,2"))
    except ValueError as exc:
        return {"error": str(exc)}, 400
    return {"total": total(items, discount=0.1)}


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=8000)
