"""Tests of the zoo and its records."""
