"""Sequence parallelism on forced CPU devices against jrnn.unroll on one, in float64.

``tests/test_sequence_parallel.py`` runs this file in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag must be set
before JAX initialises, so not in the pytest process) and ``JAX_ENABLE_X64=1``.

As a script: ``python tests/seqpar_worker.py`` prints one JSON line: for every
case, the largest absolute differences between
``jrnn.sharding.sequence_parallel_unroll`` over all the devices and
``jrnn.unroll(..., scan="sequential")`` (values: outputs and final carry;
gradients of a loss w.r.t. the params, the inputs and the initial carry),
the reference's scale, and where the outputs lived; then the messages of the
errors that need several devices.
"""

import json
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn._seqpar import sequence_parallel_unroll

T, I, H, B = 16, 3, 4, 2

CELLS = {
  "min_gru": lambda: jrnn.min_gru(H, dtype=jnp.float64),
  "min_gru_log": lambda: jrnn.min_gru(H, log_space=True, dtype=jnp.float64),
  "min_lstm": lambda: jrnn.min_lstm(H, dtype=jnp.float64),
  "min_lstm_log": lambda: jrnn.min_lstm(H, log_space=True, dtype=jnp.float64),
  "lru": lambda: jrnn.lru(H, state_size=3, r_min=0.5, r_max=0.99, dtype=jnp.float64),
}

# (cell, reverse, chunk scan, mask, random initial carry (else zeros), batch): every cell in both directions,
# both chunk scans, with holes; the log-space cells, the complex carry and a batch among them.
CASES = [
  ("min_gru", False, "sequential", True, True, False),
  ("min_gru_log", True, "associative", True, True, True),
  ("min_lstm_log", False, "associative", True, True, False),
  ("min_lstm", True, "sequential", True, False, False),
  ("lru", False, "associative", True, True, True),
  ("lru", True, "sequential", True, True, False),
]


def _mask(key, shape, devices):
  """Random holes, a whole device's chunk masked (device 1's) and a masked tail."""
  mask = jax.random.bernoulli(key, 0.7, shape)
  L = shape[-1] // devices
  steps = jnp.broadcast_to(jnp.arange(shape[-1]), shape)
  return mask & ~((steps >= L) & (steps < 2 * L)) & (steps < shape[-1] - 2)


def _loss_and_grads(run, weights):
  """``run(params, xs, carry) -> (carry, hs)`` jitted with the gradients of a loss w.r.t. all three."""

  def loss(params, xs, carry):
    carry, hs = run(params, xs, carry)
    squares = sum(jnp.sum(jnp.real(c * jnp.conj(c))) for c in jax.tree_util.tree_leaves(carry))
    return jnp.sum(jnp.sin(hs) * weights) + squares, (carry, hs)

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


COLLECTIVE = re.compile(r"\b(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)(-start)?\(")


def collectives_in_loops(hlo):
  """How many while loops (scans) a compiled program's text has, and the collectives that run inside them.

  Follows every computation a while body calls (fusions, nested loops, reductions). The chunk scans must
  have none: a collective per step is a round trip between devices per step.
  """
  computations, name, lines = {}, None, []
  for line in hlo.splitlines():
    start = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$", line)
    if start:
      name, lines = start.group(1), []
    elif line.startswith("}") and name:
      computations[name], name = "\n".join(lines), None
    elif name:
      lines.append(line)

  def called(text):
    names = set(re.findall(r"(?:to_apply|calls|body|condition)=%?([\w.\-]+)", text))
    for group in re.findall(r"branch_computations=\{([^}]*)\}", text):
      names |= {c.strip().lstrip("%") for c in group.split(",")}
    return names

  todo = [body for text in computations.values() for body in re.findall(r"body=%?([\w.\-]+)", text)]
  loops, seen = len(todo), set()
  while todo:
    c = todo.pop()
    if c not in seen and c in computations:
      seen.add(c)
      todo.extend(called(computations[c]))
  return loops, sorted({m.group(1) for c in seen for m in COLLECTIVE.finditer(computations[c])})


def _max_abs(a, b):
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(*map(jax.tree_util.tree_leaves, (a, b)))
  )


def _scale(a):
  return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree_util.tree_leaves(a))


def case(mesh, name, reverse, scan, masked, with_carry, batched):
  devices = mesh.devices.size
  cell = CELLS[name]()
  keys = jax.random.split(jax.random.key(len(name) + 10 * reverse + 100 * batched), 5)
  params = cell.init(keys[0], I)
  lead = (B,) if batched else ()
  xs = jax.random.normal(keys[1], lead + (T, I), jnp.float64)
  mask = _mask(keys[2], lead + (T,), devices) if masked else None
  carry = None
  if with_carry:
    template = cell.initial_carry(params)
    carry = jax.tree_util.tree_map(lambda c: jax.random.normal(keys[3], lead + c.shape, c.dtype), template)
  weights = jax.random.normal(keys[4], lead + (T, H), jnp.float64)
  sharded = _loss_and_grads(
    lambda p, x, c: sequence_parallel_unroll(cell, p, x, c, mesh=mesh, mask=mask, reverse=reverse, scan=scan), weights
  )
  unroll = jrnn.unroll_batch if batched else jrnn.unroll
  reference = _loss_and_grads(
    lambda p, x, c: unroll(cell, p, x, c, mask=mask, reverse=reverse, scan="sequential"), weights
  )
  if carry is None:  # zeros, passed explicitly for the gradient w.r.t. the initial carry
    carry = jax.tree_util.tree_map(lambda c: jnp.broadcast_to(c, lead + c.shape), cell.initial_carry(params))
  compiled = sharded.lower(params, xs, carry).compile()
  (gp, gx, gc), (c, hs) = compiled(params, xs, carry)
  (rp, rx, rc), (rcarry, rhs) = reference(params, xs, carry)
  shards = sorted((s.device.id, s.index[-2].start or 0, s.data.shape[-2]) for s in hs.addressable_shards)
  return {
    "case": [name, reverse, scan, masked, with_carry, batched],
    "hs": _max_abs(hs, rhs),
    "carry": _max_abs(c, rcarry),
    "grad_params": _max_abs(gp, rp),
    "grad_xs": _max_abs(gx, rx),
    "grad_carry": _max_abs(gc, rc),
    "scale": max(_scale(x) for x in (rhs, rcarry, rp, rx, rc)),
    "hs_shards": shards,  # (device id, first step, steps) per device
    "loops_and_their_collectives": collectives_in_loops(compiled.as_text()),
    "mask_holes": 0 if mask is None else int(np.sum(~np.asarray(mask))),
  }


def main():
  jax.config.update("jax_numpy_rank_promotion", "raise")
  jax.config.update("jax_numpy_dtype_promotion", "strict")
  assert jnp.zeros(()).dtype == jnp.float64, "run with JAX_ENABLE_X64=1"
  mesh = jrnn.sharding.data_mesh(axis="time")
  start = time.perf_counter()
  results = [case(mesh, *c) for c in CASES]
  cell = CELLS["min_gru"]()
  params = cell.init(jax.random.key(0), I)
  try:
    sequence_parallel_unroll(cell, params, jnp.ones((T + 2, I)), mesh=mesh)
    indivisible = None
  except ValueError as e:
    indivisible = str(e)
  # Outside jit, inputs committed to one device are placed on the mesh.
  xs = jax.device_put(jax.random.normal(jax.random.key(1), (T, I), jnp.float64), jax.devices()[0])
  _, hs = sequence_parallel_unroll(cell, params, xs, mesh=mesh)
  placed = {
    "hs_spec": list(hs.sharding.spec),
    "max_abs_diff": _max_abs(hs, jrnn.unroll(cell, params, xs, scan="sequential")[1]),
  }
  info = {
    "device_count": jax.device_count(),
    "committed_inputs": placed,
    "mesh_shape": dict(mesh.shape),
    "cases": results,
    "indivisible_error": indivisible,
    "seconds": time.perf_counter() - start,
  }
  print(json.dumps(info))


if __name__ == "__main__":
  main()
