"""Shared test configuration: Hypothesis profiles and fixtures.

Profiles: ``ci`` (derandomised, fixed example budget: the CI run is reproducible) is loaded
when the environment variable CI is set; ``dev`` otherwise. ``HYPOTHESIS_PROFILE`` overrides.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=30,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=30,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def a9a():
    from fedtheory.suite import load_problem

    return load_problem("a9a_fednl")
