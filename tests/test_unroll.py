"""jrnn.unroll against Python loops: reverse, masks with holes, vmap, jit, retracing, grads."""

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn
from tests import reference as ref

CELLS = {
  "elman": (lambda: jrnn.elman(5, dtype=jnp.float64), ref.elman_step),
  "elman_relu": (
    lambda: jrnn.elman(5, activation="relu", dtype=jnp.float64),
    functools.partial(ref.elman_step, activation="relu"),
  ),
  "gru": (lambda: jrnn.gru(5, dtype=jnp.float64), ref.gru_step),
  "lstm": (lambda: jrnn.lstm(5, dtype=jnp.float64), ref.lstm_step),
}


def _setup(name, T=9, I=3, seed=0):
  make, step = CELLS[name]
  cell = make()
  params = cell.init(jax.random.key(seed), I)
  # Random biases too, so a bias applied at the wrong step would show.
  params = params._replace(b=0.3 * jax.random.normal(jax.random.key(seed + 1), params.b.shape, params.b.dtype))
  xs = jax.random.normal(jax.random.key(seed + 2), (T, I), jnp.float64)
  return cell, params, xs, functools.partial(step, params)


def _ref_carry(name, cell, params):
  c = cell.initial_carry(params)
  return (np.asarray(c.h), np.asarray(c.c)) if name == "lstm" else np.asarray(c)


def _assert_carry(name, got, want):
  if name == "lstm":
    np.testing.assert_allclose(got.h, want[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.c, want[1], rtol=1e-12, atol=1e-12)
  else:
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_unroll_equals_python_loop(x64, name, reverse):
  cell, params, xs, step = _setup(name)
  carry, hs = jrnn.unroll(cell, params, xs, reverse=reverse)
  want_carry, want_hs = ref.run(step, _ref_carry(name, cell, params), np.asarray(xs), reverse=reverse)
  np.testing.assert_allclose(hs, want_hs, rtol=1e-12, atol=1e-12)
  _assert_carry(name, carry, want_carry)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_unroll_equals_loop_over_cell_step(x64, name):
  """The hoisted projection + scan equals calling the public cell.step in a loop."""
  cell, params, xs, _ = _setup(name)
  carry = cell.initial_carry(params)
  outs = []
  for x in xs:
    carry, h = cell.step(params, carry, x)
    outs.append(h)
  got_carry, hs = jrnn.unroll(cell, params, xs)
  chex.assert_trees_all_close(got_carry, carry, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(hs, jnp.stack(outs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_reverse_equals_flipping(x64, name):
  cell, params, xs, _ = _setup(name)
  carry_r, hs_r = jrnn.unroll(cell, params, xs, reverse=True)
  carry_f, hs_f = jrnn.unroll(cell, params, xs[::-1])
  np.testing.assert_allclose(hs_r, hs_f[::-1], rtol=1e-12, atol=1e-12)
  chex.assert_trees_all_close(carry_r, carry_f, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_given_initial_carry(x64, name):
  cell, params, xs, step = _setup(name)
  c0 = jax.tree.map(lambda a: 0.1 * jnp.arange(a.size, dtype=a.dtype), cell.initial_carry(params))
  carry, hs = jrnn.unroll(cell, params, xs, c0)
  ref_c0 = (np.asarray(c0.h), np.asarray(c0.c)) if name == "lstm" else np.asarray(c0)
  want_carry, want_hs = ref.run(step, ref_c0, np.asarray(xs))
  np.testing.assert_allclose(hs, want_hs, rtol=1e-12, atol=1e-12)
  _assert_carry(name, carry, want_carry)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_mask_with_holes_equals_compressed_sequence(x64, name, reverse):
  """Masked steps are skipped: the result equals running only the valid steps."""
  cell, params, xs, step = _setup(name, T=10)
  mask = np.array([1, 0, 1, 1, 0, 0, 1, 1, 0, 0], bool)  # holes and right padding
  carry, hs = jrnn.unroll(cell, params, xs, mask=jnp.asarray(mask), reverse=reverse)
  carry_c, hs_c = jrnn.unroll(cell, params, xs[mask], reverse=reverse)
  np.testing.assert_allclose(hs[mask], hs_c, rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(hs[~mask], 0.0)
  chex.assert_trees_all_close(carry, carry_c, rtol=1e-12, atol=1e-12)
  want_carry, want_hs = ref.run(step, _ref_carry(name, cell, params), np.asarray(xs), mask, reverse)
  np.testing.assert_allclose(hs, want_hs, rtol=1e-12, atol=1e-12)


def test_right_padded_reverse_starts_at_last_real_element(x64):
  cell, params, xs, _ = _setup("gru", T=8)
  mask = jnp.arange(8) < 5
  _, hs = jrnn.unroll(cell, params, xs, mask=mask, reverse=True)
  # The first step of the reverse scan sees x_4 from the zero carry.
  _, h4 = cell.step(params, cell.initial_carry(params), xs[4])
  np.testing.assert_allclose(hs[4], h4, rtol=1e-12)


def test_all_false_mask_keeps_initial_carry(x64):
  cell, params, xs, _ = _setup("lstm")
  c0 = jrnn.LSTMCarry(jnp.full(5, 0.5), jnp.full(5, -0.5))
  carry, hs = jrnn.unroll(cell, params, xs, c0, mask=jnp.zeros(xs.shape[0], bool))
  chex.assert_trees_all_equal(carry, c0)
  np.testing.assert_array_equal(hs, 0.0)


@pytest.mark.parametrize("name", ["elman", "lstm"])
def test_vmap_equals_loop_over_batch(name):
  cell = {"elman": jrnn.elman, "lstm": jrnn.lstm}[name](6)
  params = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (4, 7, 3))
  masks = jnp.arange(7)[None, :] < jnp.array([7, 3, 5, 1])[:, None]
  carry_b, hs_b = jax.vmap(lambda x, m: jrnn.unroll(cell, params, x, mask=m))(xs, masks)
  single = jax.jit(lambda x, m: jrnn.unroll(cell, params, x, mask=m))
  for i in range(4):
    carry_i, hs_i = single(xs[i], masks[i])
    np.testing.assert_allclose(hs_b[i], hs_i, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda a, i=i: a[i], carry_b), carry_i, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("unroll", [1, 3, 16])
def test_jit_equals_eager_and_unroll_factor_is_exact(unroll):
  cell = jrnn.gru(8)
  params = cell.init(jax.random.key(0), 4)
  xs = jax.random.normal(jax.random.key(1), (11, 4))
  mask = jnp.arange(11) % 3 != 1
  eager = jrnn.unroll(cell, params, xs, mask=mask)
  jitted = jax.jit(lambda p, x, m: jrnn.unroll(cell, p, x, mask=m, unroll=unroll))(params, xs, mask)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-6, atol=1e-6)


def test_no_retrace_for_same_shapes():
  cell = jrnn.lstm(8)
  params = cell.init(jax.random.key(0), 4)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(params, xs, mask):
    return jrnn.unroll(cell, params, xs, mask=mask)[1].sum()

  chex.clear_trace_counter()
  values = [
    float(run(params, jax.random.normal(jax.random.key(i), (12, 4)), jnp.arange(12) < 12 - i)) for i in range(4)
  ]
  assert len(set(values)) == 4  # different inputs, one trace


@pytest.mark.parametrize("name", sorted(CELLS))
def test_grads_match_finite_differences(x64, name):
  cell, params, xs, _ = _setup(name, T=6)
  mask = jnp.array([1, 1, 0, 1, 1, 0], bool)

  def loss(params, xs):
    _, hs = jrnn.unroll(cell, params, xs, mask=mask)
    return jnp.sum(jnp.sin(hs))

  check_grads(jax.jit(loss), (params, xs), order=2, modes=["rev"], atol=1e-6, rtol=1e-6)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(
  T=st.integers(1, 12),
  I=st.integers(1, 5),
  H=st.integers(1, 6),
  cell_name=st.sampled_from(["elman", "gru", "lstm"]),
  reverse=st.booleans(),
  mask_bits=st.lists(st.booleans(), min_size=12, max_size=12),
  seed=st.integers(0, 2**16),
)
def test_hypothesis_shapes_and_masks_match_loop(T, I, H, cell_name, reverse, mask_bits, seed):
  jax.config.update("jax_enable_x64", True)
  try:
    cell = {"elman": jrnn.elman, "gru": jrnn.gru, "lstm": jrnn.lstm}[cell_name](H, dtype=jnp.float64)
    step = {"elman": ref.elman_step, "gru": ref.gru_step, "lstm": ref.lstm_step}[cell_name]
    params = cell.init(jax.random.key(seed), I)
    xs = np.random.default_rng(seed).normal(size=(T, I))
    mask = np.asarray(mask_bits[:T], bool)
    carry, hs = jrnn.unroll(cell, params, jnp.asarray(xs), mask=jnp.asarray(mask), reverse=reverse)
    c0 = cell.initial_carry(params)
    c0 = (np.asarray(c0.h), np.asarray(c0.c)) if cell_name == "lstm" else np.asarray(c0)
    want_carry, want_hs = ref.run(functools.partial(step, params), c0, xs, mask, reverse)
    chex.assert_shape(hs, (T, H))
    np.testing.assert_allclose(hs, want_hs, rtol=1e-10, atol=1e-12)
    got = (carry.h, carry.c) if cell_name == "lstm" else (carry,)
    want = want_carry if cell_name == "lstm" else (want_carry,)
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
  finally:
    jax.config.update("jax_enable_x64", False)


def _dots(cell, projection):
  """Shapes of the products outside and inside the scan of ``jrnn.unroll``'s jaxpr."""
  params = cell.init(jax.random.key(0), 8)
  xs = jnp.ones((32, 8))
  jaxpr = jax.make_jaxpr(lambda p, x: jrnn.unroll(cell, p, x, projection=projection))(params, xs)
  outer = [tuple(e.outvars[0].aval.shape) for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
  scan = next(e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan")
  inner = [tuple(e.outvars[0].aval.shape) for e in scan.params["jaxpr"].jaxpr.eqns if e.primitive.name == "dot_general"]
  return outer, inner


def test_input_projection_is_hoisted_out_of_the_scan():
  """projection="hoisted": the [T, I] @ [I, G*H] product appears once outside the loop, not per step."""
  outer, inner = _dots(jrnn.lstm(16), "hoisted")
  assert outer == [(32, 64)]
  assert inner == [(64,)]  # only h @ Wh inside the recurrence


def test_per_step_projection_runs_inside_the_scan():
  """projection="per_step": no product outside; x_t @ Wx and h @ Wh inside; same values as hoisted."""
  cell = jrnn.lstm(16)
  outer, inner = _dots(cell, "per_step")
  assert outer == [] and sorted(inner) == [(64,), (64,)]
  params = cell.init(jax.random.key(0), 8)
  xs = jax.random.normal(jax.random.key(1), (32, 8))
  a = jrnn.unroll(cell, params, xs, projection="hoisted")
  b = jrnn.unroll(cell, params, xs, projection="per_step")
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_auto_projection_follows_the_backend_table(monkeypatch):
  """projection="auto" is AUTO_PROJECTION[backend]: per-step on CPU (measured), hoisted elsewhere."""
  from jrnn import _options

  assert _options.projection(jrnn.Options()) == _options.AUTO_PROJECTION[jax.default_backend()]
  monkeypatch.setattr(_options, "AUTO_PROJECTION", {})
  assert _options.projection(jrnn.Options()) == "hoisted"
  assert _dots(jrnn.lstm(16), "auto")[0] == [(32, 64)]
