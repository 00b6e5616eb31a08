"""The zoo measurement that scripts/zoo_results.py drives, shared by the zoo's tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture
def script():
    """The zoo measurement that scripts/zoo_results.py drives, as one namespace."""
    from cnnzoo.zoo import measure as zoo_measure
    from cnnzoo.zoo import noise as zoo_noise
    from cnnzoo.zoo import report as zoo_report
    from cnnzoo.zoo import run as zoo_run

    return SimpleNamespace(measure=zoo_measure, noise=zoo_noise, report=zoo_report,
                           run=zoo_run)
