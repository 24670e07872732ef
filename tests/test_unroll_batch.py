"""jrnn.unroll_batch: the same function as jax.vmap(jrnn.unroll), with its own input checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn


@pytest.mark.parametrize(
  "make",
  [
    lambda: jrnn.lstm(5, dtype=jnp.float64),
    lambda: jrnn.stack([jrnn.gru(4, dtype=jnp.float64), jrnn.bidirectional(jrnn.elman(3, dtype=jnp.float64))]),
    lambda: jrnn.min_gru(4, dtype=jnp.float64),
  ],
)
@pytest.mark.parametrize("vjp", ["autodiff", "fused"])
def test_unroll_batch_is_vmap_of_unroll(x64, make, vjp):
  cell = make()
  params = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (4, 9, 3), jnp.float64)
  if vjp == "fused" and cell.name == "jrnn.min_gru":  # no recurrent/update split: a clear error instead
    with pytest.raises(ValueError, match="jrnn.unroll_batch: vjp='fused' needs a cell split"):
      jrnn.unroll_batch(cell, params, xs, vjp=vjp)
    return
  carry = jax.tree_util.tree_map(
    lambda c: jax.random.normal(jax.random.key(2), (4,) + c.shape, c.dtype), cell.initial_carry(params)
  )
  mask = jnp.asarray(np.random.default_rng(0).random((4, 9)) > 0.3)

  def loss(params, xs, batched):
    if batched:
      c, hs = jrnn.unroll_batch(cell, params, xs, carry, mask=mask, reverse=True, vjp=vjp)
    else:
      c, hs = jax.vmap(lambda x, c0, m: jrnn.unroll(cell, params, x, c0, mask=m, reverse=True))(xs, carry, mask)
    return jnp.sum(jnp.cos(hs)) + sum(jnp.sum(l) for l in jax.tree_util.tree_leaves(c)), (c, hs)

  (v1, out1), g1 = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, xs, True)
  (v2, out2), g2 = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, xs, False)
  chex.assert_trees_all_close((v1, out1, g1), (v2, out2, g2), rtol=1e-12, atol=1e-12)


def test_default_carry_is_the_cells_initial_carry_for_every_sequence():
  cell = jrnn.lstm(4)
  params = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
  carry, hs = jrnn.unroll_batch(cell, params, xs)
  want_carry, want_hs = jax.vmap(lambda x: jrnn.unroll(cell, params, x))(xs)
  chex.assert_trees_all_close((carry, hs), (want_carry, want_hs))
  assert hs.shape == (2, 5, 4) and carry.c.shape == (2, 4)


def test_bad_batches_are_clear_errors():
  cell = jrnn.gru(4)
  params = cell.init(jax.random.key(0), 3)
  with pytest.raises(
    ValueError,
    match=r"jrnn.unroll_batch: xs must have shape \[B, T, input_size\] = "
    r"\[B, T, 3\], got shape \(5, 3\)",
  ):
    jrnn.unroll_batch(cell, params, jnp.ones((5, 3)))
  with pytest.raises(ValueError, match=r"jrnn.unroll_batch: xs has 2 features"):
    jrnn.unroll_batch(cell, params, jnp.ones((2, 5, 2)))
  with pytest.raises(ValueError, match=r"every carry leaf needs the leading batch axis B=2"):
    jrnn.unroll_batch(cell, params, jnp.ones((2, 5, 3)), jnp.zeros((4,)))
  with pytest.raises(ValueError, match=r"every mask leaf needs the leading batch axis B=2"):
    jrnn.unroll_batch(cell, params, jnp.ones((2, 5, 3)), mask=jnp.ones((5,), bool))
  with pytest.raises(TypeError, match=r"jrnn.unroll_batch: mask must be a boolean array"):
    jrnn.unroll_batch(cell, params, jnp.ones((2, 5, 3)), mask=jnp.ones((2, 5)))
  with pytest.raises(ValueError, match=r"jrnn.unroll_batch: projection must be one of"):
    jrnn.unroll_batch(cell, params, jnp.ones((2, 5, 3)), projection="fused")
  with pytest.raises(ValueError, match=r"jrnn.unroll: vjp must be one of \('autodiff', 'fused'\), got 'cudnn'"):
    jrnn.unroll(cell, params, jnp.ones((5, 3)), vjp="cudnn")
