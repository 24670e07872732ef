"""The cell contract, checked for every cell in jrnn.CELLS, bare and inside every wrapper in jrnn.WRAPPERS.

Each kind promises invariants (jrnn._cell); this file checks them against
references that do not go through the driver: a Python loop over ``cell.step``,
the projection of one row at a time, the linear recurrence written out, and
the other algorithm. A new cell or wrapper is picked up from the registry.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from tests import reference as ref

I, H, T = 3, 4, 7
MASK = np.array([1, 1, 0, 1, 1, 0, 0], bool)  # a hole in the middle, padding at the end
# The compiled programs are tiny; LLVM's optimisations only cost compile time here.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _variants():
  out = {}
  for name, make in jrnn.CELLS.items():
    out[name] = lambda make=make: make(H, dtype=jnp.float64)
    for wrap_name, wrap in jrnn.WRAPPERS.items():
      out[f"{wrap_name}({name})"] = lambda make=make, wrap=wrap: wrap(make(H, dtype=jnp.float64), dtype=jnp.float64)
  return out


VARIANTS = _variants()
KINDS = {name: type(make().kind) for name, make in VARIANTS.items()}


def _of_kind(*kinds):
  return [name for name in sorted(VARIANTS) if KINDS[name] in kinds]


def _setup(name, seed=0):
  cell = VARIANTS[name]()
  params = cell.init(jax.random.key(seed), I)
  # Move every leaf off its initial value (zero biases, identity blocks), so no term hides.
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  params = jax.tree_util.tree_unflatten(
    tree, [a + 0.2 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
  )
  xs = jax.random.normal(jax.random.key(seed + 2), (T, I), jnp.float64)
  return cell, params, xs


def _loss(cell, **options):
  def loss(params, xs):
    carry, hs = jrnn.unroll(cell, params, xs, mask=jnp.asarray(MASK), **options)
    return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(jnp.abs(c) ** 2) for c in jax.tree_util.tree_leaves(carry))

  return loss


def test_registry_lists_every_public_cell_and_wrapper():
  for name in jrnn.CELLS:
    assert name in jrnn.__all__
  assert set(jrnn.WRAPPERS) == {"stack", "bidirectional", "linear_recurrent_block"}
  assert all(
    isinstance(make(H).kind, (jrnn.AffineRecurrence, jrnn.LinearRecurrence, jrnn.Projected))
    for make in jrnn.CELLS.values()
  )


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_unroll_equals_a_python_loop_over_step(x64, name):
  """Every steppable cell: the driver (any kind, masks with holes, both directions) is the step, looped."""
  cell, params, xs = _setup(name)
  if cell.step is None:
    assert isinstance(cell.kind, jrnn.SequenceLayer)
    return
  run = jit(lambda p, x, reverse: jrnn.unroll(cell, p, x, mask=jnp.asarray(MASK), reverse=reverse), static_argnums=2)
  step = jit(lambda c, x: cell.step(params, c, x))
  for reverse in (False, True):
    want_carry, want_hs = ref.run(step, cell.initial_carry(params), xs, MASK, reverse)
    chex.assert_trees_all_close(run(params, xs, reverse), (want_carry, jnp.asarray(want_hs)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", _of_kind(jrnn.Projected, jrnn.AffineRecurrence, jrnn.LinearRecurrence))
def test_split_kinds_project_row_by_row(x64, name):
  """Projected kinds: the projection of all rows at once is the projection of each row (what hoisting needs)."""
  cell, params, xs = _setup(name)
  kind = cell.kind
  whole = kind.project(params, xs)
  rows = [kind.project(params, x) for x in xs]
  chex.assert_trees_all_close(whole, jax.tree_util.tree_map(lambda *r: jnp.stack(r), *rows), rtol=1e-13)
  # and the step is readout(recur(project(x)))
  c0 = jax.tree_util.tree_map(lambda c: c + 0.1, cell.initial_carry(params))
  p = kind.project(params, xs[0])
  c1 = kind.recur(params, c0, p)
  chex.assert_trees_all_close(cell.step(params, c0, xs[0]), (c1, kind.readout(params, c1, p)), rtol=1e-13)
  hoisted = jrnn.unroll(cell, params, xs, projection="hoisted")
  per_step = jrnn.unroll(cell, params, xs, projection="per_step")
  chex.assert_trees_all_close(hoisted, per_step, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", _of_kind(jrnn.AffineRecurrence))
def test_affine_kinds_are_affine_in_the_carry_and_fuse(x64, name):
  """AffineRecurrence: recurrent(a c₁ + (1-a) c₂) = a recurrent(c₁) + (1-a) recurrent(c₂); fused grads = autodiff."""
  cell, params, xs = _setup(name)
  kind = cell.kind
  c1, c2 = (
    jax.tree_util.tree_map(
      lambda c, s=s: c + s * jnp.arange(c.size, dtype=c.dtype).reshape(c.shape), cell.initial_carry(params)
    )
    for s in (0.3, -0.7)
  )
  mix = jax.tree_util.tree_map(lambda a, b: 0.25 * a + 0.75 * b, c1, c2)
  chex.assert_trees_all_close(
    kind.recurrent(params, mix), 0.25 * kind.recurrent(params, c1) + 0.75 * kind.recurrent(params, c2), rtol=1e-12
  )
  want = jit(jax.grad(_loss(cell), (0, 1)))(params, xs)
  got = jit(jax.grad(_loss(cell, vjp="fused"), (0, 1)))(params, xs)
  chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", _of_kind(jrnn.LinearRecurrence))
def test_linear_kinds_recur_linearly_and_scan_associatively(x64, name):
  """LinearRecurrence: recur(c) = a ⊙ c + b from coefficients; the associative scan equals the sequential one."""
  cell, params, xs = _setup(name)
  kind = cell.kind
  p = kind.project(params, xs[0])
  zero = cell.initial_carry(params)
  b = kind.recur(params, zero, p)
  a = jax.tree_util.tree_map(jnp.subtract, kind.recur(params, jax.tree_util.tree_map(jnp.ones_like, zero), p), b)
  c = jax.tree_util.tree_map(lambda z: z + 0.5 - 0.1 * jnp.arange(z.size, dtype=z.dtype), zero)
  chex.assert_trees_all_close(
    kind.recur(params, c, p), jax.tree_util.tree_map(lambda a, c, b: a * c + b, a, c, b), rtol=1e-12, atol=1e-14
  )
  for reverse in (False, True):
    seq = jrnn.unroll(cell, params, xs, mask=jnp.asarray(MASK), reverse=reverse, scan="sequential")
    par = jrnn.unroll(cell, params, xs, mask=jnp.asarray(MASK), reverse=reverse, scan="associative")
    chex.assert_trees_all_close(par, seq, rtol=1e-11, atol=1e-12)
  chex.assert_trees_all_close(
    jit(jax.grad(_loss(cell, scan="associative"), (0, 1)))(params, xs),
    jit(jax.grad(_loss(cell, scan="sequential"), (0, 1)))(params, xs),
    rtol=1e-10,
    atol=1e-12,
  )


@pytest.mark.parametrize("name", [n for n in sorted(VARIANTS) if n.startswith(("stack(", "bidirectional("))])
def test_sequence_layers_equal_their_layers_run_one_after_another(x64, name):
  """SequenceLayer wrappers: a stack is its layers in turn; bidirectional is forward ‖ reversed backward."""
  cell, params, xs = _setup(name)
  assert isinstance(cell.kind, jrnn.SequenceLayer)
  inner = jrnn.CELLS[name[name.index("(") + 1 : -1]](H, dtype=jnp.float64)
  m = jnp.asarray(MASK)
  carry, hs = jrnn.unroll(cell, params, xs, mask=m)
  if name.startswith("stack("):
    c1, h1 = jrnn.unroll(inner, params[0], xs, mask=m)
    c2, h2 = jrnn.unroll(inner, params[1], h1, mask=m)
    chex.assert_trees_all_close((carry, hs), ((c1, c2), h2), rtol=1e-13)
  else:
    cf, hf = jrnn.unroll(inner, params.forward, xs, mask=m)
    cb, hb = jrnn.unroll(inner, params.backward, xs, mask=m, reverse=True)
    chex.assert_trees_all_close(
      (carry, hs), (jrnn.BidirectionalCarry(cf, cb), jnp.concatenate([hf, hb], -1)), rtol=1e-13
    )


@pytest.mark.parametrize("name", [n for n in sorted(VARIANTS) if "(" not in n or n.startswith("linear_rec")])
def test_remat_changes_nothing_but_memory(x64, name):
  """Chunks of 3 steps over T = 7 (a short last chunk), through every kind of scan body.

  (stack and bidirectional pass remat to these same bodies: test_options.py finds it there.)
  """
  cell, params, xs = _setup(name)
  chex.assert_trees_all_close(
    jit(jax.value_and_grad(_loss(cell, remat=3)))(params, xs),
    jit(jax.value_and_grad(_loss(cell)))(params, xs),
    rtol=1e-11,
    atol=1e-12,
  )


def test_a_stepwise_cell_runs_through_its_step(x64):
  """A user's Stepwise cell: no projection to hoist; the driver scans step itself (with remat too)."""

  def step(w, h, x):
    h = jnp.tanh(x @ w + 0.5 * h)
    return h, h

  cell = jrnn.Cell(
    init=lambda key, i: jax.random.normal(key, (i, H), jnp.float64),
    initial_carry=lambda w: jnp.zeros((H,), jnp.float64),
    step=step,
    hidden_size=H,
    input_size=lambda w: w.shape[0],
    name="tiny",
  )
  assert isinstance(cell.kind, jrnn.Stepwise)
  w = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, I), jnp.float64)
  want = ref.run(lambda h, x: step(w, h, x), jnp.zeros(H), xs, MASK)
  for options in ({}, {"remat": "sqrt"}, {"reverse": False, "projection": "hoisted"}):
    chex.assert_trees_all_close(
      jrnn.unroll(cell, w, xs, mask=jnp.asarray(MASK), **options), (want[0], jnp.asarray(want[1])), rtol=1e-12
    )
  with pytest.raises(ValueError, match="vjp='fused' needs a cell split into recurrent and update"):
    jrnn.unroll(cell, w, xs, vjp="fused")
  with pytest.raises(ValueError, match="scan='associative' needs a cell whose recurrence is linear"):
    jrnn.unroll(cell, w, xs, scan="associative")


def test_make_cell_rejects_kinds_without_a_split():
  with pytest.raises(TypeError, match="kind must be a jrnn.Projected"):
    jrnn.make_cell(jrnn.Stepwise(), name="x", hidden_size=1, init=None, initial_carry=None)
