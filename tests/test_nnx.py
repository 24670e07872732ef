"""jrnn.nnx.RNN against the pure API it wraps: outputs, gradients and training."""

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jrnn
import jrnn.nnx

I, H, T, B = 3, 5, 7, 4

CELLS = {
  "elman": lambda: jrnn.elman(H),
  "gru": lambda: jrnn.gru(H),
  "lstm": lambda: jrnn.lstm(H),
  # Both composites in one cell: an LSTM layer under a bidirectional GRU layer.
  "stack_bidirectional": lambda: jrnn.stack([jrnn.lstm(H), jrnn.bidirectional(jrnn.gru(H))]),
}


def _mask():
  # Right padding, a hole in the middle and a full row.
  lengths = np.array([T, 5, 3, 6])
  mask = np.arange(T)[None, :] < lengths[:, None]
  mask[3, 2] = False
  return jnp.asarray(mask)


# Both sides are jitted (eager scans recompile on every call); the eager path is
# compared with the jitted one in test_nnx_jit_matches_eager_and_does_not_retrace.


@pytest.mark.parametrize("name", sorted(CELLS))
def test_one_sequence_equals_unroll(name):
  cell = CELLS[name]()
  model = jrnn.nnx.RNN(cell, I, rngs=nnx.Rngs(0), return_carry=True)
  # The params are cell.init on the next key of the rngs' params stream.
  chex.assert_trees_all_equal(model.params, cell.init(nnx.Rngs(0).params(), I))
  xs = jax.random.normal(jax.random.key(1), (T, I))

  @nnx.jit
  def run(model, xs):
    return model(xs), model(xs, reverse=True), model(xs, return_carry=False)

  @jax.jit
  def ref(params, xs):
    return jrnn.unroll(cell, params, xs), jrnn.unroll(cell, params, xs, reverse=True)

  forward, backward, hs_only = run(model, xs)
  ref_forward, ref_backward = ref(model.params, xs)
  chex.assert_trees_all_equal((forward, backward, hs_only), (ref_forward, ref_backward, ref_forward[1]))
  chex.assert_shape(forward[1], (T, cell.hidden_size))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_batch_with_mask_and_carry_equals_unroll(name):
  cell = CELLS[name]()
  params = cell.init(jax.random.key(2), I)
  model = jrnn.nnx.RNN.from_params(cell, params)
  xs = jax.random.normal(jax.random.key(3), (B, T, I))
  mask = _mask()
  c0 = jax.tree.map(lambda c: jax.random.normal(jax.random.key(4), (B,) + c.shape), cell.initial_carry(params))

  @nnx.jit
  def run(model, xs, c0, mask):
    return model(xs, c0, mask=mask), model(xs, c0, mask=mask, return_carry=True)

  @jax.jit
  def ref(params, xs, c0, mask):
    batched = jax.vmap(lambda x, c, m: jrnn.unroll(cell, params, x, c, mask=m))(xs, c0, mask)
    # The sequence with a hole, on its own (vmap may reorder float sums).
    c3 = jax.tree.map(lambda c: c[3], c0)
    return batched, jrnn.unroll(cell, params, xs[3], c3, mask=mask[3])

  hs, (carry, hs2) = run(model, xs, c0, mask)
  (ref_carry, ref_hs), (ref_carry_3, ref_hs_3) = ref(params, xs, c0, mask)
  chex.assert_trees_all_equal((carry, hs, hs2), (ref_carry, ref_hs, ref_hs))
  chex.assert_trees_all_close(
    (jax.tree.map(lambda c: c[3], carry), hs[3]), (ref_carry_3, ref_hs_3), rtol=1e-6, atol=1e-6
  )
  # Masked steps give zero rows.
  np.testing.assert_array_equal(np.asarray(hs)[~np.asarray(mask)], 0.0)


def test_from_params_round_trip_and_state_paths():
  cell = jrnn.stack([jrnn.lstm(H), jrnn.bidirectional(jrnn.gru(H))])
  params = cell.init(jax.random.key(5), I)
  model = jrnn.nnx.RNN.from_params(cell, params)
  chex.assert_trees_all_equal_structs(model.params, params)
  chex.assert_trees_all_equal(model.params, params)
  assert (model.in_features, model.out_features) == (I, 2 * H)
  # Every leaf is one nnx.Param, named by the NamedTuple fields.
  state = nnx.state(model, nnx.Param)
  paths = sorted("/".join(map(str, p)) for p, _ in nnx.to_flat_state(state))
  assert "cell_params/0/wx" in paths and "cell_params/1/backward/bhn" in paths
  assert len(paths) == len(jax.tree_util.tree_leaves(params))
  # split / merge keeps the NamedTuples, so the pure functions still take them.
  graphdef, state = nnx.split(model)
  merged = nnx.merge(graphdef, state)
  assert isinstance(merged.params[1], jrnn.BidirectionalParams)
  chex.assert_trees_all_equal(merged.params, params)
  # initial_carry is cell.initial_carry, broadcast over a batch when asked.
  chex.assert_trees_all_equal(model.initial_carry(), cell.initial_carry(params))
  chex.assert_trees_all_equal(
    model.initial_carry(B), jax.tree.map(lambda c: jnp.stack([c] * B), cell.initial_carry(params))
  )


class _Tagger(nnx.Module):
  """A jrnn GRU and an nnx.Linear head: per-step regression."""

  def __init__(self, rngs):
    self.rnn = jrnn.nnx.RNN(jrnn.gru(H), I, rngs=rngs)
    self.head = nnx.Linear(H, 2, rngs=rngs)

  def __call__(self, xs, mask):
    return self.head(self.rnn(xs, mask=mask))


def _pure_loss(cell, params, xs, mask, ys):
  rnn_params, (w, b) = params
  _, hs = jax.vmap(lambda x, m: jrnn.unroll(cell, rnn_params, x, mask=m))(xs, mask)
  err = (hs @ w + b[None, None] - ys) * mask[..., None].astype(hs.dtype)
  return jnp.sum(err**2) / jnp.sum(mask.astype(err.dtype))


def _nnx_loss(model, xs, mask, ys):
  err = (model(xs, mask) - ys) * mask[..., None].astype(ys.dtype)
  return jnp.sum(err**2) / jnp.sum(mask.astype(err.dtype))


def _data():
  xs = jax.random.normal(jax.random.key(6), (B, T, I))
  ys = jnp.tanh(jnp.cumsum(xs[..., :2], axis=1))
  return xs, _mask(), ys


def _pure_params(model):
  return model.rnn.params, (model.head.kernel[...], model.head.bias[...])


def test_gradients_equal_pure_gradients():
  model = _Tagger(nnx.Rngs(0))
  xs, mask, ys = _data()
  loss, grads = nnx.jit(nnx.value_and_grad(_nnx_loss))(model, xs, mask, ys)
  ref_loss, ref_grads = jax.jit(jax.value_and_grad(lambda p: _pure_loss(model.rnn.cell, p, xs, mask, ys)))(
    _pure_params(model)
  )
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  # Merged into the model's graph, the grads come back in the cell's NamedTuples.
  grad_model = nnx.merge(nnx.graphdef(model), grads)
  got = _pure_params(grad_model)
  assert isinstance(got[0], jrnn.GRUParams)
  chex.assert_trees_all_equal_structs(got, ref_grads)
  chex.assert_trees_all_close(got, ref_grads, rtol=1e-6, atol=1e-7)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(got))


@pytest.mark.standard_promotion
def test_nnx_optimizer_training_matches_pure_loop():
  steps = 15
  make_tx = lambda: optax.adam(1e-2)
  model = _Tagger(nnx.Rngs(0))
  cell = model.rnn.cell
  xs, mask, ys = _data()
  params = _pure_params(model)

  optimizer = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)

  @nnx.jit
  def nnx_step(model, optimizer, xs, mask, ys):
    loss, grads = nnx.value_and_grad(_nnx_loss)(model, xs, mask, ys)
    optimizer.update(model, grads)
    return loss

  tx = make_tx()
  opt_state = tx.init(params)

  @jax.jit
  def pure_step(params, opt_state, xs, mask, ys):
    loss, grads = jax.value_and_grad(lambda p: _pure_loss(cell, p, xs, mask, ys))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  nnx_losses, pure_losses = [], []
  for _ in range(steps):
    nnx_losses.append(float(nnx_step(model, optimizer, xs, mask, ys)))
    params, opt_state, loss = pure_step(params, opt_state, xs, mask, ys)
    pure_losses.append(float(loss))

  np.testing.assert_allclose(nnx_losses, pure_losses, rtol=1e-5)
  chex.assert_trees_all_close(_pure_params(model), params, rtol=1e-6, atol=1e-6)
  assert isinstance(model.rnn.params, jrnn.GRUParams)
  assert nnx_losses[-1] < 0.7 * nnx_losses[0]


def test_nnx_jit_matches_eager_and_does_not_retrace():
  model = jrnn.nnx.RNN(jrnn.lstm(H), I, rngs=nnx.Rngs(0), return_carry=True)
  xs = jax.random.normal(jax.random.key(7), (B, T, I))
  mask = _mask()

  @nnx.jit
  @chex.assert_max_traces(n=1)
  def forward(model, xs, mask):
    return model(xs, mask=mask)

  ref = jax.vmap(lambda x, m: jrnn.unroll(model.cell, model.params, x, mask=m))(xs, mask)
  chex.assert_trees_all_close(forward(model, xs, mask), ref, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(forward(model, xs + 1.0, mask), model(xs + 1.0, mask=mask), rtol=1e-6, atol=1e-6)


def test_errors():
  cell = jrnn.gru(H)
  model = jrnn.nnx.RNN(cell, I, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"\[B, T, 3\]"):
    model(jnp.ones((2, 2, T, I)))
  with pytest.raises(ValueError, match=r"mask must have shape \[B, T\]"):
    model(jnp.ones((B, T, I)), mask=jnp.ones((T,), bool))
  with pytest.raises(ValueError, match="leading axis of size 4"):
    model(jnp.ones((B, T, I)), jnp.zeros((H,)))
  with pytest.raises(ValueError, match="xs has 2 features"):
    model(jnp.ones((T, 2)))
  with pytest.raises(ValueError, match="exactly one of rngs"):
    jrnn.nnx.RNN(cell, I)
  with pytest.raises(ValueError, match="in_features=2"):
    jrnn.nnx.RNN(cell, 2, params=model.params)
  with pytest.raises(TypeError, match="jrnn.Cell"):
    jrnn.nnx.RNN(nnx.Linear, I, rngs=nnx.Rngs(0))


def test_import_jrnn_does_not_import_flax():
  code = (
    "import sys, jrnn; assert 'flax' not in sys.modules; "
    "m = jrnn.nnx; assert 'flax.nnx' in sys.modules and m.RNN.__module__ == 'jrnn.nnx'"
  )
  subprocess.run([sys.executable, "-c", code], check=True)
