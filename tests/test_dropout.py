"""jrnn.dropout and jrnn.weight_drop: masks, scaling, statistics, and the recurrence against a NumPy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn


def test_dropout_keeps_or_zeroes_each_entry_scaled_with_the_right_frequency():
  x = jax.random.normal(jax.random.key(0), (400, 250))
  p = 0.3
  d = np.asarray(jrnn.dropout(jax.random.key(1), p, x))
  kept = d != 0
  np.testing.assert_allclose(d[kept], np.asarray(x)[kept] / (1 - p), rtol=1e-6)
  n = x.size  # the kept fraction is Binomial(n, 1 - p) / n: within 5 standard deviations
  assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)


def test_dropout_is_unbiased_over_keys():
  x = jnp.linspace(-1.0, 1.0, 16)
  keys = jax.random.split(jax.random.key(2), 4000)
  mean = jax.vmap(lambda k: jrnn.dropout(k, 0.5, x))(keys).mean(axis=0)
  # each mean is x (2 Bernoulli(1/2)) averaged over 4000 keys: standard deviation |x| / sqrt(4000)
  np.testing.assert_allclose(mean, x, atol=float(5 * jnp.abs(x).max() / np.sqrt(4000)))


def test_broadcast_axes_share_one_mask_along_time():
  xs = jnp.ones((6, 50, 8))
  d = np.asarray(jrnn.dropout(jax.random.key(3), 0.5, xs, broadcast_axes=(-2,)))
  assert (d == d[:, :1]).all()  # the same mask at every step of a sequence
  assert len({tuple(row) for row in d[:, 0]}) > 1  # sequences have their own masks


def test_dropout_identity_cases_and_gradient():
  x = jax.random.normal(jax.random.key(4), (5, 3))
  np.testing.assert_array_equal(jrnn.dropout(jax.random.key(0), 0.0, x), x)
  np.testing.assert_array_equal(jrnn.dropout(jax.random.key(0), 0.9, x, deterministic=True), x)
  mask = np.asarray(jrnn.dropout(jax.random.key(5), 0.4, jnp.ones((5, 3))))  # m / (1 - p)
  grad = jax.grad(lambda x: jnp.sum(jnp.sin(jrnn.dropout(jax.random.key(5), 0.4, x))))(x)
  np.testing.assert_allclose(grad, np.cos(np.asarray(x) * mask) * mask, rtol=1e-6)
  check_grads(lambda x: jrnn.dropout(jax.random.key(5), 0.4, x), (x,), order=2, modes=["fwd", "rev"])


def test_weight_drop_drops_only_the_named_fields_of_every_layer():
  cell = jrnn.stack([jrnn.lstm(16), jrnn.bidirectional(jrnn.gru(16))])
  params = cell.init(jax.random.key(0), 8)
  p = 0.25
  dropped = jrnn.weight_drop(jax.random.key(1), p, params)
  before, after = jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(dropped)
  masks = []
  for (path, w), d in zip(before, after):
    w, d = np.asarray(w), np.asarray(d)
    if path[-1].name == "wh":
      kept = d != 0
      np.testing.assert_allclose(d[kept], w[kept] / (1 - p), rtol=1e-6)
      assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / kept.size)
      masks.append(kept)
    else:
      np.testing.assert_array_equal(d, w)
  assert len(masks) == 3 and not (masks[1] == masks[2]).all()  # lstm, gru forward, gru backward: own masks


def test_unit_weight_drop_is_variational_dropout_of_the_state():
  """Elman with rows of W_h dropped == a NumPy loop that drops units of h_{t-1}, the same mask every step."""
  cell = jrnn.elman(6)
  params = cell.init(jax.random.key(0), 3)
  xs = np.asarray(jax.random.normal(jax.random.key(1), (9, 3)))
  dropped = jrnn.weight_drop(jax.random.key(2), 0.5, params, mode="unit")
  unit_mask = (np.asarray(dropped.wh) != 0).any(axis=1)
  assert 0 < unit_mask.sum() < 6
  _, hs = jrnn.unroll(cell, dropped, xs)
  wx, wh, b = (np.asarray(a, np.float64) for a in params)
  h = np.zeros(6)
  for t in range(9):
    h = np.tanh(xs[t] @ wx + (h * unit_mask / 0.5) @ wh + b)
    np.testing.assert_allclose(hs[t], h, rtol=1e-5, atol=1e-6)


def test_weight_drop_composes_with_training_and_the_fused_vjp():
  cell = jrnn.gru(5)
  params = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (2, 7, 3))

  def loss(params, key, vjp):
    return jnp.sum(jrnn.unroll_batch(cell, jrnn.weight_drop(key, 0.3, params), xs, vjp=vjp)[1] ** 2)

  g1 = jax.grad(loss)(params, jax.random.key(3), "autodiff")
  g2 = jax.grad(loss)(params, jax.random.key(3), "fused")
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2)
  dropped = np.asarray(jrnn.weight_drop(jax.random.key(3), 0.3, params).wh) == 0
  assert (np.asarray(g1.wh)[dropped] == 0).all()  # a dropped connection gets no gradient


@pytest.mark.parametrize(
  "call, error, match",
  [
    (
      lambda: jrnn.dropout(jax.random.key(0), 1.0, jnp.ones(3)),
      ValueError,
      r"rate must be a number in \[0, 1\), got 1.0",
    ),
    (lambda: jrnn.dropout(jax.random.key(0), 0.5, jnp.ones(3, jnp.int32)), TypeError, "x must be floating point"),
    (lambda: jrnn.dropout(jax.random.key(0), 0.5, jnp.ones((2, 3)), broadcast_axes=(2,)), ValueError, "rank 2"),
    (lambda: jrnn.dropout(0, 0.5, jnp.ones(3)), TypeError, "key must be a JAX random key"),
    (
      lambda: jrnn.weight_drop(jax.random.key(0), 0.5, jrnn.lstm(3).init(jax.random.key(0), 2), fields=("w_hh",)),
      ValueError,
      r"fields \['w_hh'\] are not fields of params; its fields are \['b', 'wh', 'wx'\]",
    ),
    (
      lambda: jrnn.weight_drop(jax.random.key(0), 0.5, jrnn.lstm(3).init(jax.random.key(0), 2), mode="row"),
      ValueError,
      "mode must be one of",
    ),
  ],
)
def test_bad_arguments_are_clear_errors(call, error, match):
  with pytest.raises(error, match=match):
    call()


@pytest.mark.standard_promotion  # optax.adam
def test_fit_threads_a_fresh_key_per_step_and_resumes_bit_identical():
  """make_step(has_rng=True) + fit(key=): step i gets fold_in(key, i); a resumed run equals an uninterrupted one."""
  import optax

  cell, head = jrnn.lstm(8), jrnn.linear(2)
  params = (cell.init(jax.random.key(0), 3), head.init(jax.random.key(1), 8))
  xs = jax.random.normal(jax.random.key(2), (4, 6, 3))
  ys = jax.random.normal(jax.random.key(3), (4, 6, 2))
  root = jax.random.key(4)

  def loss_fn(params, batch, key):
    xs, ys = batch
    k_in, k_w, k_out = jax.random.split(key, 3)
    cell_params = jrnn.weight_drop(k_w, 0.3, params[0])
    _, hs = jrnn.unroll_batch(cell, cell_params, jrnn.dropout(k_in, 0.2, xs, broadcast_axes=(1,)))
    return jnp.mean((head.apply(params[1], jrnn.dropout(k_out, 0.2, hs)) - ys) ** 2)

  opt = optax.adam(1e-2)
  step = jax.jit(jrnn.train.make_step(loss_fn, opt, has_rng=True))

  def run(start, stop, params, opt_state):
    r = jrnn.train.fit(
      step, params, opt_state, lambda i: (xs, ys), steps=stop, start_step=start, key=root, progress=False, verbose=False
    )
    return r.params, r.opt_state, r.history["loss"]

  whole_params, _, whole_loss = run(0, 6, params, opt.init(params))
  half_params, half_state, first_loss = run(0, 3, params, opt.init(params))
  resumed_params, _, second_loss = run(3, 6, half_params, half_state)
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed_params, whole_params)
  np.testing.assert_array_equal(np.concatenate([first_loss, second_loss]), whole_loss)
  # the reference: a hand loop that passes fold_in(root, i) to step i
  p, s, losses = params, opt.init(params), []
  for i in range(6):
    p, s, metrics = step(p, s, (xs, ys), jax.random.fold_in(root, i))
    losses.append(float(metrics.loss))
  jax.tree_util.tree_map(np.testing.assert_array_equal, p, whole_params)
  np.testing.assert_array_equal(np.asarray(losses), whole_loss)
  # the keys differ per step: the same batch gives a different dropped loss at steps 0 and 1 of one state
  k0, k1 = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
  assert float(loss_fn(params, (xs, ys), k0)) != float(loss_fn(params, (xs, ys), k1))
  # a key-taking step without a key, a keyless step with one, and a key that is not one: clear errors
  with pytest.raises(TypeError, match="has_rng=True"):
    step(params, opt.init(params), (xs, ys))
  plain = jrnn.train.make_step(lambda p, b: loss_fn(p, b, k0), opt)
  with pytest.raises(TypeError, match="has_rng=False, got 4 arguments"):
    plain(params, opt.init(params), (xs, ys), k0)
  with pytest.raises(TypeError, match="key must be a PRNG key"):
    jrnn.train.fit(step, params, opt.init(params), lambda i: (xs, ys), steps=1, key=4, progress=False)
