"""Foundations every layer uses: config, settings, registry, store, atomic writes, provenance, runtime."""
