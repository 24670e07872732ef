"""Sequence parallelism (jrnn._seqpar): time split over forced CPU devices against jrnn.unroll on one.

The 4-device runs happen in a subprocess (``tests/seqpar_worker.py``), since
``--xla_force_host_platform_device_count`` must be set before JAX starts; it
compares, in float64, the sharded run with ``jrnn.unroll(...,
scan="sequential")`` on one device (values and the gradients w.r.t. params,
inputs and initial carry) for minGRU, minLSTM (plain and log space) and the
LRU (complex carry), with holes in the mask, in both directions, and reports
the differences. The checks that need one device run here.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import jrnn
from jrnn._seqpar import sequence_parallel_unroll
from tests import seqpar_worker

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 4


@pytest.fixture(scope="module")
def four_devices():
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_ENABLE_X64="1",
    PYTHONPATH=str(ROOT),
    XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}").strip(),
  )
  proc = subprocess.run(
    [sys.executable, str(ROOT / "tests" / "seqpar_worker.py")], env=env, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.loads(proc.stdout.strip().splitlines()[-1])
  assert info["device_count"] == DEVICES and info["mesh_shape"] == {"time": DEVICES}
  return info


@pytest.mark.parametrize(
  "index", range(len(seqpar_worker.CASES)), ids=lambda i: "-".join(map(str, seqpar_worker.CASES[i]))
)
def test_values_and_gradients_equal_unroll_in_float64(four_devices, index):
  result = four_devices["cases"][index]
  name, reverse, scan, masked, with_carry, batched = seqpar_worker.CASES[index]
  assert result["case"] == [name, reverse, scan, masked, with_carry, batched]
  assert result["scale"] > 1.0  # the reference is not trivially small
  for what in ("hs", "carry", "grad_params", "grad_xs", "grad_carry"):
    assert result[what] <= 1e-12, (what, result)
  if masked:  # holes, including device 1's whole chunk
    assert result["mask_holes"] >= seqpar_worker.T // DEVICES


def test_time_is_split_over_the_devices(four_devices):
  L = seqpar_worker.T // DEVICES
  for result in four_devices["cases"]:  # (device id, first step, steps): device k holds steps [kL, (k + 1)L)
    assert result["hs_shards"] == [[k, k * L, L] for k in range(DEVICES)]


def test_no_collective_runs_inside_a_scan(four_devices):
  # The params' gradient is summed over the devices once: were the params left invariant inside shard_map,
  # the LRU's λ (from the params alone) would be cast to varying inside the chunk scan, and the backward scan
  # would all-reduce on every step (LRU, 8 forced CPU devices, T=8192: 0.19 s per step instead of 0.03 s).
  for result in four_devices["cases"]:
    loops, collectives = result["loops_and_their_collectives"]
    assert collectives == [], result["case"]
    if result["case"][2] == "sequential":  # the chunk scan and its backward are loops
      assert loops >= 2, result["case"]


def test_inputs_committed_to_one_device_are_placed(four_devices):
  placed = four_devices["committed_inputs"]
  assert placed["hs_spec"] == ["time"] and placed["max_abs_diff"] <= 1e-12


def test_indivisible_length_names_both(four_devices):
  message = four_devices["indivisible_error"]
  assert f"T={seqpar_worker.T + 2}" in message and f"{DEVICES} devices" in message and "'time'" in message


def _one_device_mesh(axes=("time",)):
  return Mesh(np.asarray(jax.devices()[:1], dtype=object).reshape((1,) * len(axes)), axes)


@pytest.mark.parametrize(
  "make_cell",
  [
    lambda: jrnn.lru(4, state_size=3, dtype=jnp.float64),
    lambda: jrnn.linear_recurrent_block(jrnn.min_lstm(4, log_space=True, dtype=jnp.float64), dtype=jnp.float64),
  ],
  ids=["lru", "block_min_lstm_log"],
)
def test_a_mesh_of_one_is_unroll(x64, make_cell):
  cell = make_cell()
  params = cell.init(jax.random.key(0), 4)
  xs = jax.random.normal(jax.random.key(1), (9, 4), jnp.float64)
  mask = jnp.arange(9) % 3 != 1
  mesh = _one_device_mesh(("data", "time"))  # the other mesh axis holds copies

  def loss(run):
    return jax.value_and_grad(lambda p: jnp.sum(jnp.sin(run(p)[1])))

  @jax.jit
  def both(params):
    sharded = lambda p: sequence_parallel_unroll(cell, p, xs, mesh=mesh, axis="time", mask=mask, reverse=True)
    reference = lambda p: jrnn.unroll(cell, p, xs, mask=mask, reverse=True, scan="sequential")
    return (sharded(params), loss(sharded)(params)), (reference(params), loss(reference)(params))

  got, want = both(params)
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def test_a_cell_not_linear_in_its_carry_is_refused():
  cell = jrnn.lstm(4)
  params = jax.eval_shape(lambda key: cell.init(key, 2), jax.random.key(0))  # refused before any computation
  with pytest.raises(TypeError, match=r"jrnn.lstm is a AffineRecurrence cell.*jrnn\.LinearRecurrence.*min_gru"):
    sequence_parallel_unroll(cell, params, jnp.ones((4, 2)), mesh=_one_device_mesh())


def test_bad_arguments_are_explained():
  cell = jrnn.min_gru(3)
  params = cell.init(jax.random.key(0), 2)
  xs = jnp.ones((4, 2))
  with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
    sequence_parallel_unroll(cell, params, xs, mesh=jax.devices())  # type: ignore[arg-type]
  with pytest.raises(ValueError, match="not the axis 'seq'"):
    sequence_parallel_unroll(cell, params, xs, mesh=_one_device_mesh(), axis="seq")
  with pytest.raises(ValueError, match="name the one to split time over"):
    sequence_parallel_unroll(cell, params, xs, mesh=_one_device_mesh(("data", "time")))
  with pytest.raises(ValueError, match=r"\[T, input_size\] \(one sequence\) or \[B, T, input_size\]"):
    sequence_parallel_unroll(cell, params, jnp.ones(4), mesh=_one_device_mesh())
  with pytest.raises(ValueError, match="expect input_size=2"):
    sequence_parallel_unroll(cell, params, jnp.ones((4, 5)), mesh=_one_device_mesh())
  with pytest.raises(ValueError, match=r"mask must have shape \[B, T\]"):
    sequence_parallel_unroll(cell, params, jnp.ones((2, 4, 2)), mesh=_one_device_mesh(), mask=jnp.ones(4, bool))
  with pytest.raises(ValueError, match="scan must be one of"):
    sequence_parallel_unroll(cell, params, xs, mesh=_one_device_mesh(), scan="parallel")
