"""Sequence parallelism on 8 forced CPU devices: memory per device and step time against one device.

One training-like step, the gradient w.r.t. the params of ``mean(hs²)`` over one
long sequence (``B`` small), run three ways:

* ``unsharded``: ``jax.jit`` of ``jrnn.unroll`` on one device (device 0), with
  its defaults (on CPU: the sequential scan, the projection per step);
* ``one_device``: ``jrnn.sharding.sequence_parallel_unroll`` over a mesh of one
  device: the same chunk scan and correction as the sharded run, unsplit, which
  separates the cost of the algorithm from the effect of splitting;
* ``sharded``: ``jax.jit`` of ``jrnn.sharding.sequence_parallel_unroll`` with
  ``T`` split over the 8 devices of a ``time`` mesh axis, ``xs`` placed split.

Memory is XLA's own account of the compiled program
(``jax.jit(f).lower(...).compile().memory_analysis()``): argument, output and
temporary buffers **per device** (a ``shard_map`` program is one SPMD program,
so its sizes are one device's). It needs only compilation, so it is measured at
several lengths. Time is measured at the longest: a warm-up call (compile
included), then repeats that alternate the three runs (interleaved, so load
from other jobs hits them alike); medians and their ratios.

Honest about the machine: the 8 devices are forced host devices
(``--xla_force_host_platform_device_count=8``) that share this machine's CPU
cores (``os.cpu_count()``, 2 here): they can split the memory 8 ways but the
time at most ``os.cpu_count()`` ways. The numbers say what sequence parallelism
costs and saves in memory, not what 8 real accelerators would gain in time.

Usage: ``PYTHONPATH=. python benchmarks/sequence_parallel.py [--quick]``
writes ``benchmarks/results/sequence_parallel/<backend>-<date>[-quick].json`` (a folder of its own: the
top level of ``results/`` holds the sweeps of ``jrnn bench``, which notebook 05 reads).
"""

from __future__ import annotations

import os

DEVICES = 8
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
  ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402  (after XLA_FLAGS, which must be set before JAX starts)
import datetime  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jrnn  # noqa: E402
from jrnn._seqpar import sequence_parallel_unroll  # noqa: E402

CELLS = {
  "min_gru": lambda H: jrnn.min_gru(H),
  "min_lstm_log": lambda H: jrnn.min_lstm(H, log_space=True),
  "lru": lambda H: jrnn.lru(H, r_min=0.9, r_max=0.999),
}
MiB = 2**20


def steps(cell, mesh, scan):
  """The jitted steps ``(params, xs) -> (loss, grads)``: ``jrnn.unroll`` on one device, the sequence-parallel
  algorithm on a mesh of one device (its chunk scan and correction, no split), and time split over ``mesh``."""

  def loss(run):
    def f(params, xs):
      _, hs = jax.vmap(lambda x: run(params, x))(xs) if xs.ndim == 3 else run(params, xs)
      return jnp.mean(jnp.square(hs))

    return jax.jit(jax.value_and_grad(f))

  one = jrnn.sharding.data_mesh(jax.devices()[:1], axis="time")
  return {
    "unsharded": loss(lambda p, x: jrnn.unroll(cell, p, x, scan=scan)),
    "one_device": loss(lambda p, x: sequence_parallel_unroll(cell, p, x, mesh=one, scan=scan)),
    "sharded": loss(lambda p, x: sequence_parallel_unroll(cell, p, x, mesh=mesh, scan=scan)),
  }


def placed(mesh, params, xs):
  """``(params, xs)`` for each run: on device 0, and params replicated with ``xs`` split along time."""
  one = jax.devices()[0]
  time_spec = P(None, "time") if xs.ndim == 3 else P("time")
  return {
    "unsharded": jax.device_put((params, xs), one),
    "one_device": jax.device_put((params, xs), one),
    "sharded": (jax.device_put(params, NamedSharding(mesh, P())), jax.device_put(xs, NamedSharding(mesh, time_spec))),
  }


def memory(fn, args):
  """XLA's memory account of ``fn`` compiled for ``args``, per device, in MiB."""
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  m = compiled.memory_analysis()
  sizes = {
    "argument": m.argument_size_in_bytes,
    "output": m.output_size_in_bytes,
    "temp": m.temp_size_in_bytes,
    "alias": m.alias_size_in_bytes,
  }
  sizes["total"] = sizes["argument"] + sizes["output"] + sizes["temp"] - sizes["alias"]
  return {k + "_mib": v / MiB for k, v in sizes.items()}, compile_s


def inputs(cell, T, batch, input_size):
  params = cell.init(jax.random.key(0), input_size)
  shape = (T, input_size) if batch == 1 else (batch, T, input_size)
  xs = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  return params, xs


def main(argv=None):
  parser = argparse.ArgumentParser(description="Sequence parallelism on 8 forced CPU devices: memory and time.")
  parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=sorted(CELLS))
  parser.add_argument("--length", type=int, default=2**20, help="T for the timed runs")
  parser.add_argument("--memory-lengths", type=int, nargs="+", default=[2**14, 2**16, 2**18, 2**20])
  parser.add_argument("--batch", type=int, default=1, help="1: one sequence [T, I]; else [B, T, I]")
  parser.add_argument("--hidden", type=int, default=32)
  parser.add_argument("--input", type=int, default=32)
  parser.add_argument("--scan", default="auto", help="the chunk scan (and the unsharded scan)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--quick", action="store_true", help="T = 2^14, lengths 2^12 and 2^14, 2 repeats")
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "sequence_parallel"))
  args = parser.parse_args(argv)
  if args.quick:
    args.length, args.memory_lengths, args.repeats = 2**14, [2**12, 2**14], 2
  if jax.device_count() != DEVICES:
    raise SystemExit(f"expected {DEVICES} forced CPU devices, got {jax.device_count()} (was JAX started already?)")
  mesh = jrnn.sharding.data_mesh(axis="time")
  load = [os.getloadavg()]
  started = time.perf_counter()
  memory_rows, time_rows = [], []
  for name in args.cells:
    cell = CELLS[name](args.hidden)
    for T in sorted(set(args.memory_lengths) | {args.length}):
      params, xs = inputs(cell, T, args.batch, args.input)
      fns = steps(cell, mesh, args.scan)
      where = placed(mesh, params, xs)
      row = {"cell": name, "T": T}
      for run in fns:
        row[run], row[run + "_compile_s"] = memory(fns[run], where[run])
      for k in ("argument_mib", "temp_mib", "total_mib"):
        row["ratio_" + k] = row["sharded"][k] / row["unsharded"][k]
        row["ratio_to_one_device_" + k] = row["sharded"][k] / row["one_device"][k]
      memory_rows.append(row)
      print(
        f"{name:13s} T={T:8d} per-device total MiB: unsharded {row['unsharded']['total_mib']:9.1f}  "
        f"one device {row['one_device']['total_mib']:9.1f}  sharded {row['sharded']['total_mib']:8.1f}  "
        f"ratio {row['ratio_total_mib']:.3f} (to one device {row['ratio_to_one_device_total_mib']:.3f})",
        flush=True,
      )
      if args.length != T:
        continue
      results, first, times = {}, {}, {run: [] for run in fns}
      for run in fns:  # warm-up: the first call compiles (jit's own cache) and runs
        t0 = time.perf_counter()
        results[run] = jax.block_until_ready(fns[run](*where[run]))
        first[run] = time.perf_counter() - t0
      for _ in range(args.repeats):
        for run in fns:
          t0 = time.perf_counter()
          jax.block_until_ready(fns[run](*where[run]))
          times[run].append(time.perf_counter() - t0)
      (lu, gu), (ls, gs) = results["unsharded"], results["sharded"]
      # the one-device run's gradient is not compared: same algorithm as the sharded one
      diff = max(
        float(jnp.max(jnp.abs(a - jax.device_put(b, jax.devices()[0]))))
        for a, b in zip(jax.tree_util.tree_leaves(gu), jax.tree_util.tree_leaves(gs))
      )
      med = {run: statistics.median(times[run]) for run in fns}
      time_rows.append(
        {
          "cell": name,
          "T": T,
          "times_s": {run: times[run] for run in fns},
          "first_call_s": first,
          "median_s": med,
          "ratio_sharded_over_unsharded": med["sharded"] / med["unsharded"],
          "ratio_sharded_over_one_device": med["sharded"] / med["one_device"],
          "ratio_one_device_over_unsharded": med["one_device"] / med["unsharded"],
          "loss": {"unsharded": float(lu), "sharded": float(ls)},
          "max_abs_grad_diff_float32": diff,
          "max_abs_grad": max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(gu)),
        }
      )
      print(
        f"{name:13s} T={T:8d} step median: unsharded {med['unsharded']:.3f} s  one device "
        f"{med['one_device']:.3f} s  sharded {med['sharded']:.3f} s  ratio {med['sharded'] / med['unsharded']:.3f} "
        f"(to one device {med['sharded'] / med['one_device']:.3f})  grad diff {diff:.2e}",
        flush=True,
      )
      load.append(os.getloadavg())
  result = {
    "environment": {
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": jax.device_count(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "cpu_count": os.cpu_count(),
      "machine": platform.machine(),
      "python": platform.python_version(),
      "loadavg_1_5_15": load,
      "date": datetime.date.today().isoformat(),
    },
    "config": {
      k: getattr(args, k) for k in ("cells", "length", "memory_lengths", "batch", "hidden", "input", "scan", "repeats")
    },
    "memory": memory_rows,
    "time": time_rows,
    "seconds": time.perf_counter() - started,
    "note": (
      f"{DEVICES} forced host devices share this machine's {os.cpu_count()} CPU cores: the memory per device is what "
      "an 8-device run needs; the time is bounded by the cores, not by the devices, and other jobs ran beside it "
      "(loadavg)."
    ),
  }
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = (
    out
    / f"{jax.default_backend()}-{result['environment']['date']}{'-quick' if args.quick else ''}.json"
  )
  path.write_text(json.dumps(result, indent=1) + "\n")
  print(f"wrote {path}")
  return result


if __name__ == "__main__":
  main()
