"""Data parallelism (jrnn.sharding): 8 forced CPU devices against the single-device run.

The 8-device runs happen in a subprocess (``tests/sharding_worker.py``), since
``--xla_force_host_platform_device_count`` must be set before JAX starts; the
reference is the same code run here, on this process's one device, unsharded.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import jrnn
from jrnn import sharding
from jrnn import train
from tests import sharding_worker

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
  out = tmp_path_factory.mktemp("sharded")
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    PYTHONPATH=str(ROOT),
    XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip(),
  )
  proc = subprocess.Popen(
    [sys.executable, str(ROOT / "tests" / "sharding_worker.py"), str(out)],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  reference = sharding_worker.runs(None)[0]  # here, on one device, while the subprocess runs
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr[-3000:]
  info = json.loads(stdout.strip().splitlines()[-1])
  with np.load(out / "sharded.npz") as f:
    sharded = dict(f)
  return info, sharded, reference


def test_eight_devices_match_the_single_device_run(eight_devices):
  info, sharded, reference = eight_devices
  assert info["device_count"] == 8 and info["mesh_shape"] == {"data": 8}
  assert jax.device_count() == 1
  assert sorted(reference) == sorted(sharded)
  # float32; the only difference is the order of the batch sums. Adam divides by sqrt(v): where an entry's
  # gradient is near zero, a rounding difference moves its update by up to lr = 1e-2 times that difference's
  # relative size, so after 5 steps an entry may differ by ~1e-6 (1.8e-6 measured on an AMD EPYC). atol 1e-5
  # is still 1/5000 of the 5 * lr an entry can move: a wrong gradient or a missing all-reduce fails it.
  for name in reference:
    np.testing.assert_allclose(sharded[name], reference[name], rtol=1e-5, atol=1e-5, err_msg=name)
  print(
    "max |params_8 - params_1|:",
    max(float(np.max(np.abs(sharded[k] - reference[k]))) for k in reference if "_param" in k),
  )
  # Training moved the params: equal results are not equal starting points.
  assert abs(reference["adding_loss"][-1] - reference["adding_loss"][0]) > 1e-3


def test_the_batch_is_split_over_the_data_axis(eight_devices):
  info = eight_devices[0]
  assert info["xs_spec"] == ["data"] and info["targets_spec"] == ["data"]
  B = sharding_worker.B
  assert info["xs_shards"] == [[d, B // 8, d * B // 8] for d in range(8)]
  assert info["params_replicated"]
  assert info["carry_spec"] == ["data"] and info["carry_rows_per_device"] == [sharding_worker.TB // 8]
  assert info["all_reduce_in_step"]  # the gradient is summed across devices inside the one jitted step


def test_indivisible_batch_names_the_sizes(eight_devices):
  info = eight_devices[0]
  assert "batch size 12" in info["indivisible_error"] and "8 devices" in info["indivisible_error"]


def test_one_device_mesh_equals_plain_jit(key):
  cell, head = jrnn.elman(4), jrnn.linear(2)
  kc, kh, kx = jax.random.split(key, 3)
  params = (cell.init(kc, 3), head.init(kh, 4))
  batch = jax.random.normal(kx, (5, 6, 3))

  def loss_fn(params, xs):
    _, ys = jax.vmap(lambda x: jrnn.many_to_many(cell, params[0], head, params[1], x))(xs)
    return jax.numpy.mean(jax.numpy.square(ys))

  opt = optax.sgd(0.1)
  mesh = sharding.data_mesh()
  assert mesh.shape == {"data": 1}
  got = train.make_step(loss_fn, opt, mesh=mesh)(params, opt.init(params), batch)
  want = jax.jit(train.make_step(loss_fn, opt))(params, opt.init(params), batch)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)
  # a step with has_rng=True: the key is replicated and reaches the loss
  dropped = lambda params, xs, k: loss_fn(params, jrnn.dropout(k, 0.5, xs))
  k = jax.random.key(9)
  got = train.make_step(dropped, opt, has_rng=True, mesh=mesh)(params, opt.init(params), batch, k)
  want = jax.jit(train.make_step(dropped, opt, has_rng=True))(params, opt.init(params), batch, k)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)
  assert float(got[2].loss) != float(train.make_step(loss_fn, opt)(params, opt.init(params), batch)[2].loss)


def test_mesh_errors():
  with pytest.raises(TypeError, match="jax.sharding.Mesh"):
    sharding.data_parallel(lambda p, s, b: (p, s, None), mesh="data")
  mesh = Mesh(np.asarray(jax.devices(), dtype=object), ("batch",))
  with pytest.raises(ValueError, match="data axis 'data'"):
    sharding.shard_batch(np.zeros((4, 2), np.float32), mesh)
  assert sharding.shard_batch(np.zeros((4, 2), np.float32), mesh, axis="batch").sharding.spec == P("batch")
