"""Fixtures of the tune tests: a throwaway PostgreSQL cluster (one per test session,
started only when a test asks for it) and a fresh database on it for each test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.helpers.postgres import Cluster, throwaway_cluster, unavailable_reason

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no PostgreSQL here: {reason}")
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_database(postgres: Cluster) -> tuple[Cluster, str, str]:
    """(cluster, database name, URL) of a new, empty database."""
    name = f"tune{next(_names)}"
    return postgres, name, postgres.create_database(name)
