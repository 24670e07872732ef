"""Two small training runs, sharded or not; run as a script it uses 8 forced CPU devices.

``tests/test_sharding.py`` runs this file in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set
before JAX initialises, so not in the pytest process), and computes the
single-device reference with :func:`runs` in its own process.

As a script: ``python tests/sharding_worker.py OUT_DIR`` writes
``OUT_DIR/sharded.npz`` (the final params and losses of the 8-device runs) and
prints one JSON line describing where the arrays lived.
"""

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jrnn
from jrnn import sharding
from jrnn import train

B, T, STEPS = 32, 10, 5  # adding: many-to-one LSTM, Adam with clipping
TB, TW, TWINDOWS = 16, 6, 3  # TBPTT: many-to-many GRU over 3 windows, carry passed on, input dropout


def _adding(mesh):
  cell, head = jrnn.lstm(16), jrnn.linear(1)
  kc, kh, kd = jax.random.split(jax.random.key(0), 3)
  params = jax.jit(lambda kc, kh: (cell.init(kc, 2), head.init(kh, 16)))(kc, kh)  # jit: one compilation

  def loss_fn(params, batch):
    ys = jax.vmap(lambda x: head.apply(params[1], jrnn.many_to_one(cell, params[0], x)[1]))(batch.xs)
    return jrnn.losses.mse(ys, batch.targets)

  opt = optax.adam(1e-2)
  step = train.make_step(loss_fn, opt, clip_norm=1.0, mesh=mesh)
  step = step if mesh is not None else jax.jit(step)
  batch_fn = lambda i: jrnn.tasks.adding(jax.random.fold_in(kd, i), B, T)
  return step, params, opt, batch_fn


def _tbptt(mesh):
  cell, head = jrnn.gru(8), jrnn.linear(3)
  kc, kh, kd = jax.random.split(jax.random.key(1), 3)
  params = jax.jit(lambda kc, kh: (cell.init(kc, 3), head.init(kh, 8)))(kc, kh)

  def loss_fn(params, batch, key):  # has_rng: the step's key, replicated on a mesh, drops inputs
    (xs, labels), carry = batch
    xs = jrnn.dropout(key, 0.25, xs)
    carry, logits = jax.vmap(lambda x, c: jrnn.many_to_many(cell, params[0], head, params[1], x, c))(xs, carry)
    return jrnn.losses.softmax_cross_entropy(logits, labels), carry

  @jax.jit
  def batch_fn(i):
    k1, k2 = jax.random.split(jax.random.fold_in(kd, i))
    return jax.random.normal(k1, (TB, TW, 3)), jax.random.randint(k2, (TB, TW), 0, 3)

  opt = optax.sgd(0.5)
  step = train.make_step(loss_fn, opt, has_aux=True, has_rng=True, mesh=mesh)
  step = step if mesh is not None else jax.jit(step)
  carry = jax.jit(jax.vmap(lambda _: cell.initial_carry(params[0])))(jnp.arange(TB))
  out = train.fit(
    step,
    params,
    jax.jit(opt.init)(params),
    batch_fn,
    steps=TWINDOWS,
    carry=carry,
    key=jax.random.key(2),
    progress=False,
    verbose=False,
  )
  return out


def runs(mesh):
  """Final params (flattened leaves), losses and carry of both runs, as numpy."""
  step, params, opt, batch_fn = _adding(mesh)
  adding = train.fit(step, params, jax.jit(opt.init)(params), batch_fn, steps=STEPS, progress=False, verbose=False)
  tbptt = _tbptt(mesh)
  arrays = {}
  for name, out in (("adding", adding), ("tbptt", tbptt)):
    for i, leaf in enumerate(jax.tree_util.tree_leaves(out.params)):
      arrays[f"{name}_param{i}"] = np.asarray(leaf)
    arrays[f"{name}_loss"] = out.history["loss"]
  arrays["tbptt_carry"] = np.asarray(tbptt.carry)
  return arrays, adding, tbptt, (step, params, opt, batch_fn)


def main(out_dir):
  jax.config.update("jax_numpy_rank_promotion", "raise")
  jax.config.update("jax_numpy_dtype_promotion", "strict")
  mesh = sharding.data_mesh()
  t0 = time.perf_counter()
  arrays, adding, tbptt, (step, params, opt, batch_fn) = runs(mesh)
  np.savez(os.path.join(out_dir, "sharded.npz"), **arrays)
  t1 = time.perf_counter()

  placed = sharding.shard_batch(batch_fn(0), mesh)
  shards = sorted((s.device.id, s.data.shape[0], s.index[0].start) for s in placed.xs.addressable_shards)
  compiled = step.lower(params, opt.init(params), placed).compile().as_text()
  try:
    sharding.shard_batch(jrnn.tasks.adding(jax.random.key(2), 12, T), mesh)
    error = None
  except ValueError as e:
    error = str(e)
  info = {
    "device_count": jax.device_count(),
    "mesh_shape": dict(mesh.shape),
    "xs_spec": list(placed.xs.sharding.spec),
    "targets_spec": list(placed.targets.sharding.spec),
    "xs_shards": shards,  # (device id, rows, first row) per device
    "params_replicated": all(
      x.sharding.is_fully_replicated and len(x.sharding.device_set) == 8
      for x in jax.tree_util.tree_leaves((adding.params, adding.opt_state))
    ),
    "carry_spec": list(tbptt.carry.sharding.spec),
    "carry_rows_per_device": sorted({s.data.shape[0] for s in tbptt.carry.addressable_shards}),
    "all_reduce_in_step": "all-reduce" in compiled,
    "indivisible_error": error,
    "runs_s": t1 - t0,
    "inspect_s": time.perf_counter() - t1,
  }
  print(json.dumps(info))


if __name__ == "__main__":
  main(sys.argv[1])
