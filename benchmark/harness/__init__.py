"""Runs jobs: command line, plan, jobs, launchers, sweeps, status, resources."""
