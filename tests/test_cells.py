"""Cells: one step against the NumPy float64 equations, initialisers, dtypes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from tests import reference as ref


def _random_params(params, key, scale=0.5):
  """Replaces every leaf (biases included) with random normals, so no term hides behind a zero."""
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(
    tree, [scale * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)]
  )


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_elman_step_matches_equation(x64, key, activation):
  cell = jrnn.elman(5, activation=activation, dtype=jnp.float64)
  p = _random_params(cell.init(key, 3), jax.random.key(1))
  h = np.random.default_rng(0).normal(size=5)
  x = np.random.default_rng(1).normal(size=3)
  carry, out = cell.step(p, jnp.asarray(h), jnp.asarray(x))
  want, _ = ref.elman_step(p, h, x, activation)
  np.testing.assert_allclose(carry, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_elman_callable_activation(x64, key):
  cell = jrnn.elman(4, activation=jnp.sin, dtype=jnp.float64)
  p = _random_params(cell.init(key, 2), jax.random.key(1))
  x = np.array([0.3, -1.2])
  _, out = cell.step(p, jnp.zeros(4, jnp.float64), jnp.asarray(x))
  np.testing.assert_allclose(out, np.sin(x @ np.asarray(p.wx) + np.asarray(p.b)), rtol=1e-12)


def test_gru_step_matches_equation(x64, key):
  cell = jrnn.gru(6, dtype=jnp.float64)
  p = _random_params(cell.init(key, 4), jax.random.key(2))
  rng = np.random.default_rng(3)
  h, x = rng.normal(size=6), rng.normal(size=4)
  carry, out = cell.step(p, jnp.asarray(h), jnp.asarray(x))
  want, _ = ref.gru_step(p, h, x)
  np.testing.assert_allclose(carry, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_lstm_step_matches_equation(x64, key):
  cell = jrnn.lstm(6, dtype=jnp.float64)
  p = _random_params(cell.init(key, 4), jax.random.key(3))
  rng = np.random.default_rng(4)
  h, c, x = rng.normal(size=6), rng.normal(size=6), rng.normal(size=4)
  carry, out = cell.step(p, jrnn.LSTMCarry(jnp.asarray(h), jnp.asarray(c)), jnp.asarray(x))
  (want_h, want_c), _ = ref.lstm_step(p, (h, c), x)
  assert isinstance(carry, jrnn.LSTMCarry)
  np.testing.assert_allclose(carry.h, want_h, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(carry.c, want_c, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(out, want_h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make,gates", [(jrnn.elman, 1), (jrnn.gru, 3), (jrnn.lstm, 4)])
def test_init_shapes_and_orthogonal_recurrent_blocks(key, make, gates):
  H, I = 8, 5
  cell = make(H)
  p = cell.init(key, I)
  chex.assert_shape(p.wx, (I, gates * H))
  chex.assert_shape(p.wh, (H, gates * H))
  for g in range(gates):
    block = np.asarray(p.wh[:, g * H : (g + 1) * H], np.float64)
    np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
  # Glorot-uniform: |w| <= sqrt(6 / (fan_in + fan_out)) per gate block, and not all tiny.
  limit = np.sqrt(6.0 / (I + H))
  assert np.max(np.abs(p.wx)) <= limit + 1e-6
  assert np.max(np.abs(p.wx)) > 0.5 * limit
  chex.assert_trees_all_equal(cell.initial_carry(p), jax.tree.map(jnp.zeros_like, cell.initial_carry(p)))


def test_lstm_forget_bias(key):
  H = 4
  p = jrnn.lstm(H).init(key, 3)
  np.testing.assert_array_equal(p.b, np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
  p2 = jrnn.lstm(H, forget_bias=0.0).init(key, 3)
  np.testing.assert_array_equal(p2.b, np.zeros(4 * H))
  c = jrnn.lstm(H).initial_carry(p)
  assert isinstance(c, jrnn.LSTMCarry) and c.h.shape == (H,) and c.c.shape == (H,)


def test_irnn_identity_init(key):
  cell = jrnn.elman(6, activation="relu", init="identity")
  p = cell.init(key, 3)
  np.testing.assert_array_equal(p.wh, np.eye(6))
  np.testing.assert_array_equal(p.b, np.zeros(6))
  assert 1e-4 < float(jnp.std(p.wx)) < 1e-2
  # With W = I, b = 0 and zero input, a positive state is carried unchanged (Le et al. 2015).
  h = jnp.linspace(0.1, 1.0, 6)
  np.testing.assert_allclose(cell.step(p, h, jnp.zeros(3))[1], h, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64])
@pytest.mark.parametrize("make", [jrnn.elman, jrnn.gru, jrnn.lstm])
def test_param_dtypes_run_and_agree(x64, key, make, dtype):
  """Every dtype runs, keeps its dtype, and agrees with the float64 run to its precision."""
  cell64 = make(8, dtype=jnp.float64)
  p64 = cell64.init(key, 3)
  xs = jax.random.normal(jax.random.key(5), (12, 3), jnp.float32)
  _, hs64 = jrnn.unroll(cell64, p64, xs)
  p = jax.tree.map(lambda a: a.astype(dtype), p64)
  carry, hs = jrnn.unroll(make(8, dtype=dtype), p, xs)
  assert hs.dtype == dtype
  assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(carry))
  tol = {jnp.float32: 1e-5, jnp.bfloat16: 5e-2, jnp.float64: 0.0}[dtype]
  np.testing.assert_allclose(np.asarray(hs, np.float64), np.asarray(hs64), atol=tol + 1e-15)
