"""Node 2, the worker: takes NODE_COUNT orders from RabbitMQ, reserves stock over HTTP for each, exits.

Environment: NODE_QUEUE, NODE_COUNT, STOCK_URL.
"""
import json
import os

import pika
import requests

QUEUE = os.environ["NODE_QUEUE"]
COUNT = int(os.environ["NODE_COUNT"])
STOCK_URL = os.environ["STOCK_URL"]
done = []


def on_message(channel, method, properties, body):
    order = json.loads(body)["order"]
    requests.post(f"{STOCK_URL}/reserve/{order}", timeout=10).raise_for_status()
    channel.basic_ack(method.delivery_tag)
    done.append(order)
    if len(done) == COUNT:
        channel.stop_consuming()


if __name__ == "__main__":
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    channel = connection.channel()
    channel.queue_declare(QUEUE)
    channel.basic_consume(QUEUE, on_message)
    channel.start_consuming()
    connection.close()
    print("worker done", sorted(done), flush=True)
