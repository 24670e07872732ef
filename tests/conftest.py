"""Test configuration, in equinox's manner: strict dtype and rank promotion everywhere.

Implicit promotions (float32 + float64, [T] + [T, H]) raise inside every test, so
the library cannot rely on them silently. Tests that compare with references in
float64 use the ``x64`` fixture, which turns on ``jax_enable_x64`` for that test.
"""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture
def x64():
  """Enables float64 for one test, restoring the previous setting afterwards."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)
