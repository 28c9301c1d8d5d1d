"""invp-bench: core (config, settings, store) < data, models < engine, tasks < harness, report."""
