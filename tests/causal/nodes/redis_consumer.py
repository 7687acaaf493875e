"""Pops the job and reads the stream entry pushed by redis_producer.py, prints what it got.

Environment: NODE_KEY.
"""
import os

import redis
from opentelemetry import trace

KEY = os.environ["NODE_KEY"]

if __name__ == "__main__":
    client = redis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    tracer = trace.get_tracer("consumer")
    _key, job = client.blpop([KEY], timeout=10)
    with tracer.start_as_current_span("handle list job"):
        pass
    [(_stream, [(_id, fields)])] = client.xread({KEY + ":s": 0}, block=10_000)
    with tracer.start_as_current_span("handle stream job"):
        pass
    client.blpop([KEY], timeout=0.01)  # the next pull ends the stream message's span
    print(job, fields)
