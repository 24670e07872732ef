"""Benchmark jrnn against Flax linen ``nn.RNN`` and PyTorch, across sequence lengths.

One process, interleaved: each repeat times every library once in turn, so
machine noise hits them all alike; we report medians, spreads and ratios.

The model is the same for every library: a cell (I -> H) over T steps, a linear
head to O on every step, MSE against a target on every step, batch B.

* ``forward``: the outputs ``ys [B, T, O]`` (inference; torch under no_grad).
* ``train``: forward + BPTT + one Adam update.

FLOPs counted per step forward: ``2 B (I + H) G H + 2 B H O`` (``G`` = 1/3/4
gates for elman/gru/lstm); a training step is counted as 3x forward. Achieved
GFLOP/s are reported against a measured float32 matrix-multiply peak of the same
device.

``--scaling`` times something else: jrnn's data-parallel training step
(:mod:`jrnn.sharding`) over 1, 2, 4 and 8 CPU devices at a fixed global batch,
in a new process whose CPU devices are forced
(``--xla_force_host_platform_device_count``). Forced devices are not extra
processors: they share this machine's cores (:mod:`jrnn.apps.bench_scaling`).

Flax and torch are imported lazily: ``import jrnn`` never imports them.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jrnn.apps import bench_models
from jrnn.apps import bench_scaling
from jrnn.apps.bench_plot import figure as figure
from jrnn.apps.bench_plot import plot as plot

GATES = bench_models.GATES
Config = bench_models.Config
# bench_models' columns and kernel="cpu" (jrnn._cpu_kernel: the time loop as one compiled call per layer and pass).
LIBRARIES = {**bench_models.LIBRARIES, "jrnn_cpu": functools.partial(bench_models.jrnn_fns, kernel="cpu")}
_jrnn_fns = bench_models.jrnn_fns


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  """Measured float32 matmul throughput of the default JAX device, in GFLOP/s."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a))
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / min(times) / 1e9


def _memory_bytes(lowered):
  if lowered is None:
    return None
  fn, args = lowered
  try:
    stats = fn.lower(*args).compile().memory_analysis()
    return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes)
  except Exception:  # not every backend reports memory
    return None


def bench_config(
  cfg: Config,
  mode: str,
  libs: Sequence[str],
  repeats: int,
  warmup: int,
  unroll: int | None = None,
  budget_s: float = 60.0,
):
  """Times one config for every library, interleaved; returns {lib: stats}."""
  calls, results = {}, {}
  for lib in libs:
    t0 = time.perf_counter()
    call, lowered = LIBRARIES[lib](cfg, mode, unroll)
    call()
    first = time.perf_counter() - t0
    calls[lib] = call
    results[lib] = {"first_call_s": first, "memory_bytes": _memory_bytes(lowered), "times_s": []}
  # Long rows (a slow first call) get fewer repeats so the full grid stays within reach of a
  # 2-core CPU: at least 3, and about `budget_s` of timed calls per library.
  slowest = max(r["first_call_s"] for r in results.values())
  if slowest * repeats > budget_s:
    repeats, warmup = max(3, int(budget_s / slowest)), min(warmup, 1)
  for _ in range(warmup):
    for lib in libs:
      calls[lib]()
  for _ in range(repeats):
    for lib in libs:
      t0 = time.perf_counter()
      calls[lib]()
      results[lib]["times_s"].append(time.perf_counter() - t0)
  for r in results.values():
    t = sorted(r["times_s"])
    r["median_s"] = statistics.median(t)
    r["iqr_s"] = t[(3 * len(t)) // 4] - t[len(t) // 4]
    r["compile_s"] = max(r["first_call_s"] - r["median_s"], 0.0)
    r["gflops"] = cfg.flops(mode) / r["median_s"] / 1e9
    r["repeats"] = len(t)
  return results


REMATS = {"none": None, "step": "step", "sqrt": "sqrt"}


def remat_study(cell="lstm", hidden=128, length=16384, batch=32, repeats=3, log=print):
  """Training step at one long ``T`` with each ``remat`` setting: activation memory and time.

  Memory is XLA's ``temp_size_in_bytes`` of the compiled step (the buffers
  live during the step other than params, optimizer state and data: on a
  backward pass, mostly the stored activations); time is the median step,
  interleaved across the settings.
  """
  cfg = Config(cell, hidden, length, batch)
  fns = {name: _jrnn_fns(cfg, "train", remat=remat) for name, remat in REMATS.items()}
  out = {}
  for name, (call, (fn, args)) in fns.items():
    stats = fn.lower(*args).compile().memory_analysis()
    if stats is None:
      raise RuntimeError(f"the remat study needs XLA's memory analysis, which {jax.default_backend()} does not give")
    out[name] = {"temp_bytes": int(stats.temp_size_in_bytes), "times_s": []}
    call()
  for _ in range(repeats):
    for name, (call, _) in fns.items():
      t0 = time.perf_counter()
      call()
      out[name]["times_s"].append(time.perf_counter() - t0)
  base = out["none"]
  for name, r in out.items():
    r["median_s"] = statistics.median(r["times_s"])
    r["memory_ratio"] = base["temp_bytes"] / r["temp_bytes"]
    r["time_ratio"] = r["median_s"] / base["median_s"]
    log(
      f"remat={name:>4} {cell} H={hidden} T={length} B={batch}: temp {r['temp_bytes'] / 2**20:9.1f} MiB "
      f"(none/this {r['memory_ratio']:5.2f}x), step {r['median_s']:7.2f} s (this/none {r['time_ratio']:4.2f}x)"
    )
  return {"environment": environment(), "config": dataclasses.asdict(cfg), "remat": out}


def environment(peers: bool = True) -> dict:
  """Versions, device, machine and date; with ``peers``, Flax's and PyTorch's versions where installed."""
  env = {
    "jax": jax.__version__,
    "device": str(jax.devices()[0].device_kind),
    "backend": jax.default_backend(),
    "platform": platform.platform(),
    "cpu_count": os.cpu_count(),
    "python": platform.python_version(),
    "date": datetime.date.today().isoformat(),
  }
  if not peers:
    return env
  try:
    import flax

    env["flax"] = flax.__version__
  except ImportError:
    pass
  try:
    import torch

    env["torch"] = torch.__version__
    env["torch_threads"] = torch.get_num_threads()
  except ImportError:
    pass
  return env


def sweep(
  cells=("elman", "gru", "lstm"),
  hidden=(64, 256, 1024),
  lengths=(16, 128, 1024, 4096),
  modes=("forward", "train"),
  libs=("jrnn", "flax", "torch"),
  batch=32,
  io=32,
  repeats=7,
  warmup=2,
  unroll=None,
  log=print,
  skip=(),
  on_row=None,
):
  """Runs the grid; returns a JSON-ready dict with the environment, the peak and every row.

  ``skip``: ``(H, T)`` pairs left out (recorded in the result). ``on_row``:
  called with the result so far after every row (to save a long sweep as it
  goes).
  """
  peak = matmul_peak_gflops()
  rows = []

  def result():
    return {
      "environment": environment(),
      "matmul_peak_gflops": peak,
      "unroll": unroll,
      "rows": rows,
      "skipped": [list(hw) for hw in skip],
    }

  for mode in modes:
    for cell in cells:
      for H in hidden:
        for T in lengths:
          if (H, T) in skip:
            continue
          cfg = Config(cell, H, T, batch, io, io)
          res = bench_config(cfg, mode, libs, repeats, warmup, unroll)
          rows.append({"mode": mode, **dataclasses.asdict(cfg), "results": res})
          log(format_row(rows[-1], libs, peak))
          if on_row is not None:
            on_row(result())
  return result()


def format_row(row, libs, peak):
  r = row["results"]
  cells = [f"{row['mode']:>7} {row['cell']:>5} H={row['hidden']:<4} T={row['length']:<5}"]
  for lib in libs:
    cells.append(f"{lib} {r[lib]['median_s'] * 1e3:9.2f} ms")
  first = libs[0]
  for lib in libs[1:]:
    cells.append(f"{first}/{lib} {r[first]['median_s'] / r[lib]['median_s']:5.2f}")
  cells.append(f"{first} {r[first]['gflops']:6.1f} GFLOP/s ({100 * r[first]['gflops'] / peak:4.1f}% of peak)")
  return " | ".join(cells)


# Defaults for each kind of run, over COMMON; a flag given on the command line wins.
COMMON = {"cells": tuple(GATES), "batch": 32, "repeats": 7}
GRID = {"hidden": (64, 256, 1024), "lengths": (16, 128, 1024, 4096)}
QUICK = {"hidden": (64, 256), "lengths": (16, 128, 512), "repeats": 5}
REMAT_STUDY = {"hidden": (128,), "lengths": (16384,)}
SCALING = {"cells": ("lstm",), "hidden": (256,), "lengths": (128,), "batch": 64, "repeats": 15}
SCALING_QUICK = {"cells": ("lstm",), "hidden": (8,), "lengths": (4,), "batch": 8, "repeats": 2}


def _parser():
  import argparse

  p = argparse.ArgumentParser(prog="jrnn bench", description="jrnn vs Flax vs PyTorch across sequence lengths.")
  p.add_argument(
    "--quick",
    action="store_true",
    help=f"a small grid that finishes in a few minutes on 2 CPU cores (--hidden "
    f"{_csv(QUICK['hidden'])} --lengths {_csv(QUICK['lengths'])} --repeats {QUICK['repeats']} unless given); "
    f"with --scaling, a tiny model (H={SCALING_QUICK['hidden'][0]} T={SCALING_QUICK['lengths'][0]} "
    f"B={SCALING_QUICK['batch']}) that checks the harness in seconds",
  )
  p.add_argument(
    "--cells", default=None, help=f"cells, comma-separated (default {_csv(COMMON['cells'])}; lstm for --scaling)"
  )
  p.add_argument(
    "--hidden",
    default=None,
    help=f"hidden sizes, comma-separated (default {_csv(GRID['hidden'])}; "
    f"{_csv(REMAT_STUDY['hidden'])} for --remat-study, {_csv(SCALING['hidden'])} for --scaling)",
  )
  p.add_argument(
    "--lengths",
    default=None,
    help=f"sequence lengths T, comma-separated (default {_csv(GRID['lengths'])}; "
    f"{_csv(REMAT_STUDY['lengths'])} for --remat-study, {_csv(SCALING['lengths'])} for --scaling)",
  )
  p.add_argument("--modes", default="forward,train")
  p.add_argument("--libs", default="jrnn,flax,torch")
  p.add_argument(
    "--batch",
    type=int,
    default=None,
    help=f"batch size B (default {COMMON['batch']}; the global batch of --scaling, {SCALING['batch']})",
  )
  p.add_argument(
    "--repeats",
    type=int,
    default=None,
    help=f"timed repeats (default {COMMON['repeats']}; {SCALING['repeats']} for --scaling)",
  )
  p.add_argument(
    "--unroll",
    type=int,
    default=None,
    help="steps per scan iteration for jrnn and Flax (default: each library's own: jrnn's 'auto', Flax's 1)",
  )
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--skip", default="", help="H:T pairs to leave out, e.g. 1024:4096 (comma-separated)")
  p.add_argument(
    "--remat-study",
    action="store_true",
    help="instead of the grid: the training step with remat none/step/sqrt (activation memory "
    "and time) at each of --lengths (default 16384); the first of --cells and of --hidden "
    "and --batch pick the model; one JSON per length in OUT/remat/",
  )
  p.add_argument(
    "--scaling",
    action="store_true",
    help="instead of the grid: jrnn's data-parallel training step (jrnn.sharding) over each of --devices CPU "
    "devices at the fixed global --batch, interleaved: median step, speed-up and efficiency, after checking that "
    "every device count gives the step one device gives; the first of --cells, --hidden and --lengths pick the "
    "model. Runs in a new process with the CPU devices forced: they share this machine's cores. JSON in "
    "OUT/scaling/",
  )
  p.add_argument(
    "--devices", default="1,2,4,8", help="device counts for --scaling, comma-separated, with 1 (default 1,2,4,8)"
  )
  return p


def _csv(values):
  return ",".join(str(v) for v in values)


def _parse(argv=None):
  """Parsed flags with ``hidden``, ``lengths``, ``cells``, ``modes``, ``libs``, ``skip``, ``devices`` as tuples.

  ``--cells``, ``--hidden``, ``--lengths``, ``--batch`` and ``--repeats``
  default to ``None`` on the command line and are filled here from
  :data:`COMMON` and :data:`GRID`, :data:`QUICK`, :data:`REMAT_STUDY`,
  :data:`SCALING` or :data:`SCALING_QUICK`, whichever run was asked for.
  """
  p = _parser()
  a = p.parse_args(argv)
  if a.remat_study and a.scaling:
    p.error("--remat-study and --scaling are different runs; ask for one")
  if a.scaling:
    run = SCALING_QUICK if a.quick else SCALING
  else:
    run = REMAT_STUDY if a.remat_study else QUICK if a.quick else GRID
  defaults = {**COMMON, **run}
  try:
    ints = lambda s: tuple(int(v) for v in s.split(","))
    a.hidden = defaults["hidden"] if a.hidden is None else ints(a.hidden)
    a.lengths = defaults["lengths"] if a.lengths is None else ints(a.lengths)
    a.devices = tuple(sorted(set(ints(a.devices))))
    a.skip = tuple(tuple(int(v) for v in pair.split(":")) for pair in a.skip.split(",") if pair)
  except ValueError as e:
    p.error(f"--hidden, --lengths, --devices and --skip take comma-separated integers (H:T pairs for --skip) ({e})")
  a.batch = defaults["batch"] if a.batch is None else a.batch
  a.repeats = defaults["repeats"] if a.repeats is None else a.repeats
  if any(v < 1 for v in a.hidden + a.lengths + a.devices) or a.batch < 1 or a.repeats < 1:
    p.error("--hidden, --lengths, --devices, --batch and --repeats take positive integers")
  if a.scaling and (a.devices[0] != 1 or any(a.batch % n for n in a.devices)):
    p.error(f"--devices {_csv(a.devices)} must include 1, and --batch {a.batch} must be divisible by each of them")
  a.cells = defaults["cells"] if a.cells is None else tuple(a.cells.split(","))
  a.modes, a.libs = tuple(a.modes.split(",")), tuple(a.libs.split(","))
  for name, values, allowed in (
    ("--cells", a.cells, GATES),
    ("--modes", a.modes, ("forward", "train")),
    ("--libs", a.libs, LIBRARIES),
  ):
    bad = [v for v in values if v not in allowed]
    if bad:
      p.error(f"{name}: unknown {bad}; choose from {sorted(allowed)}")
  if not a.libs[0].startswith("jrnn"):
    p.error("--libs must start with jrnn or a jrnn variant (ratios are first/peer)")
  return a


def _stem(out, env):
  return os.path.join(out, f"{env['backend']}-{env['device'].replace(' ', '_')}-{env['date']}")


def main(argv=None) -> int:
  a = _parse(argv)
  if a.scaling:
    return bench_scaling.run(a, argv)
  if a.remat_study:
    out = os.path.join(a.out, "remat")  # a different schema from the grid's files
    os.makedirs(out, exist_ok=True)
    for length in a.lengths:
      result = remat_study(a.cells[0], a.hidden[0], length, a.batch, repeats=3)
      path = f"{_stem(out, result['environment'])}-T{length}.json"
      with open(path, "w") as f:
        json.dump(result, f, indent=1)
      print(f"wrote {path}")
    return 0
  os.makedirs(a.out, exist_ok=True)
  stem = _stem(a.out, environment(peers=False)) + ("-quick" if a.quick else "")

  def save(result):  # after every row, replacing the file whole: a sweep cut short keeps its rows
    with open(stem + ".json.tmp", "w") as f:
      json.dump(result, f, indent=1)
    os.replace(stem + ".json.tmp", stem + ".json")

  result = sweep(
    a.cells, a.hidden, a.lengths, a.modes, a.libs, a.batch, 32, a.repeats, 2, a.unroll, skip=a.skip, on_row=save
  )
  plot(result, stem + ".png")
  print(f"wrote {stem}.json and {stem}.png (matmul peak {result['matmul_peak_gflops']:.1f} GFLOP/s)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
