"""A module-scoped fixture for tests that check values of deep networks, not their speed: XLA's optimisation passes
would dominate their time (flax's own example tests do the same). Use: ``from fast_compile import fast_compile``
with ``pytestmark = pytest.mark.usefixtures("fast_compile")``."""
import jax
import pytest


@pytest.fixture(scope="module")
def fast_compile():
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
