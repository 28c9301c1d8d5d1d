"""invp-bench harness: CLI, config, plan, launchers, pretraining engine, datasets, store, report."""
