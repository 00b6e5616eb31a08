"""Tests of the trainer and everything it uses."""
