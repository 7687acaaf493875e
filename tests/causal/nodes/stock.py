"""Node 3, the stock service: ``POST /reserve/<n>`` answers 200.

Environment: NODE_PORT.  Stops on SIGINT.
"""
import os

import flask

app = flask.Flask("stock")


@app.post("/reserve/<int:n>")
def reserve(n: int):
    return {"reserved": n}


if __name__ == "__main__":
    app.run("127.0.0.1", int(os.environ["NODE_PORT"]), use_reloader=False, threaded=True)
