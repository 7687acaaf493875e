"""Fixtures for the receiver tests: ``scope-otel collect`` in a subprocess on free loopback ports."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


class CollectProcess:
    """``scope-otel collect`` running in a subprocess on free loopback ports."""

    def __init__(self, store: str, *args: str, env: dict | None = None) -> None:
        self.store = store
        ready = store + ".ready.json"
        exe = os.path.join(os.path.dirname(sys.executable), "scope-otel")
        self.proc = subprocess.Popen(
            [exe, "collect", "--store", store, "--grpc-port", "0", "--http-port", "0", "--ready-file", ready, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"scope-otel collect did not start:\n{self.output}")
            time.sleep(0.05)
        with open(ready) as fh:
            endpoints = json.load(fh)
        self.grpc_endpoint, self.http_endpoint = endpoints["grpc"], endpoints["http"]
        self.output = ""

    def stop(self, timeout: float = 30) -> int:
        """SIGINT (the documented way to stop it), wait, keep its output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except Exception:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output = out or ""
        return self.proc.returncode


@pytest.fixture
def collect_process(tmp_path):
    started: list[CollectProcess] = []

    def start(*args: str, env: dict | None = None) -> CollectProcess:
        process = CollectProcess(str(tmp_path / f"store{len(started)}"), *args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
