"""jrnn.unroll(..., reset=...) against running each segment on its own and concatenating."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

T, I = 7, 3

CELLS = {
  "elman": (lambda: jrnn.elman(4, dtype=jnp.float64), {}),
  "gru": (lambda: jrnn.gru(4, dtype=jnp.float64), {}),
  "lstm": (lambda: jrnn.lstm(4, dtype=jnp.float64), {}),
  "lstm_fused": (lambda: jrnn.lstm(4, dtype=jnp.float64), {"vjp": "fused"}),
  "min_gru_assoc": (lambda: jrnn.min_gru(4, dtype=jnp.float64), {"scan": "associative"}),
  "min_gru_log": (lambda: jrnn.min_gru(4, log_space=True, dtype=jnp.float64), {"scan": "associative"}),
  "lru_assoc": (lambda: jrnn.lru(4, dtype=jnp.float64), {"scan": "associative"}),
  "stack": (
    lambda: jrnn.stack([jrnn.gru(4, dtype=jnp.float64), jrnn.min_gru(3, dtype=jnp.float64)]),
    {"scan": "auto"},
  ),
  "bidirectional": (lambda: jrnn.bidirectional(jrnn.gru(3, dtype=jnp.float64)), {}),
}

RESETS = {
  "several": [0, 2, 3, 5],
  "every_step": list(range(T)),
  "no_0": [1, 4],
}

HOLES = np.array([True, False, True, True, False, True, False])


def _random_like(key, tree):
  """A random carry like ``tree`` (complex leaves get a random imaginary part), so resetting to it shows."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, leaf in zip(keys, leaves):
    x = jax.random.normal(k, leaf.shape + (2,), jnp.float64)
    out.append((jax.lax.complex(x[..., 0], x[..., 1]) if jnp.iscomplexobj(leaf) else x[..., 0]).astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def _setup(name, random_carry=True):
  make, options = CELLS[name]
  cell = make()
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, I), jnp.float64)
  carry = _random_like(jax.random.key(2), cell.initial_carry(params)) if random_carry else None
  return cell, params, xs, carry, options


def _flags(starts):
  return np.isin(np.arange(T), starts)


def _segments(reset, reverse):
  """The index ranges run separately: they start at a reset (forward) or end at one (reverse)."""
  if reverse:
    ends = sorted(set(np.flatnonzero(reset)) | {T - 1})
    return [range(a + 1, b + 1) for a, b in zip([-1] + ends[:-1], ends)]
  starts = sorted(set(np.flatnonzero(reset)) | {0})
  return [range(a, b) for a, b in zip(starts, starts[1:] + [T])]


def _by_segments(cell, params, xs, carry, mask, reset, reverse, options):
  """The reference: jrnn.unroll on every segment from the same carry, outputs concatenated."""
  runs = []
  for seg in _segments(reset, reverse):
    idx = np.asarray(seg)
    runs.append(
      jrnn.unroll(cell, params, xs[idx], carry, mask=None if mask is None else mask[idx], reverse=reverse, **options)
    )
  hs = jnp.concatenate([h for _, h in runs])
  last = lambda backwards: runs[0][0] if backwards else runs[-1][0]  # the carry of the segment scanned last
  if isinstance(runs[0][0], jrnn.BidirectionalCarry):
    return jrnn.BidirectionalCarry(last(reverse).forward, last(not reverse).backward), hs
  return last(reverse), hs


# Resets (with one at 0 or not, at every step), forward and reverse, with and without holes in the mask: three
# combinations per cell keep the file fast.
CASES = [("no_0", False, True), ("several", True, True), ("every_step", False, False)]


@pytest.mark.parametrize(("pattern", "reverse", "masked"), CASES)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_reset_equals_segments(x64, name, pattern, reverse, masked):
  cell, params, xs, carry, options = _setup(name)
  reset = _flags(RESETS[pattern])
  mask = HOLES if masked else None
  got = jrnn.unroll(cell, params, xs, carry, mask=mask, reset=reset, reverse=reverse, **options)
  want = _by_segments(cell, params, xs, carry, mask, reset, reverse, options)
  chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "reverse"), [("lstm_fused", True), ("min_gru_log", False), ("bidirectional", False)])
def test_reset_gradients_equal_segments(x64, name, reverse):
  cell, params, xs, carry, options = _setup(name)
  reset, mask = _flags([2, 5]), HOLES

  def loss(run):
    def f(params, xs, carry):
      c, hs = run(params, xs, carry)
      leaves = jax.tree_util.tree_leaves((c, hs))
      return sum(jnp.sum(jnp.abs(x) ** 2 * jnp.cos(jnp.arange(x.size).reshape(x.shape))) for x in leaves)

    return jax.grad(f, argnums=(0, 1, 2))(params, xs, carry)

  got = loss(lambda p, x, c: jrnn.unroll(cell, p, x, c, mask=mask, reset=reset, reverse=reverse, **options))
  want = loss(lambda p, x, c: _by_segments(cell, p, x, c, mask, reset, reverse, options))
  chex.assert_trees_all_close(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["gru", "lstm_fused", "min_gru_log", "lru_assoc", "bidirectional"])
def test_all_false_is_no_reset_bit_for_bit(x64, name):
  cell, params, xs, carry, options = _setup(name)
  got = jrnn.unroll(cell, params, xs, carry, mask=HOLES, reset=np.zeros(T, bool), **options)
  want = jrnn.unroll(cell, params, xs, carry, mask=HOLES, **options)
  chex.assert_trees_all_equal(got, want)


def test_all_false_and_reset_at_0_change_nothing(x64):
  # Not bit for bit: the jnp.where in the scan body lets XLA fuse min_gru's sequential step differently (1 ulp).
  cell, params, xs, carry, options = _setup("stack")
  want = jrnn.unroll(cell, params, xs, carry, mask=HOLES, **options)
  for reset in (np.zeros(T, bool), _flags([0])):
    got = jrnn.unroll(cell, params, xs, carry, mask=HOLES, reset=reset, **options)
    chex.assert_trees_all_close(got, want, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("vjp", ["autodiff", "fused"])
def test_unroll_batch_equals_vmap(x64, vjp):
  cell, params, _, _, _ = _setup("lstm", random_carry=False)
  B = 3
  xs = jax.random.normal(jax.random.key(3), (B, T, I), jnp.float64)
  carry = _random_like(
    jax.random.key(4), jax.tree_util.tree_map(lambda c: jnp.zeros((B,) + c.shape, c.dtype), cell.initial_carry(params))
  )
  reset = np.stack([_flags(RESETS[p]) for p in ("several", "every_step", "no_0")])
  mask = np.stack([HOLES, np.ones(T, bool), HOLES[::-1]])
  got = jrnn.unroll_batch(cell, params, xs, carry, mask=mask, reset=reset, vjp=vjp)
  want = jax.vmap(lambda x, c, m, r: jrnn.unroll(cell, params, x, c, mask=m, reset=r))(xs, carry, mask, reset)
  chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)


def test_many_to_many_resets(x64):
  cell, params, xs, carry, _ = _setup("gru")
  head = jrnn.linear(2, dtype=jnp.float64)
  head_params = head.init(jax.random.key(5), cell.hidden_size)
  reset = _flags([3])
  _, ys = jrnn.many_to_many(cell, params, head, head_params, xs, carry, reset=reset)
  _, hs = _by_segments(cell, params, xs, carry, None, reset, False, {})
  np.testing.assert_allclose(ys, head.apply(head_params, hs), rtol=1e-12, atol=1e-12)


def test_bad_reset_errors():
  cell = jrnn.gru(4)
  params = cell.init(jax.random.key(0), I)
  xs = jnp.ones((T, I))
  with pytest.raises(TypeError, match=r"reset must be a boolean array of shape \[T\] = \(7,\), got dtype int32"):
    jrnn.unroll(cell, params, xs, reset=jnp.zeros(T, jnp.int32))
  with pytest.raises(ValueError, match=r"reset must have shape \[T\] = \(7,\).*got shape \(6,\)"):
    jrnn.unroll(cell, params, xs, reset=np.zeros(T - 1, bool))
  with pytest.raises(
    ValueError, match=r"jrnn.unroll_batch: reset must have shape \[B, T\] = \(2, 7\).*got shape \(7,\)"
  ):
    jrnn.unroll_batch(cell, params, jnp.ones((2, T, I)), reset=np.zeros(T, bool))


def test_a_sequence_layer_without_reset_says_so():
  inner = jrnn.gru(4)
  run = lambda params, carry, xs, mask, options: jrnn.unroll(inner, params, xs, carry, mask=mask)
  cell = inner._replace(kind=jrnn.SequenceLayer(run), step=None, name="my_layer")
  params = cell.init(jax.random.key(0), I)
  jrnn.unroll(cell, params, jnp.ones((T, I)))
  with pytest.raises(ValueError, match="my_layer is a jrnn.SequenceLayer whose run.*takes no reset keyword"):
    jrnn.unroll(cell, params, jnp.ones((T, I)), reset=_flags([2]))


def test_nnx_rnn_passes_reset_on():
  nnx = pytest.importorskip("flax.nnx")
  import jrnn.nnx

  cell = jrnn.gru(4)
  model = jrnn.nnx.RNN(cell, I, rngs=nnx.Rngs(0))
  xs = jax.random.normal(jax.random.key(1), (2, T, I))
  reset = np.stack([_flags([3]), _flags([1, 5])])
  want = jrnn.unroll_batch(cell, model.params, xs, reset=reset)[1]
  np.testing.assert_array_equal(model(xs, reset=reset), want)
  np.testing.assert_array_equal(model(xs[0], reset=reset[0]), want[0])
