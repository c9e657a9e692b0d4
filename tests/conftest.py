"""Shared test configuration: strict numerics, a float64 context, and bounded hypothesis profiles."""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile(
    "default",
    max_examples=20,
    deadline=None,
    # The x64 fixture sets a global mode that holds for every generated input alike.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.differing_executors,
        HealthCheck.function_scoped_fixture,
    ],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def x64():
    """Runs the test with float64 enabled (jax_enable_x64), restoring the previous state afterwards."""
    with jax.enable_x64(True):
        yield
