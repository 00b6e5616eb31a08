"""Datasets: what each one is (catalog) and how to load it."""
