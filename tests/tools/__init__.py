"""Tests of commands on a finished run."""
