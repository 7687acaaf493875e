"""Drive the example shop end to end: serve it over real HTTP, send requests, stop.

    scope-otel run -- python examples/shop_demo.py

Serves ``shop.web`` with werkzeug's threaded WSGI server on a free loopback
port, sends a fixed script of requests (listing, orders, an out-of-stock
conflict, a deliberate 500), waits for the background fulfilment queue to
drain and exits.  Prints what it did; scope-otel records the rest.

``--rounds N`` adds N - 1 rounds of steady traffic (listing, two order
look-ups, an order that fails on stock) before the last request, for a run
long enough to measure overhead on (``bench/bench_plan_accuracy.py``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from werkzeug.serving import make_server  # noqa: E402

from shop.web import create_app  # noqa: E402


def call(base: str, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, json.loads(payload)
        except ValueError:
            return exc.code, payload[:60].decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of traffic (default 1: the script once)")
    rounds = parser.parse_args(argv).rounds
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # keep the demo's output to its own lines
    app = create_app()
    app.logger.disabled = True  # the /boom traceback is expected; scope-otel records it
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    script = [
        ("GET", "/products", None),
        ("POST", "/orders", {"customer": "ada", "items": [{"product_id": 1, "quantity": 3}]}),
        ("POST", "/orders", {"customer": "bob", "items": [{"product_id": 2, "quantity": 1}, {"product_id": 1, "quantity": 1}]}),
        ("GET", "/orders/1", None),
        ("GET", "/boom", None),
    ]
    try:
        for method, path, body in script:
            status, payload = call(base, method, path, body)
            print(f"{method:4s} {path:12s} -> {status} {json.dumps(payload)[:70]}")
        app.extensions["fulfilment"].jobs.join()
        app.extensions["fulfilment"].stop()
        status, payload = call(base, "GET", "/orders/1")
        print(f"GET  /orders/1    -> {status} {json.dumps(payload)[:70]} (after fulfilment)")
        steady = [
            ("GET", "/products", None),
            ("GET", "/orders/1", None),
            ("GET", "/orders/2", None),
            ("POST", "/orders", {"customer": "dee", "items": [{"product_id": 3, "quantity": 1}]}),
        ]
        statuses: dict[int, int] = {}
        for _ in range(rounds - 1):
            for method, path, body in steady:
                status, _payload = call(base, method, path, body)
                statuses[status] = statuses.get(status, 0) + 1
        if statuses:
            print(f"{rounds - 1} more rounds: " + ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items())))
        # last, so that `scope-otel trace --last` shows it: an order that fails on stock
        body = {"customer": "cy", "items": [{"product_id": 2, "quantity": 1}, {"product_id": 3, "quantity": 1}]}
        status, payload = call(base, "POST", "/orders", body)
        print(f"POST /orders      -> {status} {json.dumps(payload)[:70]}")
    finally:
        server.shutdown()  # the fulfilment thread is a daemon: an early failure does not hang here
    return 0


if __name__ == "__main__":
    sys.exit(main())
