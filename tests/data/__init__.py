"""Tests of datasets, fake files, subsets, mixing."""
