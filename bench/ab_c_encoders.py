"""Two builds of the C span encoders, side by side in one process: OTLP (``_otlpenc``) and
ClickHouse Native (``_chnative``) encoding of the same SDK spans.

    python bench/ab_c_encoders.py OLD_DIR NEW_DIR [--rounds 15]
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=encode_spans \
        python bench/ab_c_encoders.py OLD_DIR NEW_DIR --only old --what otlp   # then new, ch

Each directory holds a ``_otlpenc`` and a ``_chnative`` extension built from one version of
the sources with the same compiler flags (see bench/RESULTS.md for the commands).  The
builds run alternately, round after round, so load on a shared machine falls on both; the
table shows each build's median and best microseconds per span and the new/old ratio of
the medians.  Both builds' output is checked byte-identical first.  ``--only`` encodes
once with one build and one encoder (``--what``), for an instruction count under callgrind,
which the machine's load does not change.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.bench_processor import _finished_spans  # noqa: E402
from scope_otel.export import otlp  # noqa: E402
from scope_otel.store import rows  # noqa: E402


def _load(directory: str, name: str):
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    path = os.path.join(directory, name + suffix)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _otlp_encoder(module):
    real = sys.modules.get("scope_otel.export._otlpenc")
    sys.modules["scope_otel.export._otlpenc"] = module
    try:
        return otlp._load_c()
    finally:
        if real is not None:
            sys.modules["scope_otel.export._otlpenc"] = real


def _ch_encoder(module):
    def encode(chunk):
        rows.ENCODER = module.encode_spans
        batch = rows.Batch()
        batch.add_spans(chunk)
        return batch.encode()
    return encode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only", choices=("old", "new"))
    parser.add_argument("--what", choices=("otlp", "ch"), default="otlp")
    args = parser.parse_args()
    builds = {label: (_load(d, "_otlpenc"), _load(d, "_chnative")) for label, d in (("old", args.old), ("new", args.new))}
    spans = _finished_spans(512 * 4, 10)
    chunks = [spans[i:i + 512] for i in range(0, len(spans), 512)]
    encoders = {
        "OTLP request (_otlpenc)": {k: _otlp_encoder(v[0]) for k, v in builds.items()},
        "ClickHouse Native (_chnative)": {k: _ch_encoder(v[1]) for k, v in builds.items()},
    }
    if args.only:
        encode = list(encoders.values())[0 if args.what == "otlp" else 1][args.only]
        for chunk in chunks:
            encode(chunk)
        return 0
    for what, pair in encoders.items():
        assert all(pair["old"](c) == pair["new"](c) for c in chunks), f"{what}: the builds' bytes differ"
    print(f"{'encoder, 10 attributes per span':32}  {'old median':>10}  {'new median':>10}  {'old best':>8}  "
          f"{'new best':>8}  new/old")
    for what, pair in encoders.items():
        times = {"old": [], "new": []}
        for _ in range(args.rounds):
            for label in ("old", "new"):
                t0 = time.perf_counter()
                for chunk in chunks:
                    pair[label](chunk)
                times[label].append((time.perf_counter() - t0) / len(spans) * 1e6)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{what:32}  {med['old']:>10.2f}  {med['new']:>10.2f}  {min(times['old']):>8.2f}  "
              f"{min(times['new']):>8.2f}  {med['new'] / med['old']:.3f}")
    print("us per span, batches of 512; load average %.2f" % os.getloadavg()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
