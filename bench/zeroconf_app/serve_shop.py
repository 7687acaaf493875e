"""Serve the example shop from a script of its own: ``python serve_shop.py PORT`` (run with ``examples/`` as the
working directory, so ``shop`` is importable).  The program ``bench/bench_zeroconf.py`` runs under
``scope-otel run`` with no plan: its own functions here are the main script's."""
import logging
import sys

from werkzeug.serving import make_server

from shop.web import create_app


def build(port: int):
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = create_app()
    app.logger.disabled = True
    return make_server("127.0.0.1", port, app, threaded=True)


def main(argv: list[str]) -> None:
    server = build(int(argv[0]))
    print("serving", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
