"""Background fulfilment: a thread fed by a ``queue.Queue`` of order ids."""
from __future__ import annotations

import queue
import threading

from shop.db import Order

_STOP = object()


class Fulfilment:
    def __init__(self, session_factory) -> None:
        self.session_factory = session_factory
        self.jobs: queue.Queue = queue.Queue()
        self.done = 0
        self._thread = threading.Thread(target=self._run, name="fulfilment", daemon=True)

    def start(self) -> "Fulfilment":
        self._thread.start()
        return self

    def submit(self, order_id: int) -> None:
        self.jobs.put(order_id)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.jobs.put(_STOP)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            order_id = self.jobs.get()
            if order_id is _STOP:
                return
            try:
                self.fulfil(order_id)
            finally:
                self.jobs.task_done()

    def fulfil(self, order_id: int) -> None:
        with self.session_factory() as session, session.begin():
            order = session.get(Order, order_id)
            order.status = "shipped"
        self.done += 1
