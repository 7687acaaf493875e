"""Build glue that pyproject.toml cannot express.

* ``instrumentors/`` and ``schemas/`` live at the top of the repository (the
  layout is fixed) but ship inside the import package as
  ``scope_otel.instrumentors`` and ``scope_otel.schemas``.
* The capture hot path and the span encoders (ClickHouse Native, OTLP
  protobuf) have optional C accelerators.  It is built where a
  compiler exists; where a build fails the pure-Python twin is used, so an
  install never fails because of it.
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # compiler missing: fall back to pure Python
            print(f"scope-otel: C accelerator not built ({exc}); using pure Python")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"scope-otel: C accelerator {ext.name} not built ({exc}); using pure Python")


#: headers shared by the C encoders (one buffer/varint stack, one list of the
#: SDK's private fields); ``depends`` also puts them in the sdist
C_INCLUDE = "scope_otel/_c"
C_HEADERS = ["scope_otel/_c/scope_buf.h", "scope_otel/_c/sdk_fields.h"]


def _extensions():
    from setuptools import Extension

    exts = []
    native = "scope_otel/store/_native/"
    for name, sources, headers in [
        ("scope_otel.capture._speedups", ["scope_otel/capture/_speedups.c"], []),
        ("scope_otel.store._chnative", [native + "encode.c", native + "merge.c", native + "module.c"],
         C_HEADERS + [native + "chnative.h"]),
        ("scope_otel.export._otlpenc", ["scope_otel/export/_otlpenc.c"], C_HEADERS),
        ("scope_otel._redactc", ["scope_otel/_redactc.c"], []),
    ]:
        if all(os.path.exists(os.path.join(HERE, s)) for s in sources) and not os.environ.get("SCOPE_OTEL_NO_EXTENSIONS"):
            exts.append(Extension(name, sources, include_dirs=[C_INCLUDE], depends=headers, optional=True))
    return exts


packages = find_packages(include=["scope_otel", "scope_otel.*"])
packages += ["scope_otel.instrumentors"] + [
    "scope_otel.instrumentors." + p for p in find_packages(where="instrumentors")
]
packages += ["scope_otel.schemas"]

setup(
    packages=packages,
    package_dir={
        "scope_otel.instrumentors": "instrumentors",
        "scope_otel.schemas": "schemas",
    },
    package_data={"scope_otel.schemas": ["*.json", "*.sql", "**/*.sql"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
