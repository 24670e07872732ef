"""jrnn.bptt: the seeds' hand-written BPTT against jax.grad, finite differences and truncation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import jrnn
import jrnn.tasks
from jrnn import bptt

# (output, loss): every combination elman_bptt accepts.
OUTPUT_LOSSES = (
  ("linear", "mse"),
  ("sigmoid", "mse"),
  ("softmax", "mse"),
  ("softmax", "cross_entropy"),
  ("sigmoid", "cross_entropy"),
)


def make_problem(seed, T, I, H, O, output, loss, dtype=jnp.float64, scale=0.5):
  """Random params (non-zero biases), inputs and targets, drawn with NumPy (no per-shape compiles)."""
  rng = np.random.default_rng(seed)

  def normal(*shape, std=scale):
    return jnp.asarray(std * rng.standard_normal(shape), dtype)

  params = bptt.ElmanNetParams(
    jrnn.ElmanParams(normal(I, H, std=1 / np.sqrt(I)), normal(H, H, std=1 / np.sqrt(H)), normal(H)),
    jrnn.LinearParams(normal(H, O, std=1 / np.sqrt(H)), normal(O)),
  )
  xs = normal(T, I, std=1.0)
  if output == "softmax" and loss == "cross_entropy":
    targets = jnp.asarray(rng.integers(0, O, T), jnp.int32)
  else:
    targets = jnp.asarray(rng.uniform(size=(T, O)), dtype)
  return params, xs, targets


def reference_loss(params, xs, targets, *, activation, output, loss, reduction):
  """The same loss built from jrnn.unroll, jrnn.linear, jrnn.losses and optax: what jax.grad differentiates."""
  H, O = params.cell.wh.shape[0], params.head.w.shape[1]
  dtype = params.cell.wx.dtype
  _, hs = jrnn.unroll(jrnn.elman(H, activation=activation, dtype=dtype), params.cell, xs)
  logits = jrnn.linear(O, dtype=dtype).apply(params.head, hs)
  T = xs.shape[0]
  c = 1.0 if reduction == "mean" else float(T)  # jrnn.losses average over time
  if loss == "mse":
    ys = {"linear": logits, "sigmoid": jax.nn.sigmoid(logits), "softmax": jax.nn.softmax(logits, axis=-1)}[output]
    return c * jrnn.losses.mse(ys, targets)
  if output == "softmax":
    return c * jrnn.losses.softmax_cross_entropy(logits, targets)
  per_step = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
  return c * jnp.mean(per_step)


_OPTS = ("activation", "output", "loss", "reduction")
# Compiled once per option set (and shape); eager op-by-op dispatch is many times slower here.
elman_bptt = jax.jit(bptt.elman_bptt, static_argnames=_OPTS + ("truncate",))
reference_value_and_grad = jax.jit(jax.value_and_grad(reference_loss), static_argnames=_OPTS)


def max_abs_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@functools.partial(jax.jit, static_argnames=("activation", "output", "loss"))
def bptt_and_reference(params, xs, targets, **opts):
  """Both reductions, hand-written and by jax.grad, in one compiled function (half the compile time)."""
  return {
    r: (
      bptt.elman_bptt(params, xs, targets, reduction=r, **opts),
      jax.value_and_grad(reference_loss)(params, xs, targets, reduction=r, **opts),
    )
    for r in ("mean", "sum")
  }


# Every combination for the seeds' state nonlinearities (tanh, sigmoid); ReLU on two of them.
_CASES = [(a, o, l) for a in ("tanh", "sigmoid") for (o, l) in OUTPUT_LOSSES] + [
  ("relu", "linear", "mse"),
  ("relu", "softmax", "cross_entropy"),
]


@pytest.mark.parametrize("activation,output,loss", _CASES)
def test_equals_jax_grad(x64, activation, output, loss):
  """Loss (relative 1e-12) and gradients (absolute 1e-10) equal jax.grad's in float64, for "mean" and "sum"."""
  # A different random shape for every case.
  rng = np.random.default_rng(_CASES.index((activation, output, loss)))
  T, I, H, O = (int(v) for v in rng.integers([1, 1, 1, 2], [12, 6, 7, 6]))
  params, xs, targets = make_problem(int(rng.integers(1 << 30)), T, I, H, O, output, loss)
  results = bptt_and_reference(params, xs, targets, activation=activation, output=output, loss=loss)
  for (value, grads), (ref_value, ref_grads) in results.values():
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(
      g.dtype == jnp.float64 and g.shape == p.shape for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params))
    )
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-12)
    assert max_abs_diff(grads, ref_grads) < 1e-10
  # "sum" is T times "mean": the two reductions were really different losses.
  np.testing.assert_allclose(results["sum"][0][0], T * results["mean"][0][0], rtol=1e-12)


def test_pair_params_and_initial_state(x64):
  """A plain (ElmanParams, LinearParams) pair and a non-zero s0 are accepted; s0 enters the forward pass."""
  params, xs, targets = make_problem(3, 6, 3, 4, 2, "linear", "mse")
  s0 = jnp.linspace(-0.5, 0.5, 4)
  value, grads = elman_bptt(tuple(params), xs, targets, s0)

  def ref(p):
    _, hs = jrnn.unroll(jrnn.elman(4, dtype=jnp.float64), p.cell, xs, s0)
    return jrnn.losses.mse(jrnn.linear(2, dtype=jnp.float64).apply(p.head, hs), targets)

  ref_value, ref_grads = jax.value_and_grad(ref)(params)
  assert isinstance(grads, bptt.ElmanNetParams)
  np.testing.assert_allclose(value, ref_value, rtol=1e-12)
  assert max_abs_diff(grads, ref_grads) < 1e-10


@pytest.mark.parametrize(
  "activation,output,loss",
  [("tanh", "linear", "mse"), ("sigmoid", "softmax", "cross_entropy"), ("relu", "sigmoid", "cross_entropy")],
)
def test_central_finite_differences(x64, activation, output, loss):
  params, xs, targets = make_problem(11, 5, 3, 4, 3, output, loss)
  opts = dict(activation=activation, output=output, loss=loss, reduction="mean")
  _, grads = elman_bptt(params, xs, targets, **opts)
  flat, unravel = ravel_pytree(params)
  f = jax.jit(jax.vmap(lambda v: elman_bptt(unravel(v), xs, targets, **opts)[0]))
  h = 1e-5
  eye = jnp.eye(flat.shape[0], dtype=flat.dtype)
  fd = (f(flat[None, :] + h * eye) - f(flat[None, :] - h * eye)) / (2 * h)
  np.testing.assert_allclose(ravel_pytree(grads)[0], fd, rtol=1e-6, atol=1e-8)


def test_seeds_2_3_2_network(x64):
  """The seeds' 2-3-2 network: 2 inputs, 3 sigmoid state units, 2 sigmoid outputs, MSE averaged over t and outputs."""
  params, xs, targets = make_problem(232, 4, 2, 3, 2, "sigmoid", "mse")
  opts = dict(activation="sigmoid", output="sigmoid", loss="mse", reduction="mean")
  value, grads = elman_bptt(params, xs, targets, **opts)
  ref_value, ref_grads = reference_value_and_grad(params, xs, targets, **opts)
  np.testing.assert_allclose(value, ref_value, rtol=1e-12)
  assert max_abs_diff(grads, ref_grads) < 1e-10
  # The seeds' eq. 12-13 for the output layer, written out with a Python loop:
  # ∂C/∂Wy = (1/T) Σₜ aₜ¹ᵀ [(2/n)(aₜ² − yₜ) × aₜ²(1 − aₜ²)], ∂C/∂b² the same without aₜ¹.
  (wx, ws, b), (wy, by) = params
  T, n = xs.shape[0], 2
  s = jnp.zeros(3)
  gwy, gby = jnp.zeros_like(wy), jnp.zeros_like(by)
  for t in range(T):
    s = jax.nn.sigmoid(xs[t] @ wx + s @ ws + b)
    a2 = jax.nn.sigmoid(s @ wy + by)
    e = (2 / n) * (a2 - targets[t]) * a2 * (1 - a2)
    gwy, gby = gwy + jnp.outer(s, e) / T, gby + e / T
  np.testing.assert_allclose(grads.head.w, gwy, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(grads.head.b, gby, rtol=1e-12, atol=1e-15)


def test_dogs_example(x64):
  """The seeds' "dogs": d, o, g one-hot -> o, g, s; a 4-3-4 tanh network with softmax cross-entropy.

  The hand-written gradients equal jax.grad, and plain gradient descent with
  them learns to predict every next letter.
  """
  data = jrnn.tasks.dogs(jnp.float64)
  k1, k2 = jax.random.split(jax.random.key(4))
  params = bptt.ElmanNetParams(
    jrnn.elman(3, dtype=jnp.float64).init(k1, 4), jrnn.linear(4, dtype=jnp.float64).init(k2, 3)
  )
  opts = dict(activation="tanh", output="softmax", loss="cross_entropy", reduction="mean")
  value, grads = elman_bptt(params, data.xs, data.labels, **opts)
  ref_value, ref_grads = reference_value_and_grad(params, data.xs, data.labels, **opts)
  np.testing.assert_allclose(value, ref_value, rtol=1e-12)
  assert max_abs_diff(grads, ref_grads) < 1e-10

  step = jax.jit(lambda p: elman_bptt(p, data.xs, data.labels, **opts))

  def body(p, _):
    loss, g = step(p)
    return jax.tree.map(lambda a, b: a - 0.5 * b, p, g), loss

  params, losses = jax.lax.scan(body, params, None, length=300)
  _, hs = jrnn.unroll(jrnn.elman(3, dtype=jnp.float64), params.cell, data.xs)
  predicted = jnp.argmax(jrnn.linear(4, dtype=jnp.float64).apply(params.head, hs), axis=-1)
  assert [jrnn.tasks.DOGS_VOCAB[i] for i in predicted] == ["o", "g", "s"]
  assert losses[-1] < 0.1 * losses[0]


def truncated_reference_loss(params, xs, targets, k, *, activation, output, loss, reduction):
  """For every t, recompute the last k steps from stop_gradient(s_{t-k}) and score the output at t."""
  H, O = params.cell.wh.shape[0], params.head.w.shape[1]
  dtype = params.cell.wx.dtype
  cell, head = jrnn.elman(H, activation=activation, dtype=dtype), jrnn.linear(O, dtype=dtype)
  _, hs = jrnn.unroll(cell, params.cell, xs)
  states = jnp.concatenate([jnp.zeros((1, H), dtype), hs], axis=0)  # states[t] = s_t, s_0 = 0
  T = xs.shape[0]
  total = jnp.zeros((), dtype)
  for t in range(1, T + 1):
    start = max(t - k, 0)
    s = jax.lax.stop_gradient(states[start])
    for tau in range(start + 1, t + 1):
      s, _ = cell.step(params.cell, s, xs[tau - 1])
    total = total + _step_loss(head.apply(params.head, s), targets[t - 1], output, loss)
  return total / T if reduction == "mean" else total


def _step_loss(o, target, output, loss):
  if loss == "mse":
    y = {"linear": o, "sigmoid": jax.nn.sigmoid(o), "softmax": jax.nn.softmax(o)}[output]
    return jnp.mean(jnp.square(y - target))
  if output == "softmax":
    return optax.softmax_cross_entropy_with_integer_labels(o, target)
  return jnp.sum(optax.sigmoid_binary_cross_entropy(o, target))


@pytest.mark.parametrize(
  "k,activation,output,loss,reduction",
  [
    (1, "tanh", "linear", "mse", "mean"),
    (3, "tanh", "linear", "mse", "mean"),
    (2, "sigmoid", "softmax", "cross_entropy", "sum"),
    (4, "tanh", "sigmoid", "cross_entropy", "mean"),
  ],
)
def test_truncation_equals_stop_gradient_reference(x64, k, activation, output, loss, reduction):
  params, xs, targets = make_problem(5, 8, 3, 4, 3, output, loss, scale=1.0)
  opts = dict(activation=activation, output=output, loss=loss, reduction=reduction)
  value, grads = elman_bptt(params, xs, targets, truncate=k, **opts)
  ref_value, ref_grads = jax.jit(jax.value_and_grad(truncated_reference_loss), static_argnums=3, static_argnames=_OPTS)(
    params, xs, targets, k, **opts
  )
  np.testing.assert_allclose(value, ref_value, rtol=1e-12)
  assert max_abs_diff(grads, ref_grads) < 1e-10
  # Truncation really changes the recurrent gradients (so the comparison above is not vacuous) ...
  _, full = elman_bptt(params, xs, targets, **opts)
  assert float(jnp.max(jnp.abs(full.cell.wh - grads.cell.wh))) > 1e-4
  # ... but not the head's.
  assert max_abs_diff(full.head, grads.head) < 1e-12


def test_truncation_longer_than_sequence_is_full_bptt(x64):
  params, xs, targets = make_problem(6, 5, 2, 3, 2, "linear", "mse")
  _, full = elman_bptt(params, xs, targets)
  for k in (5, 50):
    _, truncated = elman_bptt(params, xs, targets, truncate=k)
    assert max_abs_diff(full, truncated) < 1e-13


def _sabotaged_dphi(activation, z, s):
  del activation, z
  return s * (1 - s)  # the sigmoid's derivative used for tanh


@pytest.mark.parametrize("sabotage", ["wrong_derivative", "sign", "missing_recurrent_term"])
def test_a_broken_recursion_is_caught(x64, monkeypatch, sabotage):
  """The comparison with jax.grad fails for a recursion with a wrong derivative, sign or term."""
  params, xs, targets = make_problem(8, 7, 3, 4, 3, "linear", "mse")
  _, ref = reference_value_and_grad(
    params, xs, targets, activation="tanh", output="linear", loss="mse", reduction="mean"
  )
  _, good = elman_bptt(params, xs, targets)
  assert max_abs_diff(good, ref) < 1e-10
  if sabotage == "missing_recurrent_term":
    # truncate=1 is the recursion without δₜ₊₁ Wsᵀ: δₜ = εₜ Wyᵀ ⊙ φ'(zₜ).
    _, broken = elman_bptt(params, xs, targets, truncate=1)
  else:
    original = bptt._dphi
    if sabotage == "wrong_derivative":
      monkeypatch.setattr(bptt, "_dphi", _sabotaged_dphi)
    else:
      monkeypatch.setattr(bptt, "_dphi", lambda a, z, s: -original(a, z, s))
    # A fresh function, so that no compiled (unsabotaged) version is reused.
    _, broken = jax.jit(lambda p, x, d: bptt.elman_bptt(p, x, d))(params, xs, targets)
  assert max_abs_diff(broken.cell, ref.cell) > 1e-3
  assert max_abs_diff(broken.head, ref.head) < 1e-10  # the head's gradient does not use δ


def test_float32_close_to_jax_grad():
  params, xs, targets = make_problem(9, 10, 3, 5, 4, "softmax", "cross_entropy", dtype=jnp.float32)
  opts = dict(activation="tanh", output="softmax", loss="cross_entropy", reduction="mean")
  value, grads = jax.jit(functools.partial(bptt.elman_bptt, **opts))(params, xs, targets)
  ref_value, ref_grads = reference_value_and_grad(params, xs, targets, **opts)
  assert value.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  assert max_abs_diff(grads, ref_grads) < 1e-5


def test_errors_name_the_argument():
  params, xs, targets = make_problem(0, 4, 3, 2, 2, "linear", "mse", dtype=jnp.float32)
  with pytest.raises(ValueError, match=r"xs must have shape \[T, input_size\] = \[T, 3\].*got shape \(2, 4, 3\)"):
    elman_bptt(params, jnp.zeros((2, 4, 3)), targets)
  with pytest.raises(ValueError, match=r"targets must have shape \[T, output_size\] = \(4, 2\), got shape \(4, 3\)"):
    elman_bptt(params, xs, jnp.zeros((4, 3)))
  with pytest.raises(TypeError, match=r"targets must be integer class labels of shape \[T\] = \(4,\), got dtype float"):
    elman_bptt(params, xs, targets[:, 0], output="softmax", loss="cross_entropy")
  with pytest.raises(ValueError, match=r"targets must be integer labels of shape \[T\] = \(4,\), got shape \(4, 1\)"):
    elman_bptt(params, xs, jnp.zeros((4, 1), jnp.int32), output="softmax", loss="cross_entropy")
  with pytest.raises(TypeError, match="xs must be floating, got dtype int32"):
    elman_bptt(params, jnp.zeros((4, 3), jnp.int32), targets)
  with pytest.raises(TypeError, match="params must be ElmanNetParams"):
    elman_bptt(params.cell, xs, targets)
  with pytest.raises(ValueError, match=r"params.cell.wh must have shape \(2, 2\).*got \(3, 3\)"):
    elman_bptt(params._replace(cell=params.cell._replace(wh=jnp.zeros((3, 3)))), xs, targets)
  with pytest.raises(ValueError, match=r"s0 must have shape \[hidden_size\] = \(2,\), got shape \(3,\)"):
    elman_bptt(params, xs, targets, jnp.zeros(3))
  with pytest.raises(ValueError, match="loss='cross_entropy' needs probabilities"):
    elman_bptt(params, xs, targets, output="linear", loss="cross_entropy")
  with pytest.raises(ValueError, match="truncate must be None or a positive int, got 0"):
    elman_bptt(params, xs, targets, truncate=0)
  with pytest.raises(ValueError, match="activation must be one of"):
    elman_bptt(params, xs, targets, activation="gelu")
