"""stack and bidirectional against step-by-step and manual references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn


def _xs(T=7, I=3, seed=1):
  return jax.random.normal(jax.random.key(seed), (T, I), jnp.float64)


@pytest.mark.parametrize("reverse", [False, True])
def test_stack_layerwise_equals_stepping_all_layers(x64, reverse):
  cell = jrnn.stack([jrnn.lstm(4, dtype=jnp.float64), jrnn.gru(5, dtype=jnp.float64), jrnn.elman(2, dtype=jnp.float64)])
  params = cell.init(jax.random.key(0), 3)
  xs = _xs()
  mask = jnp.array([1, 1, 0, 1, 0, 1, 1], bool)
  carry, hs = jrnn.unroll(cell, params, xs, mask=mask, reverse=reverse)
  # Reference: cell.step (every layer per time step) in a Python loop.
  c = cell.initial_carry(params)
  outs = [None] * 7
  for t in range(6, -1, -1) if reverse else range(7):
    new_c, h = cell.step(params, c, xs[t])
    if mask[t]:
      c, outs[t] = new_c, h
    else:
      outs[t] = jnp.zeros(2)
  np.testing.assert_allclose(hs, jnp.stack(outs), rtol=1e-12, atol=1e-12)
  chex.assert_trees_all_close(carry, c, rtol=1e-12, atol=1e-12)
  assert cell.hidden_size == 2 and len(params) == 3 and params[1].wx.shape == (4, 15)


def test_stack_equals_manual_composition(x64):
  l1, l2 = jrnn.elman(4, dtype=jnp.float64), jrnn.lstm(3, dtype=jnp.float64)
  cell = jrnn.stack([l1, l2])
  params = cell.init(jax.random.key(2), 3)
  xs = _xs()
  c1, h1 = jrnn.unroll(l1, params[0], xs)
  c2, h2 = jrnn.unroll(l2, params[1], h1)
  carry, hs = jrnn.unroll(cell, params, xs)
  np.testing.assert_allclose(hs, h2, rtol=1e-12)
  chex.assert_trees_all_close(carry, (c1, c2), rtol=1e-12)


def test_bidirectional_equals_forward_and_flipped_backward(x64):
  f, b = jrnn.gru(4, dtype=jnp.float64), jrnn.lstm(3, dtype=jnp.float64)
  cell = jrnn.bidirectional(f, b)
  params = cell.init(jax.random.key(0), 3)
  xs = _xs()
  carry, hs = jrnn.unroll(cell, params, xs)
  cf, hf = jrnn.unroll(f, params.forward, xs)
  cb, hb = jrnn.unroll(b, params.backward, xs[::-1])
  np.testing.assert_allclose(hs, jnp.concatenate([hf, hb[::-1]], axis=1), rtol=1e-12)
  chex.assert_trees_all_close(carry, jrnn.BidirectionalCarry(cf, cb), rtol=1e-12)
  assert cell.hidden_size == 7 and cell.step is None


@pytest.mark.parametrize("make", [jrnn.elman, jrnn.gru, jrnn.lstm])
def test_bidirectional_right_padding_equals_unpadded(x64, make):
  """Masking-correct: padding changes nothing; the backward pass starts at the last real element."""
  cell = jrnn.bidirectional(make(4, dtype=jnp.float64))
  params = cell.init(jax.random.key(3), 3)
  xs = _xs(T=9)
  n = 6
  carry_p, hs_p = jrnn.unroll(cell, params, xs, mask=jnp.arange(9) < n)
  carry_u, hs_u = jrnn.unroll(cell, params, xs[:n])
  np.testing.assert_allclose(hs_p[:n], hs_u, rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(hs_p[n:], 0.0)
  chex.assert_trees_all_close(carry_p, carry_u, rtol=1e-12, atol=1e-12)


def test_stack_of_bidirectional_layers_like_torch_layout(x64):
  cell = jrnn.stack(
    [jrnn.bidirectional(jrnn.lstm(4, dtype=jnp.float64)), jrnn.bidirectional(jrnn.lstm(4, dtype=jnp.float64))]
  )
  params = cell.init(jax.random.key(0), 3)
  assert params[1].forward.wx.shape == (8, 16)  # layer 2 reads both directions
  xs = _xs()
  carry, hs = jrnn.unroll(cell, params, xs)
  _, h1 = jrnn.unroll(cell_1 := jrnn.bidirectional(jrnn.lstm(4, dtype=jnp.float64)), params[0], xs)
  _, h2 = jrnn.unroll(cell_1, params[1], h1)
  np.testing.assert_allclose(hs, h2, rtol=1e-12)
  assert cell.step is None
  with pytest.raises(ValueError, match="no step"):
    jrnn.one_to_many(cell, params, jrnn.linear(3), jrnn.linear(3).init(jax.random.key(0), 8), xs[0], 3)


def test_stack_and_bidirectional_reject_non_cells():
  with pytest.raises(ValueError, match="at least one"):
    jrnn.stack([])
  with pytest.raises(TypeError, match=r"cells\[1\]"):
    jrnn.stack([jrnn.gru(3), "lstm"])
  with pytest.raises(TypeError, match="backward"):
    jrnn.bidirectional(jrnn.gru(3), 3)
