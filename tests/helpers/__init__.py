"""Shared test helpers: running the CLI, writing fake data files."""
