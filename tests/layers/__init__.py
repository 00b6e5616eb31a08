"""Tests of every layer type."""
