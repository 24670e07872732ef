"""Test configuration, in equinox's manner: strict dtype and rank promotion everywhere.

Implicit promotions (float32 + float64, [T] + [T, H]) raise inside every test, so
jrnn cannot rely on them silently. Tests that run third-party code which needs
standard promotion (optax's Adam computes ``b1 ** count`` with an int32 count)
say so with ``@pytest.mark.standard_promotion``.

Tests that compare with references in float64 use the ``x64`` fixture, which
turns on ``jax_enable_x64`` for that test only.
"""

import atexit
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

# Tests that build the same model twice (a run and its resume, the CLI called
# again) compile identical programs; a per-process persistent compilation cache
# compiles each once. It only changes speed, never results.
_CACHE = tempfile.mkdtemp(prefix="jrnn-test-jax-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
  config.addinivalue_line(
    "markers", "standard_promotion: run with jax_numpy_dtype_promotion='standard' (third-party code needs it)"
  )


@pytest.fixture(autouse=True)
def _strict_dtype_promotion(request):
  mode = "standard" if request.node.get_closest_marker("standard_promotion") else "strict"
  with jax.numpy_dtype_promotion(mode):
    yield


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
