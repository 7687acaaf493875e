"""Node 1, the API: ``POST /order/<n>`` publishes the order to RabbitMQ and answers 202.

Environment: NODE_PORT, NODE_QUEUE.  Stops on SIGINT (so exit hooks flush spans).
"""
import json
import os

import flask
import pika

app = flask.Flask("api")
QUEUE = os.environ["NODE_QUEUE"]


@app.post("/order/<int:n>")
def order(n: int):
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        channel = connection.channel()
        channel.queue_declare(QUEUE)
        channel.basic_publish("", QUEUE, json.dumps({"order": n}).encode(),
                              pika.BasicProperties(message_id=f"order-{n}"))
    finally:
        connection.close()
    return {"queued": n}, 202


if __name__ == "__main__":
    app.run("127.0.0.1", int(os.environ["NODE_PORT"]), use_reloader=False, threaded=True)
