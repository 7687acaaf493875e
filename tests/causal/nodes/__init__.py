"""Programs run as separate nodes by the multi-node test (each under ``scope-otel run``)."""
