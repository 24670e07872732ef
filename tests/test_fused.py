"""vjp="fused" (the hand-written, cuDNN-scheduled backward pass) against jax.grad of the plain scan."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn

CELLS = {"elman": jrnn.elman, "gru": jrnn.gru, "lstm": jrnn.lstm}


def _setup(name, dtype=jnp.float64, B=4, T=7, I=3, H=5):
  cell = CELLS[name](H, dtype=dtype)
  params = cell.init(jax.random.key(0), I)
  # Non-zero biases everywhere (GRU's b_hn included), so a bias gradient in the wrong place shows.
  params = jax.tree_util.tree_map(
    lambda x: x + 0.2 * jax.random.normal(jax.random.key(x.size), x.shape, x.dtype), params
  )
  xs = jax.random.normal(jax.random.key(1), (B, T, I), dtype)
  mask = jnp.asarray(np.random.default_rng(0).random((B, T)) > 0.3)
  return cell, params, xs, mask


def _loss(cell, batched, **options):
  """A loss that uses every output and the final carry, through unroll_batch or vmap(unroll)."""

  def loss(params, xs, mask):
    if batched:
      carry, hs = jrnn.unroll_batch(cell, params, xs, mask=mask, **options)
    else:
      carry, hs = jax.vmap(lambda x, m: jrnn.unroll(cell, params, x, mask=m, **options))(xs, mask)
    return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(c**2) for c in jax.tree_util.tree_leaves(carry))

  return loss


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("projection", ["hoisted", "per_step"])
@pytest.mark.parametrize("batched", [True, False])
def test_fused_gradients_equal_autodiff_in_float64(x64, name, reverse, masked, projection, batched):
  cell, params, xs, mask = _setup(name)
  mask = mask if masked else jnp.ones(mask.shape, bool)
  want = jax.grad(_loss(cell, False, reverse=reverse), (0, 1))(params, xs, mask)
  got = jax.jit(jax.grad(_loss(cell, batched, reverse=reverse, projection=projection, vjp="fused"), (0, 1)))(
    params, xs, mask
  )
  chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)
  # and the forward values are the plain scan's
  chex.assert_trees_all_close(
    _loss(cell, batched, vjp="fused")(params, xs, mask), _loss(cell, False)(params, xs, mask), rtol=1e-13
  )


@pytest.mark.parametrize("name", list(CELLS))
def test_fused_gradients_pass_finite_differences(x64, name):
  cell, params, xs, mask = _setup(name, B=2, T=4)
  check_grads(
    lambda p, x: _loss(cell, True, vjp="fused")(p, x, mask),
    (params, xs),
    order=1,
    modes=["rev"],
    eps=1e-6,
    atol=1e-6,
    rtol=1e-6,
  )


@pytest.mark.parametrize("name", list(CELLS))
def test_fused_gradients_match_autodiff_to_float32_rounding(name):
  cell, params, xs, mask = _setup(name, dtype=jnp.float32, B=8, T=50, H=16)
  want = jax.grad(_loss(cell, True))(params, xs, mask)
  got = jax.grad(_loss(cell, True, vjp="fused"))(params, xs, mask)
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-5)


def test_per_example_gradients_under_vmap_are_not_summed(x64):
  """vmap(grad(...)) with vjp="fused" gives one gradient per sequence, as autodiff does."""
  cell, params, xs, mask = _setup("gru")

  def per_example(options):
    loss = lambda p, x: jnp.sum(jnp.tanh(jrnn.unroll(cell, p, x, **options)[1]))
    return jax.vmap(jax.grad(loss), (None, 0))(params, xs)

  got, want = per_example({"vjp": "fused"}), per_example({})
  assert got.wh.shape == (4,) + params.wh.shape
  chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)


def test_weight_gradients_are_single_products_outside_the_backward_scan():
  """The jaxpr of the fused gradient has dWh and dWx as products over all T*B rows, outside any loop."""
  cell = jrnn.lstm(16)
  params = cell.init(jax.random.key(0), 8)
  xs = jnp.ones((4, 32, 8))

  def jaxpr_of(vjp):
    grad = jax.grad(lambda p: jnp.sum(jrnn.unroll_batch(cell, p, xs, vjp=vjp, projection="per_step")[1]))
    return jax.make_jaxpr(grad)(params).jaxpr

  def top_level_dots(jaxpr):
    found = []
    for e in jaxpr.eqns:
      if e.primitive.name == "dot_general":
        found.append(tuple(e.outvars[0].aval.shape))
      if e.primitive.name in ("pjit", "jit", "custom_vjp_call", "custom_vjp_call_jaxpr", "closed_call"):
        inner = e.params.get("jaxpr") or e.params.get("call_jaxpr") or e.params.get("fun_jaxpr")
        found += top_level_dots(getattr(inner, "jaxpr", inner))
    return found

  outside = top_level_dots(jaxpr_of("fused"))
  # dWh = h^T dq and dWx = x^T dp, each one product over all T*B rows ([H, 4H] / [I, 4H], either layout)
  assert {(16, 64), (64, 16)} & set(outside), outside
  assert {(8, 64), (64, 8)} & set(outside), outside
  # while autodiff of the scan accumulates them step by step inside the backward loop
  assert not {(16, 64), (64, 16), (8, 64), (64, 8)} & set(top_level_dots(jaxpr_of("autodiff")))


def test_fused_needs_a_split_cell_and_no_remat():
  cell = jrnn.min_gru(4)
  params = cell.init(jax.random.key(0), 3)
  with pytest.raises(ValueError, match="vjp='fused' needs a cell split into recurrent and update"):
    jrnn.unroll(cell, params, jnp.ones((5, 3)), vjp="fused", scan="sequential")
  lstm = jrnn.lstm(4)
  with pytest.raises(ValueError, match="cannot be combined with remat='sqrt'"):
    jrnn.unroll(lstm, lstm.init(jax.random.key(0), 3), jnp.ones((5, 3)), vjp="fused", remat="sqrt")


def test_fused_layers_inside_a_stack_and_bidirectional(x64):
  """Composite cells pass vjp="fused" to their layers; gradients stay autodiff's."""
  cell = jrnn.stack([jrnn.bidirectional(jrnn.gru(4, dtype=jnp.float64)), jrnn.lstm(3, dtype=jnp.float64)])
  params = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (2, 6, 3), jnp.float64)
  mask = jnp.array([[True] * 6, [True] * 4 + [False] * 2])
  want = jax.grad(_loss(cell, True))(params, xs, mask)
  got = jax.grad(_loss(cell, True, vjp="fused"))(params, xs, mask)
  chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)
