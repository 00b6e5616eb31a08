"""Tests of the run directory, its lock, checkpoints, pretrained weights."""
