"""Tests of cnnzoo tune."""
