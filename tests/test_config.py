"""Configuration: precedence, sources, validation messages, run-time changes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from scope_otel import config
from tests.support.procs import clean_env, run, tool


def test_precedence_is_defaults_then_file_then_env_then_flags(tmp_path):
    (tmp_path / "scope-otel.toml").write_text('level = "full"\nsampling_rate = 0.5\nring_size = 4096\n')
    env = {"SCOPE_OTEL_SAMPLING_RATE": "0.25", "SCOPE_OTEL_RING_SIZE": "8192"}
    cfg = config.load(flags={"ring_size": "1024"}, env=env, cwd=str(tmp_path))
    assert (cfg.level, cfg.source("level")) == ("full", f"file {tmp_path / 'scope-otel.toml'}")
    assert (cfg.sampling_rate, cfg.source("sampling_rate")) == (0.25, "env SCOPE_OTEL_SAMPLING_RATE")
    assert (cfg.ring_size, cfg.source("ring_size")) == (1024, "flag --ring_size")
    assert (cfg.overflow, cfg.source("overflow")) == ("drop_oldest", "default")


def test_pyproject_tool_table_is_read_and_dashes_accepted(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.scope-otel]\nmax-value-length = 99\nfunction-levels = { "shop.*" = "full" }\n'
    )
    cfg = config.load(env={}, cwd=str(tmp_path))
    assert cfg.max_value_length == 99
    assert cfg.function_levels == {"shop.*": "full"}


def test_someone_elses_pyproject_is_ignored(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    cfg = config.load(env={}, cwd=str(tmp_path))
    assert cfg.file is None and cfg.level == "boundaries"


def test_standard_otel_variables_are_typed(tmp_path):
    env = {
        "OTEL_TRACES_EXPORTER": "otlp,console",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_RESOURCE_ATTRIBUTES": "team=core, region = eu",
        "OTEL_SDK_DISABLED": "true",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "flask, django",
    }
    cfg = config.load(env=env, cwd=str(tmp_path))
    assert cfg.traces_exporter == ("otlp", "console")
    assert cfg.exporter_otlp_protocol == "grpc"  # the per-signal variable wins
    assert cfg.resource_attributes == {"team": "core", "region": "eu"}
    assert cfg.sdk_disabled is True
    assert cfg.disabled_instrumentations == ("flask", "django")


@pytest.mark.parametrize(
    "env, fragments",
    [
        ({"SCOPE_OTEL_SAMPLING_RATE": "abc"}, ["sampling_rate", "SCOPE_OTEL_SAMPLING_RATE", "0.0 to 1.0"]),
        ({"SCOPE_OTEL_SAMPLING_RATE": "1.5"}, ["sampling_rate", "0.0 to 1.0"]),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, ["traces_exporter", "OTEL_TRACES_EXPORTER", "otlp, console, none, clickhouse"]),
        ({"OTEL_TRACES_EXPORTER": "none,otlp"}, ["traces_exporter", "cannot be combined"]),
        ({"OTEL_RESOURCE_ATTRIBUTES": "a=1,oops"}, ["resource_attributes", "'oops'", "key=value"]),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, ["traces_sampler", "always_on"]),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, ["traces_sampler_arg", "0.0 to 1.0"]),
        ({"OTEL_PROPAGATORS": "tracecontext,nosuch"}, ["propagators", "nosuch"]),
        ({"SCOPE_OTEL_FUNCTION_LEVELS": "shop.*=loud"}, ["function_levels", "off, boundaries, full"]),
        ({"SCOPE_OTEL_RING_SIZE": "3"}, ["ring_size", "64"]),
    ],
)
def test_bad_values_name_key_source_and_allowed_values(tmp_path, env, fragments):
    with pytest.raises(config.ConfigError) as info:
        config.load(env=env, cwd=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_key_in_file_is_named_with_the_file(tmp_path):
    path = tmp_path / "scope-otel.toml"
    path.write_text("levle = 'full'\n")
    with pytest.raises(config.ConfigError, match="unknown key 'levle'") as info:
        config.load(env={}, cwd=str(tmp_path))
    assert str(path) in str(info.value)


def test_bad_value_in_file_names_the_file(tmp_path):
    path = tmp_path / "scope-otel.toml"
    path.write_text("overflow = 'explode'\n")
    with pytest.raises(config.ConfigError, match="overflow") as info:
        config.load(env={}, cwd=str(tmp_path))
    assert f"file {path}" in str(info.value)


def test_runtime_update_changes_only_runtime_keys_and_notifies(tmp_path, monkeypatch):
    cfg = config.load(env={}, cwd=str(tmp_path))
    monkeypatch.setattr(config, "_current", cfg)
    seen = []
    monkeypatch.setattr(config, "_listeners", [lambda c, changed: seen.append(dict(changed))])
    assert config.update(sampling_rate="0.1", function_levels={"shop.*": "full"}) == {
        "sampling_rate": 0.1, "function_levels": {"shop.*": "full"},
    }
    assert seen == [{"sampling_rate": 0.1, "function_levels": {"shop.*": "full"}}]
    assert cfg.source("sampling_rate") == "runtime"
    with pytest.raises(config.ConfigError, match="cannot change at run time"):
        config.update(ring_size=128)
    with pytest.raises(config.ConfigError, match="sampling_rate"):
        config.update(sampling_rate=7)
    assert cfg.sampling_rate == 0.1  # nothing applied by the failed calls
    assert config.update(sampling_rate=0.1) == {}  # no change, no notification
    assert len(seen) == 1


def test_sighup_reloads_runtime_keys_from_the_edited_file(tmp_path):
    cfg_file = tmp_path / "scope-otel.toml"
    cfg_file.write_text("sampling_rate = 1.0\nring_size = 1024\n")
    ready = tmp_path / "ready"
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent(f"""
        import time
        from scope_otel import config
        changes = []
        config.subscribe(lambda c, changed: changes.append(changed))
        open({str(ready)!r}, "w").write("x")
        deadline = time.time() + 20
        while not changes and time.time() < deadline:
            time.sleep(0.05)
        c = config.current()
        print(c.sampling_rate, c.source("sampling_rate").split()[0], c.ring_size)
    """))
    proc = subprocess.Popen([tool("scope-otel"), "run", "--traces_exporter", "none", "--", sys.executable, str(program)],
                            env=clean_env(), cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    cfg_file.write_text("sampling_rate = 0.3\nring_size = 999999\n")  # ring_size is fixed at start
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.split() == ["0.3", "file", "1024"]


def test_config_command_prints_values_and_sources(tmp_path):
    (tmp_path / "scope-otel.toml").write_text('level = "full"\n')
    env = clean_env(OTEL_SERVICE_NAME="svc", OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer s3cret")
    result = run([tool("scope-otel"), "config"], env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line and not line.startswith("#")}
    assert rows["level"].split()[1:] == ["full", "file", str(tmp_path / "scope-otel.toml")]
    assert rows["service_name"].split()[1:] == ["svc", "env", "OTEL_SERVICE_NAME"]
    assert rows["overflow"].split()[1:] == ["drop_oldest", "default"]
    assert "s3cret" not in result.stdout  # header values are secrets
