"""remat (gradient checkpointing) in jrnn.unroll: same values and gradients, less stored activation memory."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn


def _setup(T=23, B=3, I=3, H=4):
  cell = jrnn.lstm(H, dtype=jnp.float64)
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float64)
  mask = jnp.asarray(np.random.default_rng(0).random((B, T)) > 0.25)
  return cell, params, xs, mask


@pytest.mark.parametrize("remat", ["step", "sqrt", 1, 5, 23, 100])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("projection", ["hoisted", "per_step"])
def test_remat_changes_nothing_but_memory(x64, remat, reverse, projection):
  """Chunks that do not divide T (23 = 4*5 + 3), one chunk, chunk > T, masks with holes, both directions."""
  cell, params, xs, mask = _setup()

  def loss(params, xs, remat):
    carry, hs = jrnn.unroll_batch(cell, params, xs, mask=mask, reverse=reverse, remat=remat, projection=projection)
    return jnp.sum(jnp.sin(hs)) + jnp.sum(carry.c**2), hs

  (want, want_hs), want_g = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, xs, None)
  (got, got_hs), got_g = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True), static_argnums=2)(params, xs, remat)
  chex.assert_trees_all_close((got, got_hs), (want, want_hs), rtol=1e-13, atol=1e-13)
  chex.assert_trees_all_close(got_g, want_g, rtol=1e-12, atol=1e-12)


def test_remat_cuts_the_stored_activations():
  """XLA's own accounting of the compiled gradient (temp buffers) at T=1024: sqrt(T) chunks store >= 4x less.

  Not a timing: memory_analysis() is a property of the compiled program.
  """
  cell = jrnn.lstm(32)
  params = cell.init(jax.random.key(0), 8)
  xs = jnp.ones((4, 1024, 8))

  def temp_bytes(remat):
    grad = jax.jit(jax.grad(lambda p: jnp.sum(jrnn.unroll_batch(cell, p, xs, remat=remat)[1] ** 2)))
    return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

  none, step, sqrt = temp_bytes(None), temp_bytes("step"), temp_bytes("sqrt")
  # T*B*H*4 bytes = 0.5 MiB per stored [T, B, H] float32 array: none stores several, sqrt about 2*sqrt(T) steps.
  assert none >= 4 * sqrt, (none, step, sqrt)
  assert none > step > sqrt, (none, step, sqrt)


@pytest.mark.parametrize("bad", ["sqrtt", 0, -3, 2.5, True])
def test_bad_remat_is_a_clear_error(bad):
  cell = jrnn.gru(4)
  params = cell.init(jax.random.key(0), 3)
  with pytest.raises(ValueError, match=r"jrnn.unroll: remat must be None, 'step', 'sqrt' or a positive int"):
    jrnn.unroll(cell, params, jnp.ones((5, 3)), remat=bad)
