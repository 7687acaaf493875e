"""Every recognised pattern, on small source files written for the test."""
from __future__ import annotations

import pytest


def patterns_of(analysis, key):
    assert key in analysis.functions, sorted(analysis.functions)
    return analysis.functions[key].patterns


FLASK_APP = """
    from flask import Flask, Blueprint
    from . import helpers

    app = Flask(__name__)
    shop = Blueprint("shop", __name__)

    @app.route("/")
    def index():
        return "hi"

    @shop.post("/buy")
    def buy():
        return "ok"

    @app.errorhandler(404)
    def not_found(error):
        return "missing", 404

    @app.before_request
    def load_user():
        pass

    def health():
        return "ok"

    def on_error(error):
        return "bad", 500

    app.add_url_rule("/health", "health", health)
    app.register_error_handler(500, on_error)

    def plain():
        return 1
"""


def test_flask_routes_blueprints_error_handlers_and_hooks_are_recognised(analyse_tree):
    a = analyse_tree({"web/app.py": FLASK_APP})
    assert patterns_of(a, "web.app:index") == {"flask.route"}
    assert patterns_of(a, "web.app:buy") == {"flask.route", "flask.blueprint"}
    assert patterns_of(a, "web.app:not_found") == {"flask.error_handler"}
    assert patterns_of(a, "web.app:load_user") == {"flask.hook"}
    assert patterns_of(a, "web.app:health") == {"flask.route"}
    assert patterns_of(a, "web.app:on_error") == {"flask.error_handler"}
    assert patterns_of(a, "web.app:plain") == set()


DJANGO = {
    "shop/models.py": """
        from django.db import models

        class Order(models.Model):
            total = models.IntegerField()

            def place(self):
                self.save()

        class SpecialOrder(Order):
            def special(self):
                return 1
    """,
    "shop/views.py": """
        from django.http import HttpResponse
        from django.views.generic import ListView
        from django.contrib.auth.decorators import login_required

        def order_list(request):
            return HttpResponse("ok")

        @login_required
        def account(req):
            return HttpResponse("me")

        class OrderView(ListView):
            def get(self, request):
                return HttpResponse("list")

            def _helper(self):
                return 2

        def not_a_view(x):
            return x
    """,
    "shop/middleware.py": """
        from django.utils.deprecation import MiddlewareMixin

        class Timing(MiddlewareMixin):
            def process_request(self, request):
                return None

        class Plain:
            def __init__(self, get_response):
                self.get_response = get_response

            def __call__(self, request):
                return self.get_response(request)

            def process_view(self, request, view, args, kwargs):
                return None
    """,
    "shop/signals.py": """
        from django.db.models.signals import post_save
        from django.dispatch import receiver

        @receiver(post_save)
        def on_save(sender, **kwargs):
            pass

        def audit(sender, **kwargs):
            pass

        post_save.connect(audit)
    """,
}


def test_django_views_models_middleware_and_signal_receivers_are_recognised(analyse_tree):
    a = analyse_tree(DJANGO)
    assert "django.model" in patterns_of(a, "shop.models:Order.place")
    assert "django.model" in patterns_of(a, "shop.models:SpecialOrder.special")  # inherited in-tree
    assert patterns_of(a, "shop.views:order_list") == {"django.view"}
    assert patterns_of(a, "shop.views:account") == {"django.view"}
    assert patterns_of(a, "shop.views:OrderView.get") == {"django.view"}
    assert patterns_of(a, "shop.views:OrderView._helper") == set()
    assert patterns_of(a, "shop.views:not_a_view") == set()
    assert patterns_of(a, "shop.middleware:Timing.process_request") == {"django.middleware"}
    assert patterns_of(a, "shop.middleware:Plain.__call__") == {"django.middleware"}
    assert patterns_of(a, "shop.signals:on_save") == {"django.signal_receiver"}
    assert patterns_of(a, "shop.signals:audit") == {"django.signal_receiver"}


SQLALCHEMY = """
    from sqlalchemy import create_engine, select, text
    from sqlalchemy.orm import Session, sessionmaker

    engine = create_engine("sqlite://")
    Factory = sessionmaker(engine)

    def make_engine(url):
        return create_engine(url)

    def load(user_id):
        with Session(engine) as session:
            return session.execute(select(1)).scalar()

    def save(session, obj):
        session.add(obj)
        session.commit()

    def raw():
        with engine.connect() as conn:
            conn.execute(text("select 1"))

    def unrelated(d):
        return d.get("x")
"""


def test_sqlalchemy_engine_session_and_query_use_is_recognised(analyse_tree):
    a = analyse_tree({"db/store.py": SQLALCHEMY})
    assert patterns_of(a, "db.store:make_engine") == {"sqlalchemy.engine"}
    assert {"sqlalchemy.session", "sqlalchemy.query"} <= patterns_of(a, "db.store:load")
    assert patterns_of(a, "db.store:save") == {"sqlalchemy.session"}
    assert {"sqlalchemy.engine", "sqlalchemy.query"} <= patterns_of(a, "db.store:raw")
    assert patterns_of(a, "db.store:unrelated") == set()


CELERY = """
    from celery import Celery, shared_task, Task

    app = Celery("tasks")

    @app.task
    def add(x, y):
        return x + y

    @shared_task(bind=True)
    def mul(self, x, y):
        return x * y

    class Custom(Task):
        def run(self):
            return 1
"""


def test_celery_tasks_are_recognised(analyse_tree):
    a = analyse_tree({"jobs/tasks.py": CELERY})
    assert patterns_of(a, "jobs.tasks:add") == {"celery.task"}
    assert patterns_of(a, "jobs.tasks:mul") == {"celery.task"}
    assert patterns_of(a, "jobs.tasks:Custom.run") == {"celery.task"}


SHAPES = """
    async def fetch():
        return 1

    async def stream():
        yield 1

    def numbers():
        yield from range(3)

    def lazy():
        return (x for x in range(3))
"""


def test_coroutines_generators_and_async_generators_are_told_apart(analyse_tree):
    a = analyse_tree({"m/shapes.py": SHAPES})
    assert patterns_of(a, "m.shapes:fetch") == {"coroutine"}
    assert patterns_of(a, "m.shapes:stream") == {"async_generator"}
    assert patterns_of(a, "m.shapes:numbers") == {"generator"}
    assert patterns_of(a, "m.shapes:lazy") == set()  # a generator expression is not a yield


CONCURRENCY = """
    import asyncio
    import multiprocessing
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    jobs = queue.Queue()

    def consume():
        while True:
            if jobs.get() is None:
                return

    def produce(n):
        jobs.put(n)

    def start():
        threading.Thread(target=consume, daemon=True).start()
        threading.Timer(1.0, tick).start()

    def tick():
        pass

    def crunch(x):
        return x * x

    def fan_out(items):
        with ThreadPoolExecutor() as pool:
            return list(pool.map(crunch, items))

    class Service:
        def __init__(self):
            self.inbox = asyncio.Queue()
            self.executor = ThreadPoolExecutor()

        async def serve(self):
            loop = asyncio.get_running_loop()
            item = await self.inbox.get()
            await loop.run_in_executor(None, self.handle, item)

        def handle(self, item):
            return item

        def submit(self, item):
            self.executor.submit(self.handle, item)

    class Worker(threading.Thread):
        def run(self):
            pass

    def spawn():
        p = multiprocessing.Process(target=child)
        p.start()

    def child():
        pass

    class Dict:
        def lookup(self, d):
            return d.get("k")
"""


def test_threads_executors_queues_and_processes_are_recognised(analyse_tree):
    a = analyse_tree({"svc/work.py": CONCURRENCY})
    assert patterns_of(a, "svc.work:consume") == {"queue.get", "thread.target"}
    assert patterns_of(a, "svc.work:produce") == {"queue.put"}
    assert patterns_of(a, "svc.work:start") == {"thread.spawn"}
    assert patterns_of(a, "svc.work:tick") == {"thread.target"}
    assert patterns_of(a, "svc.work:fan_out") == {"executor.submit"}
    assert patterns_of(a, "svc.work:crunch") == {"executor.target"}
    assert {"coroutine", "queue.get", "executor.submit"} <= patterns_of(a, "svc.work:Service.serve")
    assert patterns_of(a, "svc.work:Service.handle") == {"executor.target"}
    assert patterns_of(a, "svc.work:Service.submit") == {"executor.submit"}
    assert patterns_of(a, "svc.work:Worker.run") == {"thread.target"}
    assert patterns_of(a, "svc.work:spawn") == {"multiprocessing"}
    assert patterns_of(a, "svc.work:child") == {"process.target"}
    assert patterns_of(a, "svc.work:Dict.lookup") == set()  # dict.get is not a queue


CLIENTS = """
    import os
    import subprocess
    import urllib.request
    import requests as r
    import httpx
    import urllib3
    import aiohttp

    def with_requests(url):
        return r.get(url)

    def with_session(url):
        s = r.Session()
        return s.post(url, data={})

    def with_httpx(url):
        with httpx.Client() as client:
            return client.get(url)

    async def with_async_httpx(url):
        async with httpx.AsyncClient() as client:
            return await client.get(url)

    def with_urllib(url):
        return urllib.request.urlopen(url).read()

    def with_urllib3(url):
        return urllib3.PoolManager().request("GET", url)

    async def with_aiohttp(url):
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                return await resp.text()

    def run_tool():
        return subprocess.run(["true"], check=True)

    def shell():
        os.system("true")

    def not_http(cache):
        return cache.get("url")
"""


def test_http_clients_and_subprocesses_are_recognised(analyse_tree):
    a = analyse_tree({"io_/calls.py": CLIENTS})
    for name in ("with_requests", "with_session", "with_httpx", "with_async_httpx",
                 "with_urllib", "with_aiohttp"):
        assert "http.client" in patterns_of(a, f"io_.calls:{name}"), name
    assert patterns_of(a, "io_.calls:run_tool") == {"subprocess"}
    assert patterns_of(a, "io_.calls:shell") == {"subprocess"}
    assert patterns_of(a, "io_.calls:not_http") == set()


def test_urllib3_pool_manager_request_is_an_http_call(analyse_tree):
    a = analyse_tree({"io_/pool.py": """
        import urllib3
        http = urllib3.PoolManager()

        def fetch(url):
            return http.request("GET", url)
    """})
    assert patterns_of(a, "io_.pool:fetch") == {"http.client"}


def test_names_resolve_through_aliases_relative_and_function_local_imports(analyse_tree):
    a = analyse_tree({
        "pkg/net.py": """
            def lazy(url):
                import requests
                return requests.get(url)
        """,
        "pkg/sub/run.py": """
            from ... import nothing_here
            from subprocess import run as execute

            def go():
                execute(["ls"])
        """,
    })
    assert patterns_of(a, "pkg.net:lazy") == {"http.client"}
    assert patterns_of(a, "pkg.sub.run:go") == {"subprocess"}


@pytest.mark.parametrize("source", [
    "import queue\nq = queue.Queue()\ndef f():\n    q.put(1)\n",
    "import queue\nclass C:\n    def __init__(self):\n        self._q = queue.SimpleQueue()\n    def f(self):\n        self._q.put(1)\n",
    "import multiprocessing\nwork_queue = multiprocessing.Queue()\ndef f():\n    work_queue.put(1)\n",
])
def test_queue_put_sites_are_found_however_the_queue_is_held(analyse_tree, source):
    a = analyse_tree({"q/m.py": source})
    key = next(k for k in a.functions if k.endswith(":f") or k.endswith(".f"))
    assert patterns_of(a, key) == {"queue.put"}
