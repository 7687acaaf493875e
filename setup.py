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


def _extensions():
    from setuptools import Extension

    exts = []
    for name, src in [
        ("scope_otel.capture._speedups", "scope_otel/capture/_speedups.c"),
        ("scope_otel.store._chnative", "scope_otel/store/_native/chnative.c"),
        ("scope_otel.export._otlpenc", "scope_otel/export/_otlpenc.c"),
    ]:
        if os.path.exists(os.path.join(HERE, src)) and not os.environ.get("SCOPE_OTEL_NO_EXTENSIONS"):
            exts.append(Extension(name, [src], optional=True))
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
