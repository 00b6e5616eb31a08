"""Tests of the leaf helpers: pictures, files, formatting."""
