"""Pushes one job onto a Redis list and one entry onto a Redis stream, inside a span.

Environment: NODE_KEY (the list is NODE_KEY, the stream NODE_KEY + ':s').
"""
import os

import redis
from opentelemetry import trace

KEY = os.environ["NODE_KEY"]

if __name__ == "__main__":
    client = redis.Redis(host="127.0.0.1", port=6379)
    with trace.get_tracer("producer").start_as_current_span("enqueue"):
        client.rpush(KEY, "job-1")
        client.xadd(KEY + ":s", {"job": "2"})
