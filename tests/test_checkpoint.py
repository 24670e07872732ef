"""Checkpoints: exact resume, atomic saves, clear errors on corrupt or missing checkpoints."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn import checkpoint
from jrnn import train
from jrnn.tasks import adding

pytestmark = pytest.mark.standard_promotion  # optax's Adam is not strict-promotion clean


def _run(tmp_path=None):
  """A tiny GRU on the adding problem with Adam: (fresh state, jitted step, batch_fn)."""
  cell, head = jrnn.gru(6), jrnn.linear(1)
  k_init, k_data = jax.random.split(jax.random.key(7))
  kc, kh = jax.random.split(k_init)
  params = (cell.init(kc, 2), head.init(kh, 6))
  opt = optax.adam(0.01)

  def loss_fn(params, batch):
    pred = jax.vmap(lambda x: head.apply(params[1], jrnn.many_to_one(cell, params[0], x)[1]))(batch.xs)
    return jrnn.losses.mse(pred, batch.targets)

  step = jax.jit(train.make_step(loss_fn, opt, clip_norm=1.0))
  state = checkpoint.TrainState(0, params, opt.init(params), k_data)
  return state, step


def _batch_fn(key):
  return lambda i: adding(jax.random.fold_in(key, i), 8, 6)


def _assert_identical(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(la, lb):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _contents(root):
  out = {}
  for base, _, names in os.walk(root):
    for name in names:
      with open(os.path.join(base, name), "rb") as f:
        out[os.path.relpath(os.path.join(base, name), root)] = f.read()
  return out


def test_resume_is_bit_identical(tmp_path):
  N = 6
  state, step = _run()
  whole = train.fit(step, state.params, state.opt_state, _batch_fn(state.key), steps=2 * N, progress=False)

  first = train.fit(step, state.params, state.opt_state, _batch_fn(state.key), steps=N, progress=False)
  checkpoint.save(
    tmp_path, checkpoint.TrainState(N, first.params, first.opt_state, state.key), metadata={"note": "half"}
  )
  del first
  fresh, step2 = _run()  # a new process would rebuild everything: the restore must not need the old objects
  restored = checkpoint.restore(tmp_path, fresh)
  assert restored.step == N and checkpoint.read_metadata(tmp_path) == {"note": "half"}
  np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))
  second = train.fit(
    step2,
    restored.params,
    restored.opt_state,
    _batch_fn(restored.key),
    steps=2 * N,
    start_step=restored.step,
    progress=False,
  )
  _assert_identical(second.params, whole.params)
  _assert_identical(second.opt_state, whole.opt_state)
  assert type(second.params[0]) is jrnn.GRUParams


def test_carry_round_trips(tmp_path):
  state, _ = _run()
  carry = jnp.arange(12, dtype=jnp.float32).reshape(2, 6)
  checkpoint.save(tmp_path, state._replace(step=3, carry=carry))
  restored = checkpoint.restore(tmp_path, state._replace(carry=jnp.zeros((2, 6), jnp.float32)))
  np.testing.assert_array_equal(restored.carry, carry)
  with pytest.raises(checkpoint.CheckpointError, match="has recurrent carry"):
    checkpoint.restore(tmp_path, state)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  state, _ = _run()
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint found: .* does not exist"):
    checkpoint.restore(tmp_path / "nowhere", state)
  with pytest.raises(checkpoint.CheckpointError, match="has no step_\\* checkpoint"):
    checkpoint.restore(tmp_path, state)
  checkpoint.save(tmp_path, state._replace(step=5))
  with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint for step 4 .* saved steps: \[5\]"):
    checkpoint.restore(tmp_path, state, step=4)


def test_corrupt_file_is_detected_and_named(tmp_path):
  state, _ = _run()
  checkpoint.save(tmp_path, state._replace(step=1))
  checkpoint.save(tmp_path, state._replace(step=2))
  path = checkpoint.step_dir(str(tmp_path), 2)
  # flip one byte of the largest array file
  files = [os.path.join(b, f) for b, _, fs in os.walk(os.path.join(path, "state")) for f in fs]
  victim = max(files, key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.seek(os.path.getsize(victim) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  rel = os.path.relpath(victim, path)
  with pytest.raises(
    checkpoint.CheckpointError,
    match=f"step_00000002 is corrupt or incomplete: file {rel} does not match its SHA-256.*"
    r"An earlier checkpoint exists \(step 1\)",
  ):
    checkpoint.restore(tmp_path, state)
  restored = checkpoint.restore(tmp_path, state, step=1)  # the earlier one is still good
  _assert_identical(restored.params, state.params)
  os.remove(victim)
  with pytest.raises(checkpoint.CheckpointError, match=f"file {rel} is missing"):
    checkpoint.restore(tmp_path, state)


def test_wrong_model_is_a_clear_error(tmp_path):
  state, _ = _run()
  checkpoint.save(tmp_path, state._replace(step=1))
  cell = jrnn.gru(7)
  other = state._replace(params=(cell.init(jax.random.key(0), 2), state.params[1]))
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"does not fit the model being restored: it has .*wx.*\[2, 18\].* where the model has "
    r".*wx.*\[2, 21\]",
  ):
    checkpoint.restore(tmp_path, other._replace(opt_state=optax.adam(0.01).init(other.params)))


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
  import orbax.checkpoint as ocp

  state, _ = _run()
  checkpoint.save(tmp_path, state._replace(step=10))
  before = _contents(tmp_path)

  def broken_save(self, *args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(ocp.StandardCheckpointer, "save", broken_save)
  for step in (10, 20):  # over the same step, and as a new step
    with pytest.raises(checkpoint.CheckpointError, match=f"saving checkpoint step {step} .* disk full.*untouched"):
      checkpoint.save(tmp_path, state._replace(step=step, params=jax.tree_util.tree_map(jnp.zeros_like, state.params)))
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == ["step_00000010"]  # no temporary or partial directories left
  assert _contents(tmp_path) == before
  _assert_identical(checkpoint.restore(tmp_path, state).params, state.params)


def test_keep_prunes_old_steps_only_after_the_new_one_exists(tmp_path):
  state, _ = _run()
  for s in (1, 2, 3, 4):
    checkpoint.save(tmp_path, state._replace(step=s), keep=2)
  assert checkpoint.all_steps(str(tmp_path)) == [3, 4]
  assert checkpoint.latest_step(str(tmp_path)) == 4
  # re-saving an existing step replaces it
  zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
  checkpoint.save(tmp_path, state._replace(step=4, params=zeros), keep=2)
  _assert_identical(checkpoint.restore(tmp_path, state).params, zeros)
  assert sorted(os.listdir(tmp_path)) == ["step_00000003", "step_00000004"]
