"""LSTMP and the layer-normalised LSTM and GRU against the papers' equations, written out in float64 NumPy.

The references below do not call jrnn: each is the paper's equations as a loop
over time. (tests/test_contract.py runs the three cells through every wrapper
and tests/test_interop.py checks the LSTMP against PyTorch.)
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn
from jrnn._layer_norm import layer_norm
from jrnn._layer_norm import layer_norm_gru
from jrnn._layer_norm import layer_norm_lstm
from jrnn._lstmp import LSTMPCarry
from jrnn._lstmp import lstmp

I, H, P, T = 3, 5, 2, 6
EPS = 1e-5


def _sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


def _ln(a, gain, bias, eps=EPS):
  mu = a.mean()
  return gain * (a - mu) / np.sqrt(((a - mu) ** 2).mean() + eps) + bias


def ref_lstmp(p, xs, h, c):
  """Sak et al. (2014) with PyTorch's i, f, g, o order: h_t = (σ(o) ⊙ tanh(c_t)) W_r."""
  p = {k: np.asarray(v) for k, v in p._asdict().items()}
  hs = []
  for x in np.asarray(xs):
    i, f, g, o = np.split(x @ p["wx"] + h @ p["wh"] + p["b"], 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = (_sigmoid(o) * np.tanh(c)) @ p["wr"]
    hs.append(h)
  return (h, c), np.stack(hs)


def ref_layer_norm_lstm(p, xs, h, c):
  """Ba et al. (2016): LN over the whole 4H vector of x W_x and of h W_h, and LN(c_t) before the tanh."""
  p = {k: np.asarray(v) for k, v in p._asdict().items()}
  zero = np.zeros(4 * H)
  hs = []
  for x in np.asarray(xs):
    a = _ln(x @ p["wx"], p["gx"], zero) + _ln(h @ p["wh"], p["gh"], zero) + p["b"]
    i, f, g, o = np.split(a, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(_ln(c, p["gc"], p["bc"]))
    hs.append(h)
  return (h, c), np.stack(hs)


def ref_layer_norm_gru(p, xs, h):
  """The r, z, n GRU (reset after the product) with LN over the whole 3H vector of x W_x and of h W_h."""
  p = {k: np.asarray(v) for k, v in p._asdict().items()}
  hs = []
  for x in np.asarray(xs):
    ax = _ln(x @ p["wx"], p["gx"], p["b"])
    ah = _ln(h @ p["wh"], p["gh"], np.concatenate([np.zeros(2 * H), p["bhn"]]))
    r = _sigmoid(ax[:H] + ah[:H])
    z = _sigmoid(ax[H : 2 * H] + ah[H : 2 * H])
    n = np.tanh(ax[2 * H :] + r * ah[2 * H :])
    h = (1.0 - z) * n + z * h
    hs.append(h)
  return h, np.stack(hs)


CELLS = {
  "lstmp": (lambda: lstmp(H, P, dtype=jnp.float64), ref_lstmp),
  "layer_norm_lstm": (lambda: layer_norm_lstm(H, eps=EPS, dtype=jnp.float64), ref_layer_norm_lstm),
  "layer_norm_gru": (lambda: layer_norm_gru(H, eps=EPS, dtype=jnp.float64), ref_layer_norm_gru),
}


def _setup(name, seed=0):
  """The cell, params with every leaf moved off its initial value, inputs and a random non-zero carry."""
  cell = CELLS[name][0]()
  params = cell.init(jax.random.key(seed), I)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  params = jax.tree_util.tree_unflatten(
    tree, [a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
  )
  xs = jax.random.normal(jax.random.key(seed + 2), (T, I), jnp.float64)
  c0 = cell.initial_carry(params)
  ckeys = jax.random.split(jax.random.key(seed + 3), len(jax.tree_util.tree_leaves(c0)))
  c0 = jax.tree_util.tree_unflatten(
    jax.tree_util.tree_structure(c0),
    [0.5 * jax.random.normal(k, c.shape, c.dtype) for c, k in zip(jax.tree_util.tree_leaves(c0), ckeys)],
  )
  return cell, params, xs, c0


@pytest.mark.parametrize("name", sorted(CELLS))
def test_matches_the_papers_equations_in_numpy(x64, name):
  cell, params, xs, c0 = _setup(name)
  ref = CELLS[name][1]
  for projection in ("hoisted", "per_step"):
    carry, hs = jrnn.unroll(cell, params, xs, c0, projection=projection)
    want_carry, want_hs = ref(params, xs, *(c0 if isinstance(c0, tuple) else (c0,)))
    np.testing.assert_allclose(np.asarray(hs), want_hs, rtol=1e-12, atol=1e-13)
    want_carry = want_carry if isinstance(want_carry, tuple) else (want_carry,)
    chex.assert_trees_all_close(tuple(jax.tree_util.tree_leaves(carry)), want_carry, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradients_check_against_finite_differences(x64, name):
  """Reverse-mode gradients w.r.t. params, inputs and initial carry, by central differences (float64)."""
  cell, params, xs, c0 = _setup(name, seed=4)
  u = jax.random.normal(jax.random.key(9), (T, cell.hidden_size), jnp.float64)

  def loss(params, xs, c0):
    carry, hs = jrnn.unroll(cell, params, xs, c0)
    return jnp.sum(hs * u) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree_util.tree_leaves(carry))

  check_grads(loss, (params, xs, c0), order=1, modes=("rev",), eps=1e-6, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradients_match_the_numpy_reference_differentiated_numerically(x64, name):
  """jax.grad of the cell's loss equals central differences of the NumPy reference's loss."""
  cell, params, xs, c0 = _setup(name, seed=5)
  ref = CELLS[name][1]
  u = np.asarray(jax.random.normal(jax.random.key(8), (T, cell.hidden_size), jnp.float64))
  c0t = c0 if isinstance(c0, tuple) else (c0,)
  got = jax.grad(lambda xs: jnp.sum(jrnn.unroll(cell, params, xs, c0)[1] * u))(xs)
  xs_np, eps = np.asarray(xs), 1e-6
  want = np.zeros_like(xs_np)
  for idx in np.ndindex(*xs_np.shape):
    d = np.zeros_like(xs_np)
    d[idx] = eps
    want[idx] = (np.sum(ref(params, xs_np + d, *c0t)[1] * u) - np.sum(ref(params, xs_np - d, *c0t)[1] * u)) / (2 * eps)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-7, atol=1e-8)


def test_layer_norm_with_unit_gain_and_zero_bias_gives_zero_mean_unit_variance_rows(x64):
  a = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (4, 7, 12), jnp.float64)
  y = layer_norm(a, jnp.ones(12, jnp.float64), jnp.zeros(12, jnp.float64), 0.0)
  np.testing.assert_allclose(np.asarray(y.mean(-1)), 0.0, atol=1e-13)
  np.testing.assert_allclose(np.asarray(y.var(-1)), 1.0, rtol=1e-12)
  # with eps the variance is var / (var + eps), slightly below 1
  y = layer_norm(a, jnp.ones(12, jnp.float64), jnp.zeros(12, jnp.float64), 1e-5)
  v = np.asarray(a.var(-1))
  np.testing.assert_allclose(np.asarray(y.var(-1)), v / (v + 1e-5), rtol=1e-12)


def test_the_cells_normalise_over_all_gate_blocks_not_per_gate(x64):
  """A shift of one gate block of x W_x changes the other blocks' pre-activations (the statistics are shared)."""
  cell = layer_norm_lstm(H, dtype=jnp.float64)
  params = cell.init(jax.random.key(0), I)
  x = jnp.ones((I,), jnp.float64)
  kind = cell.kind
  assert isinstance(kind, jrnn.Projected)
  p = kind.project(params, x)
  p2 = kind.project(params._replace(wx=params.wx.at[:, :H].add(1.0)), x)  # moves only the i block of x W_x
  assert np.max(np.abs(np.asarray(p2[H:] - p[H:]))) > 1e-3


def test_lstmp_with_identity_projection_is_the_lstm(x64):
  cell = lstmp(H, H, dtype=jnp.float64)
  _, params, xs, _ = _setup("lstmp")
  params = cell.init(jax.random.key(0), I)._replace(wr=jnp.eye(H, dtype=jnp.float64))
  lstm_params = jrnn.LSTMParams(params.wx, params.wh, params.b)
  c0 = jrnn.LSTMCarry(jnp.full((H,), 0.3), jnp.full((H,), -0.2))
  carry, hs = jrnn.unroll(cell, params, xs, LSTMPCarry(*c0))
  want_carry, want_hs = jrnn.unroll(jrnn.lstm(H, dtype=jnp.float64), lstm_params, xs, c0)
  np.testing.assert_allclose(np.asarray(hs), np.asarray(want_hs), rtol=1e-14, atol=1e-15)
  chex.assert_trees_all_close(tuple(carry), tuple(want_carry), rtol=1e-14, atol=1e-15)


def test_lstmp_sizes_and_stack():
  """hidden_size is P: the outputs, the next stacked layer's input and a head's input have P features."""
  cell = lstmp(H, P)
  assert cell.hidden_size == P
  params = cell.init(jax.random.key(0), I)
  assert (params.wx.shape, params.wh.shape, params.b.shape, params.wr.shape) == (
    (I, 4 * H),
    (P, 4 * H),
    (4 * H,),
    (H, P),
  )
  carry = cell.initial_carry(params)
  assert (carry.h.shape, carry.c.shape) == ((P,), (H,))
  deep = jrnn.stack([lstmp(H, P), lstmp(H + 1, P + 1), jrnn.gru(3)])
  dparams = deep.init(jax.random.key(1), I)
  assert dparams[1].wx.shape == (P, 4 * (H + 1)) and dparams[2].wx.shape == (P + 1, 9)
  xs = jnp.ones((T, I))
  (c1, c2, c3), hs = jrnn.unroll(deep, dparams, xs)
  assert hs.shape == (T, 3) and c2.h.shape == (P + 1,) and c2.c.shape == (H + 1,)
  bi = jrnn.bidirectional(cell)
  assert bi.hidden_size == 2 * P
  _, hb = jrnn.unroll(bi, bi.init(jax.random.key(2), I), xs)
  assert hb.shape == (T, 2 * P)
  with pytest.raises(ValueError, match="fused"):
    jrnn.unroll(cell, params, xs, vjp="fused")
