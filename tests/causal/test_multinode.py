"""Three skewed nodes, one causal graph.

api (clock +3 s) --RabbitMQ--> worker (clock 0) --HTTP--> stock (clock -2 s), each
its own process under ``scope-otel run`` with its own ``service.name``,
exporting OTLP (gRPC and HTTP) to ``scope-otel collect`` writing into chDB.
The skews are chosen *against* causality: by wall clock the worker picks a
message up three seconds before the API sent it, and the stock service answers
before it was asked.  The correlation views must still rebuild exactly the
ground-truth graph, ordered causally by the hybrid logical clock.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests

pika = pytest.importorskip("pika")

from scope_otel.store import open_store  # noqa: E402

NODES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodes")
BIN = os.path.dirname(sys.executable)
ORDERS = (1, 2)


def _rabbitmq_or_skip() -> None:
    try:
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, connection_attempts=1,
                                                          socket_timeout=3)).close()
    except pika.exceptions.AMQPError as exc:
        pytest.skip(f"RabbitMQ is not reachable on 127.0.0.1:5672 ({exc!r})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node exited early:\n{proc.communicate()[0]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


def _node(script: str, service: str, skew_ms: int, otlp: tuple[str, str], **env: str) -> subprocess.Popen:
    protocol, endpoint = otlp
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SCOPE_OTEL_"))}
    environment.pop("PYTHONPATH", None)
    environment.update(
        PATH=BIN + os.pathsep + environment.get("PATH", ""),
        OTEL_SERVICE_NAME=service,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
        SCOPE_OTEL_CLOCK_SKEW_MS=str(skew_ms),
        SCOPE_OTEL_NODE_ID=service,
        **env,
    )
    return subprocess.Popen([os.path.join(BIN, "scope-otel"), "run", "--", sys.executable, os.path.join(NODES, script)],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Run the three nodes once; yield the stopped collector's store path and the queue name."""
    _rabbitmq_or_skip()
    from tests.collect.conftest import CollectProcess

    store = str(tmp_path_factory.mktemp("multinode") / "store")
    collect = CollectProcess(store)
    queue = f"scope-orders-{uuid.uuid4().hex[:8]}"
    api_port, stock_port = _free_port(), _free_port()
    grpc = ("grpc", "http://" + collect.grpc_endpoint)
    http = ("http/protobuf", collect.http_endpoint.rsplit("/v1/traces", 1)[0])
    procs = {}
    try:
        procs["stock"] = _node("stock.py", "stock", -2_000, grpc, NODE_PORT=str(stock_port))
        procs["api"] = _node("api.py", "api", 3_000, grpc, NODE_PORT=str(api_port), NODE_QUEUE=queue)
        procs["worker"] = _node("worker.py", "worker", 0, http, NODE_QUEUE=queue, NODE_COUNT=str(len(ORDERS)),
                                STOCK_URL=f"http://127.0.0.1:{stock_port}")
        _wait_listening(stock_port, procs["stock"])
        _wait_listening(api_port, procs["api"])
        for n in ORDERS:
            assert requests.post(f"http://127.0.0.1:{api_port}/order/{n}", timeout=10).status_code == 202
        worker_out = procs["worker"].communicate(timeout=60)[0]
        assert procs["worker"].returncode == 0, worker_out
    finally:
        outputs = {name: _stop(proc) for name, proc in procs.items()}
        code = collect.stop()
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672)).channel().queue_delete(queue)
    assert code == 0, collect.output
    assert '"failed_spans": 0' in collect.output, collect.output
    yield {"store": store, "queue": queue, "outputs": outputs}


@pytest.fixture(scope="module")
def store(cluster):
    s = open_store(cluster["store"], "otel")
    yield s
    s.close()


def _spans(store, trace_id: str) -> list[dict]:
    return store.query(
        "SELECT SpanId, ParentSpanId, ServiceName, SpanKind, SpanName, Timestamp, SpanAttributes['scope.hlc'] AS Hlc,"
        " arrayFilter((sid, attrs) -> NOT mapContains(attrs, 'scope.handoff'), Links.SpanId, Links.Attributes)"
        " AS LinkSpanIds FROM otel_traces WHERE TraceId = {tid:String}",
        {"tid": trace_id},
    ).dicts()


def _traces(store) -> dict[int, str]:
    """order number -> trace id, found from the API's server spans."""
    rows = store.query(
        "SELECT TraceId, SpanAttributes['url.path'] AS Path FROM otel_traces "
        "WHERE ServiceName = 'api' AND SpanKind = 'SPAN_KIND_SERVER'"
    ).rows
    return {int(path.rsplit("/", 1)[1]): trace_id for trace_id, path in rows}


def ground_truth(queue: str, n: int) -> list[tuple[str, str, str]]:
    """(service, kind, name) from the root down: each one the parent of the next."""
    return [
        ("api", "SPAN_KIND_SERVER", "POST /order/<int:n>"),
        ("api", "SPAN_KIND_PRODUCER", f"send {queue}"),
        ("worker", "SPAN_KIND_CONSUMER", f"process {queue}"),
        ("worker", "SPAN_KIND_CLIENT", "POST"),
        ("stock", "SPAN_KIND_SERVER", "POST /reserve/<int:n>"),
    ]


def test_each_request_is_one_trace_whose_edges_are_exactly_the_ground_truth(cluster, store):
    traces = _traces(store)
    assert sorted(traces) == list(ORDERS) and len(set(traces.values())) == len(ORDERS)
    for n, trace_id in traces.items():
        everything = _spans(store, trace_id)
        spans = [s for s in everything if s["SpanKind"] != "SPAN_KIND_INTERNAL"]
        by_id = {s["SpanId"]: s for s in spans}
        # the nodes' own functions (recorded with no plan) sit between them: the edge is to the
        # nearest request or message span above
        parent_of = {s["SpanId"]: s["ParentSpanId"] for s in everything}

        def above(span_id: str) -> str:
            while span_id and span_id not in by_id:
                span_id = parent_of.get(span_id, "")
            return span_id

        edges = {
            ((by_id[above(s["ParentSpanId"])]["ServiceName"], by_id[above(s["ParentSpanId"])]["SpanKind"],
              by_id[above(s["ParentSpanId"])]["SpanName"]),
             (s["ServiceName"], s["SpanKind"], s["SpanName"]))
            for s in spans if above(s["ParentSpanId"]) in by_id
        }
        chain = ground_truth(cluster["queue"], n)
        assert edges == set(zip(chain, chain[1:]))
        assert len(spans) == len(chain)
        roots = [s for s in spans if not s["ParentSpanId"]]
        assert [(r["ServiceName"], r["SpanName"]) for r in roots] == [("api", "POST /order/<int:n>")]
        # the consumer also links to its producer (the message edge; in-process
        # queue hand-off links recorded by the hand-off integration are not part of it)
        producer = next(s for s in spans if s["SpanKind"] == "SPAN_KIND_PRODUCER")
        consumer = next(s for s in spans if s["SpanKind"] == "SPAN_KIND_CONSUMER")
        assert list(consumer["LinkSpanIds"]) == [producer["SpanId"]]


def test_views_give_service_and_message_edges_across_the_three_nodes(cluster, store):
    service_edges = {(e["Parent"], e["Child"]): e["Calls"] for e in store.service_edges()}
    assert service_edges == {("api", "worker"): len(ORDERS), ("worker", "stock"): len(ORDERS)}
    broker = [(m["Producer"], m["ConsumerService"], m["Consumer"], m["Messages"])
              for m in store.message_edges() if m["Via"] == "link" and m["Channel"] == cluster["queue"]]
    assert broker == [(f"send {cluster['queue']}", "worker", f"process {cluster['queue']}", len(ORDERS))]
    assert all(m["ProducerService"] == "api" for m in store.message_edges() if m["Channel"] == cluster["queue"])
    # the same hand-off seen by the capture runtime's send/recv events
    events = [(m["ProducerService"], m["ConsumerService"], m["Messages"])
              for m in store.message_edges() if m["Via"] == "message" and m["Channel"] == f"rabbitmq:{cluster['queue']}"]
    assert events == [("api", "worker", len(ORDERS))]


def test_message_edges_hold_nothing_but_the_broker_edge(cluster, store):
    # one broker hop, seen twice: as the consumer span's link to the producer, and
    # as the capture runtime's send/recv pair; no library-internal queue shows up
    edges = sorted((m["Via"], m["Channel"], m["ProducerService"], m["ConsumerService"]) for m in store.message_edges())
    assert edges == [
        ("link", cluster["queue"], "api", "worker"),
        ("message", f"rabbitmq:{cluster['queue']}", "api", "worker"),
    ]


def test_causal_order_follows_the_hlc_although_wall_clocks_contradict_it(cluster, store):
    for n, trace_id in _traces(store).items():
        chain = ground_truth(cluster["queue"], n)
        spans = {(s["ServiceName"], s["SpanKind"], s["SpanName"]): s for s in _spans(store, trace_id)}
        ordered = [s for s in spans.values() if s["SpanKind"] != "SPAN_KIND_INTERNAL"]
        # the skew is visible: by wall clock the worker consumed before the api produced,
        # and the stock service answered before the worker called it
        assert spans[chain[2]]["Timestamp"] < spans[chain[1]]["Timestamp"]
        assert spans[chain[4]]["Timestamp"] < spans[chain[3]]["Timestamp"]
        # every span carries the clock, and along every edge it increases
        assert all(s["Hlc"] for s in ordered)
        assert [spans[c]["Hlc"] for c in chain] == sorted(spans[c]["Hlc"] for c in chain)
        assert {spans[c]["Hlc"].rsplit(".", 1)[1] for c in chain} == {"api", "worker", "stock"}
        # and the view orders them that way
        view = [r["SpanId"] for r in store.causal_order(trace_id) if r["What"] == "span"]
        expected = [spans[c]["SpanId"] for c in chain]
        assert [sid for sid in view if sid in expected] == expected


def test_scope_otel_trace_prints_one_tree_across_the_three_services(cluster, store):
    trace_id = _traces(store)[ORDERS[0]]
    store.close()  # the embedded store belongs to one process at a time
    result = subprocess.run([os.path.join(BIN, "scope-otel"), "trace", trace_id, "--store", cluster["store"]],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}")
    wanted = ["[api] POST /order/<int:n>", f"[api] send {cluster['queue']}", f"[worker] process {cluster['queue']}",
              "[worker] POST ", "[stock] POST /reserve/<int:n>"]
    found = [next(i for i, line in enumerate(lines) if w in line) for w in wanted]
    assert found == sorted(found)
    depths = [len(lines[i]) - len(lines[i].lstrip(" ")) for i in found]
    assert depths == sorted(depths) and len(set(depths)) == len(depths)  # one chain, each deeper
