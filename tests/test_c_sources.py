"""The C encoders read the OpenTelemetry SDK's objects through one reader,
``scope_otel/_c/sdk_fields.h``, so an SDK rename is one edit there (issue 25)."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
READER = ROOT / "scope_otel" / "_c" / "sdk_fields.h"
#: the SDK classes whose private fields are read, and those fields
SDK_CLASSES = ("ReadableSpan", "SpanContext", "BoundedAttributes", "BoundedList", "TraceState")
PRIVATE = re.compile(r'"_(context|parent|name|kind|start_time|end_time|attributes|events|links|status|resource|'
                     r'instrumentation_scope|timestamp|status_code|description|dict|dq)"')


def _c_sources() -> list[pathlib.Path]:
    return [p for p in sorted((ROOT / "scope_otel").rglob("*.[ch]")) if p != READER]


def test_only_the_reader_names_the_sdks_private_fields_or_classes():
    offenders = []
    for path in _c_sources():
        text = path.read_text(encoding="utf-8")
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments may name them
        if "sdk_field[" in code or PRIVATE.search(code):
            offenders.append(f"{path.relative_to(ROOT)}: reads an SDK field by name; use sdk_fields.h's readers")
        named = [cls for cls in SDK_CLASSES if f'"{cls}"' in code]
        if named:
            offenders.append(f"{path.relative_to(ROOT)}: names SDK classes {named}; sdk_fields.h loads them")
    assert not offenders, "\n".join(offenders)


def test_the_reader_names_every_class_it_reads():
    text = READER.read_text(encoding="utf-8")
    for cls in SDK_CLASSES + ("Event", "Link", "Status"):
        assert f'"{cls}"' in text
