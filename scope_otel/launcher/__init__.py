"""The launcher: ``scope-otel run`` / ``scope-otel-instrument`` and the
sitecustomize bootstrap that sets up the pipeline inside the program."""
