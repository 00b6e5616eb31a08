"""Tests of promises that cross packages: reliability, untrusted input, structure,
packaging, the README."""
