"""Mixed precision (compute_dtype): float32 params, bfloat16 products accumulated in float32.

The dtypes of every carry leaf and of the outputs, the accuracy against float32 compute, a NumPy
reference that rounds to bfloat16 exactly where the docs say, gradients, and composition.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import _cell
from jrnn import _cudnn
from tests import reference as ref

BF16 = jnp.bfloat16
U = 2.0**-8  # bfloat16's unit roundoff: 8 significant bits (7 stored), round to nearest

# name -> (the carry's leaf dtypes with compute_dtype=bfloat16 and float32 params, the outputs' dtype), as documented
DTYPES = {
  "elman": ((BF16,), BF16),
  "gru": ((jnp.float32,), jnp.float32),
  "lstm": ((BF16, jnp.float32), BF16),  # LSTMCarry(h, c)
  "lstmp": ((BF16, jnp.float32), BF16),
  "layer_norm_lstm": ((BF16, jnp.float32), BF16),
  "layer_norm_gru": ((jnp.float32,), jnp.float32),
}


def _pair(name, hidden=16, inputs=4):
  factory = jrnn.CELLS[name]
  mixed, plain = factory(hidden, compute_dtype=BF16), factory(hidden)
  return mixed, plain, plain.init(jax.random.key(0), inputs)


def _bf16(a):
  """``a`` rounded to bfloat16 (through float32, as the cells round), back in float64."""
  return np.asarray(np.asarray(a, np.float32).astype(BF16), np.float64)


def test_the_product_rounds_its_inputs_and_accumulates_in_float32():
  x = jax.random.normal(jax.random.key(0), (4, 512))
  w = jax.random.normal(jax.random.key(1), (512, 8))
  got = _cell.matmul(x, w, BF16)
  assert got.dtype == jnp.float32
  exact = _bf16(x) @ _bf16(w)  # the rounded inputs, summed exactly
  scale = np.abs(exact).max()
  np.testing.assert_allclose(got, exact, atol=1e-5 * scale)  # float32 accumulation: ~1e-7 relative
  in_bf16 = np.asarray(x.astype(BF16) @ w.astype(BF16), np.float64)  # a bfloat16 sum would miss by ~2^-9
  assert np.abs(in_bf16 - exact).max() > 1e-4 * scale
  assert not np.allclose(got, np.asarray(x, np.float64) @ np.asarray(w, np.float64), rtol=1e-5)  # it did round


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_documented_dtypes_and_bfloat16_within_the_stated_tolerance_of_float32(name):
  """The carry's and the outputs' dtypes are the documented ones, and the outputs near float32 compute's.

  Tolerance, in units of bfloat16's roundoff u = 2^-8: mean error <= u, max <= 8u (16u with layer norm).
  Outputs are of magnitude <= 1, over 12 steps. Each product's inputs carry a relative rounding error
  <= u (bfloat16 keeps 8 significant bits), so a pre-activation is off by <= 2u sum|x_i w_i|, a few u
  for these initialisations; the gates' nonlinearities have slope <= 1, the stored h adds <= u, and the
  recurrence carries earlier errors along (measured: mean 0.1-0.4u, max 0.4-2.1u without layer norm).
  A layer norm divides by its input's spread, which enlarges errors where the spread is small (the
  cell state's, early on): max 1.2-8.5u measured over three seeds.
  """
  mixed, plain, params = _pair(name)
  leaves, out = DTYPES[name]
  xs = jax.random.normal(jax.random.key(1), (3, 12, 4))
  assert tuple(a.dtype for a in jax.tree_util.tree_leaves(mixed.initial_carry(params))) == leaves
  carry, got = jrnn.unroll_batch(mixed, params, xs)
  assert tuple(a.dtype for a in jax.tree_util.tree_leaves(carry)) == leaves and got.dtype == out
  _, want = jrnn.unroll_batch(plain, params, xs)
  err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
  assert err.mean() <= U, err.mean() / U
  assert err.max() <= (16 if name.startswith("layer_norm") else 8) * U, err.max() / U
  assert err.max() > 2.0**-14  # and the products really ran in bfloat16 (float32 alone differs by ~1e-7)


@pytest.mark.parametrize("name", ["elman", "gru", "lstm"])
def test_a_numpy_step_that_rounds_where_the_docs_say_matches(name):
  """Teacher-forced: each step from jrnn's own previous carry; float64 except the documented bfloat16 roundings."""
  mixed, _, params = _pair(name, hidden=8, inputs=3)
  p = [_bf16(a) if field in ("wx", "wh") else np.asarray(a, np.float64) for field, a in zip(params._fields, params)]
  xs = np.asarray(jax.random.normal(jax.random.key(2), (10, 3)), np.float32)
  step = jax.jit(mixed.step)
  carry = mixed.initial_carry(params)
  for t in range(10):
    new, h = step(params, carry, jnp.asarray(xs[t]))
    leaves, out = DTYPES[name]  # the step's dtypes too
    assert tuple(a.dtype for a in jax.tree_util.tree_leaves(new)) == leaves and h.dtype == out
    x = _bf16(xs[t])
    if name == "lstm":
      (h_ref, c_ref), _ = ref.lstm_step(p, (_bf16(carry.h), np.asarray(carry.c, np.float64)), x)
      np.testing.assert_allclose(new.c, c_ref, rtol=1e-5, atol=1e-6)  # c: float32, never rounded to bfloat16
      np.testing.assert_allclose(np.asarray(h, np.float64), h_ref, rtol=2 * U, atol=1e-6)  # h: rounded once
      np.testing.assert_array_equal(h, new.h)
    elif name == "elman":
      h_ref, _ = ref.elman_step(p, np.asarray(carry, np.float64), x)  # the carry is bfloat16 already
      np.testing.assert_allclose(np.asarray(h, np.float64), h_ref, rtol=2 * U, atol=1e-6)  # rounded once, stored
    else:  # gru: the product sees h rounded; the interpolation z ⊙ h_{t-1} uses the float32 h
      H, h_prev = 8, np.asarray(carry, np.float64)
      gx, gh = x @ p[0] + p[2], _bf16(carry) @ p[1]
      r, z = ref.sigmoid(gx[:H] + gh[:H]), ref.sigmoid(gx[H : 2 * H] + gh[H : 2 * H])
      n = np.tanh(gx[2 * H :] + r * (gh[2 * H :] + p[3]))
      np.testing.assert_allclose(h, (1 - z) * n + z * h_prev, rtol=1e-5, atol=1e-6)
    carry = new


@pytest.mark.parametrize("name", ["gru", "layer_norm_lstm"])  # the LSTM: below, with every option
def test_param_gradients_are_float32_and_close_to_float32_compute(name):
  mixed, plain, params = _pair(name, hidden=8, inputs=3)
  xs = jax.random.normal(jax.random.key(1), (2, 10, 3))

  def loss(cell, params):
    return jnp.sum(jnp.sin(jrnn.unroll_batch(cell, params, xs)[1].astype(jnp.float32)))

  got = jax.grad(lambda p: loss(mixed, p))(params)
  want = jax.grad(lambda p: loss(plain, p))(params)
  for g, w in zip(got, want):
    assert g.dtype == jnp.float32
    # the products' gradients are rounded like the products: a few percent of the largest entry at most
    assert np.abs(np.asarray(g) - np.asarray(w)).max() <= 16 * U * np.abs(np.asarray(w)).max()


def test_every_way_to_run_gives_the_same_bfloat16_run_and_gradients():
  mixed, _, params = _pair("lstm", hidden=8, inputs=3)
  xs = jax.random.normal(jax.random.key(1), (2, 10, 3))

  def loss(params, **kw):
    carry, hs = jrnn.unroll_batch(mixed, params, xs, **kw)
    return jnp.sum(hs.astype(jnp.float32) ** 2) + jnp.sum(carry.c)

  want, want_grads = jax.value_and_grad(loss)(params)
  for options in ({"projection": "hoisted"}, {"projection": "per_step"}, {"vjp": "fused"}):
    got, got_grads = jax.value_and_grad(lambda p, o=options: loss(p, **o))(params)
    # the same bfloat16 inputs, summed in another order in float32: the stored h may round the other way
    np.testing.assert_allclose(got, want, rtol=1e-3)
    for g, w in zip(got_grads, want_grads):
      assert g.dtype == jnp.float32
      np.testing.assert_allclose(g, w, rtol=2e-2, atol=2e-2 * float(jnp.abs(w).max()))


def test_a_stack_of_mixed_and_plain_layers():
  layers = [jrnn.lstm(8, compute_dtype=BF16), jrnn.gru(6, compute_dtype=BF16), jrnn.elman(5)]
  deep = jrnn.stack(layers)
  params = deep.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (2, 7, 3))
  carry, hs = jrnn.unroll_batch(deep, params, xs)
  assert [tuple(a.dtype for a in jax.tree_util.tree_leaves(c)) for c in carry] == [
    (BF16, jnp.float32),
    (jnp.float32,),
    (jnp.float32,),
  ]
  # Layer by layer on the XLA scan, as the stack runs (its bfloat16 layers keep it off the CPU kernel).
  h1 = jrnn.unroll_batch(layers[0], params[0], xs, kernel="xla")[1]  # bfloat16, fed to the next layer as it is
  h2 = jrnn.unroll_batch(layers[1], params[1], h1, kernel="xla")[1]
  np.testing.assert_array_equal(hs, jrnn.unroll_batch(layers[2], params[2], h2, kernel="xla")[1])


@pytest.mark.parametrize("name", ["lstm", "layer_norm_gru"])
def test_float32_compute_is_the_plain_cell_bit_for_bit(name):
  factory = jrnn.CELLS[name]
  plain = factory(8)
  params = plain.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (2, 6, 3))
  same = factory(8, compute_dtype=jnp.float32)  # the params' own dtype: nothing to cast
  assert same.name == plain.name  # the same cell (cuDNN still takes the LSTM)
  jax.tree_util.tree_map(
    np.testing.assert_array_equal, jrnn.unroll_batch(same, params, xs), jrnn.unroll_batch(plain, params, xs)
  )
  # and the plain cell's program has no bfloat16 in it
  assert "bf16" not in str(jax.make_jaxpr(lambda p, x: jrnn.unroll_batch(plain, p, x))(params, xs))


def test_cudnn_refuses_a_mixed_precision_lstm_by_name():
  cell = jrnn.lstm(8, compute_dtype=BF16)
  params = cell.init(jax.random.key(0), 3)
  assert _cudnn.plan(cell, params) == (
    "cuDNN runs jrnn.lstm and stacks and bidirectional layers of it, not jrnn.lstm(compute_dtype=bfloat16)"
  )
  assert not isinstance(_cudnn.plan(jrnn.lstm(8), params), str)
  assert jrnn.which_kernel(cell, params, jnp.ones((2, 5, 3))) == "xla"


def test_zoneout_of_a_mixed_precision_lstm_keeps_the_dtypes():
  cell = jrnn.zoneout(jrnn.lstm(8, compute_dtype=BF16), 0.3, 0.1)
  params = cell.init(jax.random.key(0), 3)
  carry = jrnn.zoneout_carry(cell, params, jax.random.key(1), batch=2)
  final, hs = jrnn.unroll_batch(cell, params, jax.random.normal(jax.random.key(2), (2, 6, 3)), carry, vjp="fused")
  assert (final.inner.h.dtype, final.inner.c.dtype, final.key.dtype, hs.dtype) == (BF16, jnp.float32, jnp.float32, BF16)


@pytest.mark.parametrize("bad", ["int8", jnp.int32, "bfloat17"])
def test_a_bad_compute_dtype_is_a_clear_error(bad):
  with pytest.raises(TypeError, match=r"jrnn.lstm: compute_dtype must be None or a floating dtype"):
    jrnn.lstm(4, compute_dtype=bad)
