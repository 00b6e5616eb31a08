"""Tests of measurements against baselines and the scripts that make them."""
