"""jrnn.zoneout: the recurrence against NumPy loops with the same masks, the masks' statistics, and composition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn
from jrnn import _zoneout
from tests import reference as ref

RATE_C, RATE_H = 0.4, 0.25

# name -> (factory, NumPy step on (params, carry, x), the inner carry as a tuple of NumPy arrays and back)
CELLS = {
  "elman": (jrnn.elman, ref.elman_step),
  "gru": (jrnn.gru, ref.gru_step),
  "lstm": (jrnn.lstm, ref.lstm_step),
}


def _np(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _reference(name, params, carry, xs, masks, rates, *, deterministic=False, mask=None, reverse=False):
  """A NumPy float64 loop of zoneout over a cell; the k-th real step (in scan order) uses ``masks[k]``.

  ``masks`` is a tuple of ``[K, H]`` boolean arrays, one per carry leaf in the carry's order (LSTM: h, c).
  Returns the final inner carry (as a tuple) and the outputs.
  """
  step = CELLS[name][1]
  p = _np(params)
  state = tuple(np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(carry))
  T = xs.shape[0]
  outs = [np.zeros(0)] * T
  k = 0
  for t in range(T - 1, -1, -1) if reverse else range(T):
    new, h = step(p, state if name == "lstm" else state[0], np.asarray(xs[t], np.float64))
    new = tuple(new) if name == "lstm" else (new,)
    if mask is not None and not mask[t]:
      outs[t] = np.zeros_like(h)
      continue
    if deterministic:
      state = tuple(r * o + (1 - r) * n for o, n, r in zip(state, new, rates))
    else:
      state = tuple(np.where(m[k], o, n) for o, n, m in zip(state, new, masks))
    outs[t] = state[0]  # h: the carry's first leaf (the whole carry of elman and gru)
    k += 1
  return state, np.stack(outs)


def _setup(name, hidden=5, inputs=3, T=9, seed=0, dtype=jnp.float32):
  factory = CELLS[name][0]
  cell = jrnn.zoneout(factory(hidden, dtype=dtype), RATE_C, RATE_H)
  params = cell.init(jax.random.key(seed), inputs)
  xs = jax.random.normal(jax.random.key(seed + 1), (T, inputs), dtype)
  carry = jrnn.zoneout_carry(cell, params, jax.random.key(seed + 2))
  return cell, params, xs, carry


def _rates(name):
  return (RATE_H, RATE_C) if name == "lstm" else (RATE_H,)  # LSTMCarry is (h, c); elman and gru carry h


@pytest.mark.parametrize("name, jit", [("elman", False), ("gru", False), ("lstm", True)])
def test_training_run_matches_a_numpy_loop_with_the_same_masks(name, jit, x64):
  cell, params, xs, carry = _setup(name, dtype=jnp.float64)
  run = jax.jit(jrnn.unroll, static_argnums=0) if jit else jrnn.unroll
  final, hs = run(cell, params, xs, carry)
  key_after, masks = jrnn.zoneout_masks(carry, xs.shape[0], RATE_C, RATE_H)
  masks = tuple(np.asarray(m) for m in jax.tree_util.tree_leaves(masks))
  assert all(0 < m.mean() < 1 for m in masks)  # both outcomes occur: the test can tell them apart
  state, expected = _reference(name, params, carry.inner, xs, masks, _rates(name))
  np.testing.assert_allclose(hs, expected, rtol=1e-12, atol=1e-12)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12),
    tuple(jax.tree_util.tree_leaves(final.inner)),
    state,
  )
  np.testing.assert_array_equal(final.key, key_after)  # the carry's key is the one zoneout_masks reaches


@pytest.mark.parametrize("name", ["lstm"])  # both rates; elman and gru's one-array carry: the training test
def test_deterministic_is_the_expectation_and_needs_no_key(name, x64):
  factory = CELLS[name][0]
  cell = jrnn.zoneout(factory(5, dtype=jnp.float64), RATE_C, RATE_H, deterministic=True)
  params = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (9, 3), jnp.float64)
  final, hs = jrnn.unroll(cell, params, xs)  # the initial carry, key unset: not read
  zero = jax.tree_util.tree_map(jnp.zeros_like, final.inner)
  state, expected = _reference(name, params, zero, xs, (), _rates(name), deterministic=True)
  np.testing.assert_allclose(hs, expected, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(jax.tree_util.tree_leaves(final.inner)[0], state[0], rtol=1e-12, atol=1e-12)
  assert np.isnan(final.key).all()  # passed through unchanged


@pytest.mark.parametrize("name", ["lru", "lstmp", "min_gru"])  # elman, gru, lstm: above
def test_cells_of_other_kinds_against_a_loop_over_their_own_step(name):
  """Projected and linear cells (the LRU's carry is complex): the inner step mixed with the same masks."""
  inner = jrnn.CELLS[name](4)
  cell = jrnn.zoneout(inner, RATE_C, RATE_H)
  params = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (6, 3))
  carry = jrnn.zoneout_carry(cell, params, jax.random.key(2))
  final, hs = jrnn.unroll(cell, params, xs, carry)
  _, masks = jrnn.zoneout_masks(carry, 6, RATE_C, RATE_H)

  @jax.jit
  def reference_step(c, x, d):
    new, _ = inner.step(params, c, x)
    c = jax.tree_util.tree_map(jnp.where, d, c, new)
    return c, inner.kind.readout(params, c, inner.kind.project(params, x))

  c, outs = carry.inner, []
  for t in range(6):
    c, h = reference_step(c, xs[t], jax.tree_util.tree_map(lambda m, t=t: m[t], masks))
    outs.append(h)
  # float32, summed in another order (the layer norms divide by small spreads): 1e-5
  np.testing.assert_allclose(hs, jnp.stack(outs), rtol=1e-5, atol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), final.inner, c)
  expected_kind = jrnn.AffineRecurrence if isinstance(inner.kind, jrnn.AffineRecurrence) else jrnn.Projected
  assert isinstance(cell.kind, expected_kind)


def test_rate_zero_is_the_wrapped_cell_exactly():
  cell, params, xs, _ = _setup("lstm")
  bare = jrnn.lstm(5)
  expected = jrnn.unroll(bare, params, xs)
  for deterministic in (False, True):
    z = jrnn.zoneout(bare, 0.0, deterministic=deterministic)
    carry = jrnn.zoneout_carry(z, params, jax.random.key(3))
    final, hs = jrnn.unroll(z, params, xs, carry)
    np.testing.assert_array_equal(hs, expected[1])
    jax.tree_util.tree_map(np.testing.assert_array_equal, final.inner, expected[0])


def test_the_measured_keep_probability_is_the_rate():
  """In a real run a zoned-out unit equals its previous value exactly; count them over a large draw."""
  H, T = 256, 20
  cell = jrnn.zoneout(jrnn.lstm(H), 0.3, 0.1)
  params = cell.init(jax.random.key(0), 4)
  xs = jax.random.normal(jax.random.key(1), (T, 4))
  carry = jrnn.zoneout_carry(cell, params, jax.random.key(2))
  step = jax.jit(cell.step)
  kept = {"h": [], "c": []}
  for t in range(T):
    new, _ = step(params, carry, xs[t])
    for field in kept:
      kept[field].append(np.asarray(getattr(new.inner, field) == getattr(carry.inner, field)))
    carry = new
  for field, rate in (("c", 0.3), ("h", 0.1)):
    k = np.stack(kept[field])[1:]  # from step 2 on: at step 1 the zero state and the update can coincide
    n = k.size  # Binomial(n, r) / n: within 5 standard deviations
    assert abs(k.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n), (field, k.mean())
  _, masks = jrnn.zoneout_masks(jrnn.zoneout_carry(cell, params, jax.random.key(5)), 400, 0.3, 0.1)
  for field, rate in (("c", 0.3), ("h", 0.1)):
    m = np.asarray(getattr(masks, field))
    assert abs(m.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / m.size), (field, m.mean())


def test_masks_are_fresh_per_step_per_sequence_and_per_layer():
  H, T, B = 64, 30, 16
  cell = jrnn.zoneout(jrnn.gru(H), 0.5)
  params = cell.init(jax.random.key(0), 2)
  _, masks = jrnn.zoneout_masks(jrnn.zoneout_carry(cell, params, jax.random.key(1)), T, 0.5)
  masks = np.asarray(masks)
  # two independent Bernoulli(1/2) masks of 64 units agree on all of them with probability 2^-64
  assert len({row.tobytes() for row in masks}) == T
  # per sequence, under vmap: each row's key gives its own masks
  carry = jrnn.zoneout_carry(cell, params, jax.random.key(2), batch=B)
  rows = jax.vmap(lambda c: jrnn.zoneout_masks(c, T, 0.5)[1])(carry)
  assert len({np.asarray(r).tobytes() for r in rows}) == B
  keys = jax.random.split(jax.random.key(3), B)
  per_key = jax.vmap(lambda k: jrnn.zoneout_carry(cell, params, k).key)(keys)
  assert len({np.asarray(k).tobytes() for k in per_key}) == B
  # every zoneout layer of a stack has its own key
  deep = jrnn.stack([cell, cell, jrnn.bidirectional(cell)])
  leaves = jax.tree_util.tree_leaves(
    jrnn.zoneout_carry(deep, deep.init(jax.random.key(4), 2), jax.random.key(5)), is_leaf=_zoneout._is_zoneout
  )
  assert len({np.asarray(z.key).tobytes() for z in leaves}) == 4


def test_a_batch_run_uses_each_rows_own_masks():
  cell, params, xs, _ = _setup("lstm")
  xs = jnp.stack([xs, xs, xs])  # the same inputs: only the masks differ between rows
  carry = jrnn.zoneout_carry(cell, params, jax.random.key(7), batch=3)
  final, hs = jrnn.unroll_batch(cell, params, xs, carry)
  for b in range(3):
    row = jax.tree_util.tree_map(lambda a, b=b: a[b], carry)
    _, masks = jrnn.zoneout_masks(row, xs.shape[1], RATE_C, RATE_H)
    masks = tuple(np.asarray(m) for m in jax.tree_util.tree_leaves(masks))
    _, expected = _reference("lstm", params, row.inner, xs[b], masks, _rates("lstm"))
    np.testing.assert_allclose(hs[b], expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(hs[0], hs[1]) and not np.allclose(hs[1], hs[2])
  # a user's jax.vmap of unroll over the rows is the same run
  _, vmapped = jax.vmap(lambda x, c: jrnn.unroll(cell, params, x, c))(xs, carry)
  np.testing.assert_allclose(vmapped, hs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reverse", [False, True])
def test_masked_steps_keep_the_whole_carry_and_reverse_draws_in_scan_order(reverse, x64):
  cell, params, xs, carry = _setup("lstm", T=10, dtype=jnp.float64)
  mask = np.array([True, False, True, True, False, False, True, True, True, False])
  final, hs = jrnn.unroll(cell, params, xs, carry, mask=jnp.asarray(mask), reverse=reverse)
  key_after, masks = jrnn.zoneout_masks(carry, int(mask.sum()), RATE_C, RATE_H)
  masks = tuple(np.asarray(m) for m in jax.tree_util.tree_leaves(masks))
  state, expected = _reference("lstm", params, carry.inner, xs, masks, _rates("lstm"), mask=mask, reverse=reverse)
  np.testing.assert_allclose(hs, expected, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(final.inner.c, state[1], rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(final.key, key_after)  # the key advanced at the real steps only


def test_options_give_the_same_run_and_gradients():
  cell, params, xs, carry = _setup("lstm")

  def loss(params, xs, **kw):
    final, hs = jrnn.unroll(cell, params, xs, carry, **kw)
    return jnp.sum(hs**2) + jnp.sum(final.inner.c)

  expected, grads = jax.value_and_grad(loss, (0, 1))(params, xs)
  for options in ({"remat": 3}, {"projection": "hoisted"}, {"vjp": "fused"}):
    got, got_grads = jax.jit(jax.value_and_grad(lambda p, x, o=options: loss(p, x, **o), (0, 1)))(params, xs)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got_grads, grads)


def test_gradients_match_finite_differences_with_fixed_masks(x64):
  cell, params, xs, carry = _setup("lstm", hidden=3, inputs=2, T=5, dtype=jnp.float64)
  mask = jnp.asarray([True, True, False, True, True])

  def loss(params, xs, inner):
    final, hs = jrnn.unroll(cell, params, xs, carry._replace(inner=inner), mask=mask)
    return jnp.sum(jnp.sin(hs)) + jnp.sum(jax.tree_util.tree_leaves(final.inner)[-1] ** 2)

  inner = jax.tree_util.tree_map(lambda a: a + 0.1, carry.inner)
  check_grads(jax.jit(loss), (params, xs, inner), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
  # and the key gets no gradient: a zero cotangent, not a NaN
  g = jax.grad(lambda c: jnp.sum(jrnn.unroll(cell, params, xs, c)[1]))(carry)
  np.testing.assert_array_equal(g.key, np.zeros(4))


def test_stack_runs_each_layer_with_its_own_key_and_equals_stepping():
  cells = [jrnn.zoneout(jrnn.lstm(4), RATE_C, RATE_H), jrnn.zoneout(jrnn.gru(3), RATE_H)]
  deep = jrnn.stack(cells)
  params = deep.init(jax.random.key(0), 2)
  xs = jax.random.normal(jax.random.key(1), (8, 2))
  carry = jrnn.zoneout_carry(deep, params, jax.random.key(2))
  final, hs = jrnn.unroll(deep, params, xs, carry)
  first, h1 = jrnn.unroll(cells[0], params[0], xs, carry[0])  # layer by layer, the same carries
  second, h2 = jrnn.unroll(cells[1], params[1], h1, carry[1])
  np.testing.assert_allclose(hs, h2, rtol=1e-6)
  jax.tree_util.tree_map(np.testing.assert_array_equal, final, (first, second))
  c, outs, step = carry, [], jax.jit(deep.step)
  for t in range(8):  # the stack's step, one step at a time (generation)
    c, h = step(params, c, xs[t])
    outs.append(h)
  np.testing.assert_allclose(jnp.stack(outs), hs, rtol=1e-5, atol=1e-6)


def test_bidirectional_runs_the_backward_direction_with_its_own_masks():
  inner = jrnn.zoneout(jrnn.gru(4), 0.3)
  layer = jrnn.bidirectional(inner)
  params = layer.init(jax.random.key(0), 2)
  xs = jax.random.normal(jax.random.key(1), (7, 2))
  mask = jnp.asarray([True] * 5 + [False] * 2)
  carry = jrnn.zoneout_carry(layer, params, jax.random.key(2))
  final, hs = jrnn.unroll(layer, params, xs, carry, mask=mask)
  cf, hf = jrnn.unroll(inner, params.forward, xs, carry.forward, mask=mask)
  cb, hb = jrnn.unroll(inner, params.backward, xs, carry.backward, mask=mask, reverse=True)
  np.testing.assert_array_equal(hs, jnp.concatenate([hf, hb], axis=-1))
  jax.tree_util.tree_map(np.testing.assert_array_equal, final, jrnn.BidirectionalCarry(cf, cb))
  assert not (np.asarray(carry.forward.key) == np.asarray(carry.backward.key)).all()


def test_a_reset_restores_the_key_so_each_segment_repeats_the_first_segments_masks():
  """As documented: a reset restores the whole starting carry, key included."""
  cell, params, xs, carry = _setup("gru", T=8)
  reset = jnp.asarray([False, False, False, True, False, False, False, False])
  _, hs = jrnn.unroll(cell, params, xs, carry, reset=reset)
  _, first = jrnn.unroll(cell, params, xs[:3], carry)
  _, second = jrnn.unroll(cell, params, xs[3:], carry)
  np.testing.assert_allclose(hs, jnp.concatenate([first, second]), rtol=1e-6)


def test_the_initial_carry_has_no_key_and_a_training_run_from_it_is_nan():
  cell, params, xs, _ = _setup("lstm")
  _, hs = jrnn.unroll(cell, params, xs)
  assert np.isnan(hs).all()


def test_the_key_travels_bit_exactly_through_float32():
  data = jnp.asarray([[0, 0], [0xFFFFFFFF, 0xFFFFFFFF], [0x7F800000, 0xFFC00001], [123456789, 0x80000000]], jnp.uint32)
  bits = _zoneout.key_bits(data)
  assert bits.dtype == jnp.float32 and np.isfinite(bits).all()
  back = jax.vmap(_zoneout._bits_key)(bits)
  np.testing.assert_array_equal(jax.random.key_data(back), data)


@pytest.mark.standard_promotion  # optax.adam
def test_training_with_a_key_per_step_resumes_bit_identical():
  """A zoneout LSTM trained with jrnn.train.fit, a key per step from fold_in: a resumed run equals a whole one."""
  import optax

  cell, head = jrnn.zoneout(jrnn.lstm(6), 0.5, 0.05), jrnn.linear(2)
  params = (cell.init(jax.random.key(0), 3), head.init(jax.random.key(1), 6))
  xs = jax.random.normal(jax.random.key(2), (4, 5, 3))
  ys = jax.random.normal(jax.random.key(3), (4, 5, 2))
  root = jax.random.key(4)

  def loss_fn(params, batch):
    xs, ys, key = batch
    carry = jrnn.zoneout_carry(cell, params[0], key, batch=xs.shape[0])
    _, hs = jrnn.unroll_batch(cell, params[0], xs, carry)
    return jnp.mean((head.apply(params[1], hs) - ys) ** 2)

  opt = optax.adam(1e-2)
  step = jax.jit(jrnn.train.make_step(loss_fn, opt))

  def batch_fn(i):
    return xs, ys, jax.random.fold_in(root, i)

  def run(start, stop, params, opt_state):
    r = jrnn.train.fit(step, params, opt_state, batch_fn, steps=stop, start_step=start, progress=False, verbose=False)
    return r.params, r.opt_state, r.history["loss"]

  whole_params, _, whole_loss = run(0, 6, params, opt.init(params))
  half_params, half_state, first_loss = run(0, 3, params, opt.init(params))
  resumed_params, _, second_loss = run(3, 6, half_params, half_state)
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed_params, whole_params)
  np.testing.assert_array_equal(np.concatenate([first_loss, second_loss]), whole_loss)
  assert np.isfinite(whole_loss).all() and whole_loss[-1] < whole_loss[0]
  # a fresh key per step: the same params and batch give a different loss at steps 0 and 1
  assert float(loss_fn(params, batch_fn(0))) != float(loss_fn(params, batch_fn(1)))


@pytest.mark.parametrize(
  "call, error, match",
  [
    (lambda: jrnn.zoneout(jrnn.lstm(3), 1.0), ValueError, r"rate_c must be a number in \[0, 1\), got 1.0"),
    (lambda: jrnn.zoneout(jrnn.lstm(3), 0.1, -0.1), ValueError, r"rate_h must be a number in \[0, 1\), got -0.1"),
    (lambda: jrnn.zoneout("lstm", 0.1), TypeError, "cell must be a jrnn.Cell"),
    (lambda: jrnn.zoneout(jrnn.stack([jrnn.gru(3)]), 0.1), TypeError, "Wrap each layer instead"),
    (
      lambda: jrnn.zoneout_carry(jrnn.gru(3), jrnn.gru(3).init(jax.random.key(0), 2), jax.random.key(0)),
      ValueError,
      "holds no jrnn.ZoneoutCarry",
    ),
    (
      lambda: jrnn.zoneout_carry(jrnn.zoneout(jrnn.gru(3), 0.1), jrnn.gru(3).init(jax.random.key(0), 2), 0),
      TypeError,
      "key must be a JAX random key",
    ),
    (
      lambda: jrnn.zoneout_carry(
        jrnn.zoneout(jrnn.gru(3), 0.1), jrnn.gru(3).init(jax.random.key(0), 2), jax.random.key(0), batch=0
      ),
      ValueError,
      "batch must be None or a positive int, got 0",
    ),
    (lambda: jrnn.zoneout_masks(jnp.zeros(4), 3, 0.1), TypeError, "carry must be a jrnn.ZoneoutCarry"),
  ],
)
def test_bad_arguments_are_clear_errors(call, error, match):
  with pytest.raises(error, match=match):
    call()
