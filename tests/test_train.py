"""Tests of jrnn.train: make_step against hand-written updates, fit's loop, TBPTT."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn import train
from jrnn.tasks import DOGS_VOCAB
from jrnn.tasks import dogs


def _dogs_setup(key, hidden=3):
  data = dogs()
  cell, head = jrnn.elman(hidden), jrnn.linear(len(DOGS_VOCAB))
  kc, kh = jax.random.split(key)
  params = (cell.init(kc, len(DOGS_VOCAB)), head.init(kh, hidden))

  def loss_fn(params, batch):
    xs, labels = batch
    _, logits = jrnn.many_to_many(cell, params[0], head, params[1], xs)
    return jrnn.losses.softmax_cross_entropy(logits, labels)

  return params, loss_fn, (data.xs, data.labels)


def _close(a, b, **kw):
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def test_sgd_step_matches_hand_written_update(key):
  params, loss_fn, batch = _dogs_setup(key)
  opt = optax.sgd(0.3)
  step = jax.jit(train.make_step(loss_fn, opt))
  new, _, metrics = step(params, opt.init(params), batch)
  loss, grads = jax.value_and_grad(loss_fn)(params, batch)
  _close(new, jax.tree_util.tree_map(lambda p, g: p - 0.3 * g, params, grads), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(metrics.loss, loss, rtol=1e-6)
  norm = np.sqrt(sum(np.sum(np.square(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads)))
  np.testing.assert_allclose(metrics.grad_norm, norm, rtol=1e-5)
  assert not bool(metrics.skipped)


def test_clip_norm_rescales_to_the_global_norm(key):
  params, loss_fn, batch = _dogs_setup(key)
  grads = jax.grad(loss_fn)(params, batch)
  norm = float(np.sqrt(sum(np.sum(np.square(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))))
  clip = norm / 4  # the gradient is 4x too long: it must be scaled by exactly 1/4
  new, _, metrics = train.make_step(loss_fn, optax.sgd(1.0), clip_norm=clip)(params, optax.sgd(1.0).init(params), batch)
  _close(new, jax.tree_util.tree_map(lambda p, g: p - g / 4, params, grads), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(metrics.grad_norm, norm, rtol=1e-6)  # reported before clipping


def test_adam_and_chains_accepted_and_adam_matches_optax(key):
  params, loss_fn, batch = _dogs_setup(key)
  opt = optax.chain(optax.scale_by_adam(), optax.scale(-0.01))
  step = jax.jit(train.make_step(loss_fn, opt))
  p, s = params, opt.init(params)
  ref_p, ref_s = params, optax.adam(0.01).init(params)
  for _ in range(3):
    p, s, _ = step(p, s, batch)
    g = jax.grad(loss_fn)(ref_p, batch)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam is not strict-promotion clean
      u, ref_s = optax.adam(0.01).update(g, ref_s, ref_p)
    ref_p = optax.apply_updates(ref_p, u)
  _close(p, ref_p, rtol=1e-6, atol=1e-7)


def test_bad_arguments_raise(key):
  params, loss_fn, _ = _dogs_setup(key)
  with pytest.raises(TypeError, match="optax.GradientTransformation"):
    train.make_step(loss_fn, "adam")
  with pytest.raises(ValueError, match="clip_norm"):
    train.make_step(loss_fn, optax.sgd(0.1), clip_norm=-1.0)


def _nan_when_flagged(params, batch):
  xs, flag = batch
  loss = jnp.sum(jnp.square(params["w"] * xs))
  return jnp.where(flag, jnp.asarray(jnp.nan, loss.dtype), loss)


def test_skip_nonfinite_keeps_params_and_state():
  params = {"w": jnp.array([1.0, -2.0])}
  opt = optax.adam(0.1)
  step = jax.jit(train.make_step(_nan_when_flagged, opt, skip_nonfinite=True))
  state = opt.init(params)
  p1, s1, m1 = step(params, state, (jnp.ones(2), jnp.array(False)))
  assert not bool(m1.skipped) and not np.array_equal(p1["w"], params["w"])
  p2, s2, m2 = step(p1, s1, (jnp.ones(2), jnp.array(True)))
  assert bool(m2.skipped)
  np.testing.assert_array_equal(p2["w"], p1["w"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, s2, s1)


def test_fit_raises_on_nonfinite_loss_with_last_finite_state():
  params = {"w": jnp.array([1.0, -2.0])}
  opt = optax.sgd(0.1)
  step = jax.jit(train.make_step(_nan_when_flagged, opt))
  batch_fn = lambda i: (jnp.ones(2), jnp.array(i == 3))
  with pytest.raises(train.NonFiniteLossError, match="non-finite loss nan .* at step 3") as err:
    train.fit(step, params, opt.init(params), batch_fn, steps=10, progress=False)
  assert err.value.step == 3
  expected = params["w"] * (1 - 0.2) ** 3  # three SGD steps on sum(w^2): w <- w - 0.1 * 2w
  np.testing.assert_allclose(err.value.params["w"], expected, rtol=1e-6)
  # with skipping, fit goes on, records the skip, and gives up after max_skipped in a row
  step = jax.jit(train.make_step(_nan_when_flagged, opt, skip_nonfinite=True))
  out = train.fit(step, params, opt.init(params), batch_fn, steps=6, progress=False)
  np.testing.assert_array_equal(out.history["skipped"], [False, False, False, True, False, False])
  np.testing.assert_allclose(out.params["w"], params["w"] * 0.8**5, rtol=1e-6)
  with pytest.raises(train.NonFiniteLossError, match="3 consecutive steps were skipped"):
    train.fit(
      step, params, opt.init(params), lambda i: (jnp.ones(2), jnp.array(True)), steps=5, max_skipped=2, progress=False
    )


def test_fit_history_eval_and_save_calls(key):
  params, loss_fn, batch = _dogs_setup(key)
  opt = optax.adam(0.05)
  step = jax.jit(train.make_step(loss_fn, opt))
  saved = []
  out = train.fit(
    step,
    params,
    opt.init(params),
    lambda i: batch,
    steps=60,
    eval_every=25,
    eval_fn=lambda p: {"loss": loss_fn(p, batch)},
    save_every=50,
    save_fn=lambda i, p, s, c: saved.append(i),
    progress=False,
  )
  h = out.history
  np.testing.assert_array_equal(h["step"], np.arange(60))
  assert isinstance(h["loss"], np.ndarray) and h["loss"].dtype == np.float64
  np.testing.assert_array_equal(h["eval_step"], [25, 50, 60])
  np.testing.assert_allclose(h["eval_loss"][-1], float(loss_fn(out.params, batch)), rtol=1e-6)
  assert saved == [50, 60]
  assert h["loss"][-1] < 0.5 * h["loss"][0]  # dogs is learnable: the loss at least halves
  # a loop run in two pieces equals one run (the same step function, the same batches)
  a = train.fit(step, params, opt.init(params), lambda i: batch, steps=30, progress=False)
  b = train.fit(step, a.params, a.opt_state, lambda i: batch, steps=60, start_step=30, progress=False)
  jax.tree_util.tree_map(np.testing.assert_array_equal, b.params, out.params)


def test_fit_argument_checks(key):
  params, loss_fn, batch = _dogs_setup(key)
  step = train.make_step(loss_fn, optax.sgd(0.1))
  with pytest.raises(ValueError, match="steps must be a positive int"):
    train.fit(step, params, optax.sgd(0.1).init(params), lambda i: batch, steps=0, progress=False)
  with pytest.raises(ValueError, match="start_step .* must be below steps"):
    train.fit(step, params, optax.sgd(0.1).init(params), lambda i: batch, steps=5, start_step=5, progress=False)


def test_stateful_tbptt_carries_state_between_windows(key):
  """With lr = 0, window k's loss under TBPTT equals that part of one unroll over the whole stream."""
  cell, head = jrnn.gru(5), jrnn.linear(3)
  kc, kh, kx, ky = jax.random.split(key, 4)
  params = (cell.init(kc, 2), head.init(kh, 5))
  xs = jax.random.normal(kx, (12, 2))
  ys = jax.random.normal(ky, (12, 3))
  window = 4

  def loss_fn(params, batch):
    (x, y), carry = batch
    carry, pred = jrnn.many_to_many(cell, params[0], head, params[1], x, carry)
    return jrnn.losses.mse(pred, y), carry

  opt = optax.sgd(0.0)
  step = jax.jit(train.make_step(loss_fn, opt, has_aux=True))
  batch_fn = lambda i: (xs[i * window : (i + 1) * window], ys[i * window : (i + 1) * window])
  out = train.fit(
    step, params, opt.init(params), batch_fn, steps=3, carry=cell.initial_carry(params[0]), progress=False
  )
  _, pred = jrnn.many_to_many(cell, params[0], head, params[1], xs)
  per_window = np.mean(np.square(np.asarray(pred - ys)).reshape(3, window, 3), axis=(1, 2))
  np.testing.assert_allclose(out.history["loss"], per_window, rtol=1e-5)
  final_carry, _ = jrnn.unroll(cell, params[0], xs)
  np.testing.assert_allclose(out.carry, final_carry, rtol=1e-5, atol=1e-6)
