"""jrnn.diagnostics: state Jacobians and loss gradients against explicit references; vanishing gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jrnn
from jrnn import diagnostics

CELLS = {
  "elman": lambda H, dtype: jrnn.elman(H, dtype=dtype),
  "irnn": lambda H, dtype: jrnn.elman(H, activation="relu", init="identity", dtype=dtype),
  "gru": lambda H, dtype: jrnn.gru(H, dtype=dtype),
  "lstm": lambda H, dtype: jrnn.lstm(H, dtype=dtype),
  "stack": lambda H, dtype: jrnn.stack([jrnn.lstm(H, dtype=dtype), jrnn.elman(H, dtype=dtype)]),
}


# Compiled once per cell (the cell is static); eager op-by-op dispatch is many times slower.
state_jacobians = jax.jit(diagnostics.state_jacobians, static_argnums=0)
jacobian_norms = jax.jit(diagnostics.jacobian_norms, static_argnums=0, static_argnames="norm")
loss_grad_norms = jax.jit(diagnostics.loss_grad_norms, static_argnums=(0, 3))


def make(name, T=6, I=2, H=3, dtype=jnp.float64, seed=0):
  cell = CELLS[name](H, dtype)
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  params = cell.init(k1, I)
  # Perturb every parameter so that no gate sits at a special value (IRNN's Ws = I, zero biases).
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(k3, len(leaves))
  params = jax.tree.unflatten(treedef, [a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])
  xs = jax.random.normal(k2, (T, I), dtype)
  return cell, params, xs


def step_jacobian_product(cell, params, xs):
  """Reference: ∂s_T/∂s_t as an explicit product of per-step jax.jacobian(cell.step), t = 1 … T."""
  carry = cell.initial_carry(params)
  flat, unravel = ravel_pytree(carry)

  def flat_step(s, x):
    return ravel_pytree(cell.step(params, unravel(s), x)[0])[0]

  step_jacobian, step = jax.jit(jax.jacobian(flat_step)), jax.jit(flat_step)
  step_jacs = []
  for x in xs:
    step_jacs.append(step_jacobian(flat, x))  # ∂s_t/∂s_{t-1}
    flat = step(flat, x)
  product = jnp.eye(flat.shape[0], dtype=flat.dtype)
  out = [product]
  for J in step_jacs[:0:-1]:  # J_T, …, J_2
    product = product @ J
    out.append(product)
  return jnp.stack(out[::-1])


def output_of(carry):
  if isinstance(carry, jrnn.LSTMCarry):
    return carry.h
  if isinstance(carry, tuple):
    return output_of(carry[-1])
  return carry


def loss_grad_reference(cell, params, xs, loss_fn, output=lambda s, x: output_of(s)):
  """Reference: for each t, the loss as a function of s_t alone (earlier outputs fixed), by a Python loop."""
  T = xs.shape[0]
  carries, hs = [], []
  c = cell.initial_carry(params)
  for x in xs:
    c, h = cell.step(params, c, x)
    carries.append(c)
    hs.append(h)

  norms = []
  for t in range(T):

    def from_state(s, t=t):
      outs = list(hs[:t]) + [output(s, xs[t])]
      for x in xs[t + 1 :]:
        s, h = cell.step(params, s, x)
        outs.append(h)
      return loss_fn(jnp.stack(outs))

    g = jax.grad(from_state)(carries[t])
    norms.append(jnp.linalg.norm(ravel_pytree(g)[0]))
  return jnp.stack(norms)


@pytest.mark.parametrize("name", list(CELLS))
def test_state_jacobians_equal_product_of_step_jacobians(x64, name):
  cell, params, xs = make(name)
  jac = state_jacobians(cell, params, xs)
  ref = step_jacobian_product(cell, params, xs)
  D = ravel_pytree(cell.initial_carry(params))[0].shape[0]
  assert jac.shape == (xs.shape[0], D, D)
  np.testing.assert_allclose(jac, ref, rtol=1e-10, atol=1e-12)
  assert float(jnp.max(jnp.abs(ref[0] - jnp.eye(D)))) > 1e-2  # not trivially the identity
  spectral = jacobian_norms(cell, params, xs)
  frobenius = jacobian_norms(cell, params, xs, norm="frobenius")
  np.testing.assert_allclose(spectral, [np.linalg.norm(np.asarray(m), 2) for m in ref], rtol=1e-10)
  np.testing.assert_allclose(frobenius, [np.linalg.norm(np.asarray(m)) for m in ref], rtol=1e-10)
  np.testing.assert_allclose(spectral[-1], 1.0, rtol=1e-12)  # ∂s_T/∂s_T = I
  np.testing.assert_allclose(frobenius[-1], np.sqrt(D), rtol=1e-12)


@pytest.mark.parametrize("name", ["elman", "gru", "lstm"])
def test_loss_grad_norms_equal_definition(x64, name):
  cell, params, xs = make(name, T=5, seed=1)
  w = jnp.linspace(-1.0, 1.0, 5 * 3, dtype=jnp.float64).reshape(5, 3)

  def loss_fn(hs):  # depends on every output, nonlinearly
    return jnp.sum(w * jnp.sin(2 * hs)) + jnp.sum(jnp.square(hs[-1]))

  got = loss_grad_norms(cell, params, xs, loss_fn)
  ref = loss_grad_reference(cell, params, xs, loss_fn)
  np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_elman_tanh_vanishes_orders_of_magnitude_faster_than_lstm():
  """At the default inits, on the same inputs, the Elman tanh Jacobian product decays far faster than the LSTM's."""
  T, I, H = 120, 8, 8
  cells = diagnostics.standard_cells(jax.random.key(0), I, H)
  xs = jax.random.normal(jax.random.key(1), (T, I))
  elman = jacobian_norms(*cells["Elman tanh"], xs)
  lstm = jacobian_norms(*cells["LSTM"], xs)
  # ‖∂s_T/∂s_1‖: how much of step T reaches step 1 (the last row is ‖I‖ = 1).
  np.testing.assert_allclose([elman[-1], lstm[-1]], [1.0, 1.0], rtol=1e-5)
  assert float(elman[0]) < 1e-6 * float(lstm[0]), (float(elman[0]), float(lstm[0]))
  assert float(lstm[0]) < 1e-2  # the LSTM's signal decays too (forget gate ≈ σ(1)), just far slower


def last_output_sum(hs):
  return jnp.sum(hs[-1])


def test_plot_norms_writes_png(tmp_path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  T, I, H = 25, 3, 6
  cells = diagnostics.standard_cells(jax.random.key(2), I, H)
  xs = jax.random.normal(jax.random.key(3), (T, I))
  path = tmp_path / "norms.png"
  fig, curves = diagnostics.plot_norms(cells, xs, path=str(path))
  plt.close(fig)
  assert path.stat().st_size > 15_000
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert list(curves) == list(cells)
  np.testing.assert_allclose(curves["LSTM"], jacobian_norms(*cells["LSTM"], xs), rtol=1e-6)
  two = {name: cells[name] for name in ("Elman tanh", "GRU")}
  fig, curves = diagnostics.plot_norms(two, xs, kind="loss_grad", path=str(tmp_path / "grads.png"))
  plt.close(fig)
  cell, params = cells["GRU"]
  np.testing.assert_allclose(curves["GRU"], loss_grad_norms(cell, params, xs, last_output_sum), rtol=1e-6)


def test_errors_name_the_argument():
  cell, params, xs = make("elman", dtype=jnp.float32)
  with pytest.raises(ValueError, match=r"xs must have shape \[T, input_size\] = \[T, 2\], got shape \(4, 6, 2\)"):
    diagnostics.jacobian_norms(cell, params, jnp.zeros((4, 6, 2)))
  with pytest.raises(ValueError, match=r"xs has 5 features \(shape \(6, 5\)\) but jrnn.elman's params expect input_si"):
    diagnostics.loss_grad_norms(cell, params, jnp.zeros((6, 5)), jnp.sum)
  with pytest.raises(TypeError, match="xs must be a floating array, got dtype int32"):
    diagnostics.state_jacobians(cell, params, jnp.zeros((6, 2), jnp.int32))
  with pytest.raises(ValueError, match="norm must be one of"):
    diagnostics.jacobian_norms(cell, params, xs, norm="nuclear")
  with pytest.raises(ValueError, match=r"loss_fn must return a scalar, got shape \(6, 3\)"):
    diagnostics.loss_grad_norms(cell, params, xs, lambda hs: hs)
  with pytest.raises(TypeError, match="loss_fn must be a callable"):
    diagnostics.loss_grad_norms(cell, params, xs, "mse")
  bi = jrnn.bidirectional(jrnn.elman(3), jrnn.elman(3))
  with pytest.raises(ValueError, match="has no step"):
    diagnostics.jacobian_norms(bi, bi.init(jax.random.key(0), 2), xs)
  lru = jrnn.lru(3)
  with pytest.raises(ValueError, match="carry is complex"):
    diagnostics.jacobian_norms(lru, lru.init(jax.random.key(0), 2), xs)
  deep = jrnn.stack([jrnn.elman(3), jrnn.elman(3)])
  with pytest.raises(ValueError, match="output is not a function of its state"):
    diagnostics.loss_grad_norms(deep, deep.init(jax.random.key(0), 2), xs, lambda hs: jnp.sum(hs))
  with pytest.raises(ValueError, match="kind must be one of"):
    diagnostics.plot_norms({"elman": (cell, params)}, xs, kind="hessian")


def test_loss_grad_norms_read_the_lru_output_from_its_state(x64):
  """The LRU's output is Re(x C) + u D, not its complex state: the loss gradient follows that read-out."""
  cell = jrnn.lru(3, state_size=5, dtype=jnp.float64)
  params = cell.init(jax.random.key(0), 2)
  xs = jax.random.normal(jax.random.key(1), (6, 2), jnp.float64)
  w = jnp.linspace(-1.0, 1.0, 6 * 3, dtype=jnp.float64).reshape(6, 3)

  def loss_fn(hs):
    return jnp.sum(w * jnp.sin(2 * hs)) + jnp.sum(jnp.square(hs[-1]))

  C = jax.lax.complex(params.c_re, params.c_im)

  def output(s, u):  # the paper's read-out, written out here
    return (s @ C).real + u @ params.d

  got = diagnostics.loss_grad_norms(cell, params, xs, loss_fn)
  np.testing.assert_allclose(got, loss_grad_reference(cell, params, xs, loss_fn, output), rtol=1e-10)
