"""Tests of the experiment file: parsing, errors, overrides, bundled configs."""
