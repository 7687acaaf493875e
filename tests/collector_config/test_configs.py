"""collector-config/, docker/ and schemas/: everything that can be checked without Docker.

No Docker engine or Collector binary runs here, so these check what can be
checked: every YAML/JSON file parses, every Collector component exists in the
pinned otelcol-contrib release and is wired into a pipeline correctly, every
path compose and the Dockerfile refer to exists, and every SQL file (schema
and dashboard queries) runs on chDB.
"""
from __future__ import annotations

import glob
import json
import os
import re

import pytest
import yaml

from scope_otel.store.migrations import SchemaOptions, migration_files, render, schema_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTOR_DIR = os.path.join(ROOT, "collector-config")
DOCKER_DIR = os.path.join(ROOT, "docker")

# Components of otelcol-contrib 0.120.0 that configurations here may use
# (from the release's components list; extend deliberately when a config needs more).
PINNED_COLLECTOR = "0.120.0"
PINNED_COMPONENTS = {
    "receivers": {"otlp", "hostmetrics", "prometheus", "filelog", "jaeger", "zipkin", "kafka"},
    "processors": {"batch", "memory_limiter", "resourcedetection", "resource", "attributes",
                   "tail_sampling", "probabilistic_sampler", "filter", "transform", "k8sattributes",
                   "groupbytrace", "span"},
    "exporters": {"clickhouse", "loadbalancing", "otlp", "otlphttp", "debug", "file", "kafka"},
    "extensions": {"health_check", "pprof", "zpages", "file_storage", "basicauth"},
    "connectors": {"spanmetrics", "servicegraph", "forward"},
}
SECTIONS = tuple(PINNED_COMPONENTS)


def _collector_configs() -> list[str]:
    return sorted(glob.glob(os.path.join(COLLECTOR_DIR, "*.yaml")))


def _load(path: str):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_every_yaml_file_parses():
    files = _collector_configs() + glob.glob(os.path.join(DOCKER_DIR, "**", "*.yaml"), recursive=True)
    assert len(files) >= 6
    for path in files:
        assert isinstance(_load(path), dict), path


@pytest.mark.parametrize("path", _collector_configs(), ids=os.path.basename)
def test_collector_components_exist_in_the_pinned_release_and_are_wired(path):
    config = _load(path)
    for section in SECTIONS:
        for name in config.get(section) or {}:
            kind = name.split("/", 1)[0]
            assert kind in PINNED_COMPONENTS[section], f"{path}: {section}.{name} not in otelcol-contrib {PINNED_COLLECTOR}"
    service = config["service"]
    for extension in service.get("extensions", []):
        assert extension in config["extensions"], f"{path}: extension {extension} is not configured"
    assert service["pipelines"], f"{path}: no pipelines"
    for pipeline, spec in service["pipelines"].items():
        assert pipeline.split("/")[0] in ("traces", "metrics", "logs")
        for role, section in (("receivers", "receivers"), ("processors", "processors"), ("exporters", "exporters")):
            for name in spec.get(role, []):
                assert name in (config.get(section) or {}), f"{path}: {pipeline} uses unconfigured {name}"
        if "memory_limiter" in spec.get("processors", []):
            assert spec["processors"][0] == "memory_limiter", f"{path}: memory_limiter must come first"


@pytest.mark.parametrize("path", [p for p in _collector_configs() if "clickhouse" in _load(p).get("exporters", {})],
                         ids=os.path.basename)
def test_clickhouse_exporters_write_scope_otel_tables_without_creating_schema(path):
    exporter = _load(path)["exporters"]["clickhouse"]
    assert exporter["create_schema"] is False
    assert exporter["traces_table_name"] == "otel_traces" and exporter["database"] == "otel"
    assert exporter["password"].startswith("${env:"), "credentials come from the environment"


def test_agent_balances_by_trace_id_towards_the_gateways():
    exporter = _load(os.path.join(COLLECTOR_DIR, "agent.yaml"))["exporters"]["loadbalancing"]
    assert exporter["routing_key"] == "traceID"
    assert "otlp" in exporter["protocol"] and set(exporter["resolver"]) <= {"dns", "static", "k8s"}
    gateway = _load(os.path.join(COLLECTOR_DIR, "gateway.yaml"))
    assert "otlp" in gateway["receivers"] and gateway["exporters"]["clickhouse"]["cluster_name"]


def test_compose_pins_the_collector_release_and_refers_to_existing_files():
    compose = _load(os.path.join(DOCKER_DIR, "compose.yaml"))
    services = compose["services"]
    assert {"clickhouse", "otelcol", "grafana", "app", "schema"} <= set(services)
    assert services["otelcol"]["image"].endswith(":" + PINNED_COLLECTOR)
    version = services["clickhouse"]["image"].rsplit(":", 1)[1]
    assert tuple(int(x) for x in version.split(".")[:2]) >= (25, 8)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert os.path.exists(os.path.join(DOCKER_DIR, source)), f"{name}: {source} missing"
        build = service.get("build")
        if build:
            context = os.path.join(DOCKER_DIR, build["context"])
            assert os.path.exists(os.path.join(context, build["dockerfile"])), f"{name}: Dockerfile missing"


def test_dockerfile_copies_only_paths_that_exist():
    with open(os.path.join(DOCKER_DIR, "Dockerfile"), encoding="utf-8") as fh:
        lines = [line.split() for line in fh if line.startswith("COPY ")]
    assert lines
    for parts in lines:
        for source in parts[1:-1]:
            assert os.path.exists(os.path.join(ROOT, source)), source


def test_grafana_datasource_points_at_the_scope_otel_tables():
    source = _load(os.path.join(DOCKER_DIR, "grafana", "provisioning", "datasources", "clickhouse.yaml"))
    ds = source["datasources"][0]
    assert ds["type"] == "grafana-clickhouse-datasource"
    assert ds["jsonData"]["traces"]["defaultTable"] == "otel_traces"
    assert ds["secureJsonData"]["password"] == "$CLICKHOUSE_PASSWORD"


# -- SQL on a real chDB ---------------------------------------------------------


@pytest.fixture(scope="module")
def chdb_client(tmp_path_factory):
    from scope_otel.store.engine import _Engine, _close_engine, _open_engine

    path = str(tmp_path_factory.mktemp("sqlcheck"))
    with _Engine.lock:
        client = _open_engine(path)
    _Engine.last_use = 1e18  # keep it open for the module
    yield client
    with _Engine.lock:
        _close_engine()


def test_every_schema_file_runs_on_chdb_with_ttl(chdb_client):
    files = migration_files()
    assert [f[1] for f in files] == ["ch_001_traces.sql", "ch_002_scope_events.sql", "ch_003_spans_by_trace.sql",
                                         "ch_004_part_format.sql", "ch_005_spans_by_time.sql", "ch_006_function_stats.sql",
                                         "ch_007_edges_and_search.sql", "ch_008_edges_cheaper_inserts.sql",
                                         "ch_R_views.sql"]
    for database, options in (("sqlcheck", SchemaOptions()), ("sqlcheck_ttl", SchemaOptions(ttl_days=7))):
        chdb_client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        for _version, name in files:
            with open(os.path.join(schema_dir(), name), encoding="utf-8") as fh:
                for statement in render(fh.read(), database, options):
                    chdb_client.command(statement)
    ddl = chdb_client.query("SHOW CREATE TABLE sqlcheck_ttl.otel_traces").result_rows[0][0]
    assert "TTL toDateTime(Timestamp) + toIntervalDay(7)" in ddl


def test_cluster_rendering_adds_on_cluster_and_replicated_engines():
    with open(os.path.join(schema_dir(), "ch_001_traces.sql"), encoding="utf-8") as fh:
        statements = render(fh.read(), "otel", SchemaOptions(cluster="scope", replicated=True))
    assert all("ON CLUSTER `scope`" in s for s in statements)
    assert sum("ENGINE = ReplicatedMergeTree()" in s for s in statements) == 2


def test_every_dashboard_query_runs_on_chdb(chdb_client):
    with open(os.path.join(DOCKER_DIR, "grafana", "dashboards", "scope-otel.json"), encoding="utf-8") as fh:
        dashboard = json.load(fh)
    queries = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 6
    chdb_client.command("CREATE DATABASE IF NOT EXISTS otel")
    for _version, name in migration_files():
        with open(os.path.join(schema_dir(), name), encoding="utf-8") as fh:
            for statement in render(fh.read(), "otel"):
                chdb_client.command(statement)
    for sql in queries:
        sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 >= now() - INTERVAL 1 HOUR", sql)
        chdb_client.query(sql)  # raises on any error
