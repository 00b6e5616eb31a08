"""Tests of the plan, the builder, the summary, the language as a whole."""
