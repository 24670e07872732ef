"""``jrnn bench --scaling``: jrnn's data-parallel training step over 1, 2, 4 and 8 forced CPU devices.

The step (:mod:`jrnn.sharding`) runs at a fixed global batch on meshes of the first ``n`` CPU devices,
interleaved, after a guard that every ``n`` gives the one-device step. It runs in a new process whose CPU
devices are forced (``--xla_force_host_platform_device_count``): forced devices are not extra processors,
they share this machine's cores (:func:`scaling_note`). :mod:`jrnn.apps.bench` parses the flags and calls
:func:`run`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
import optax

import jrnn
from jrnn.apps import bench_models

Config = bench_models.Config

# --- data parallelism over forced CPU devices (--scaling) --------------------------------------

SCALING_CHILD = "JRNN_BENCH_SCALING_CHILD"  # set in the process that --scaling starts with its devices forced
SCALING_LR = 1e-3  # Adam's learning rate in the scaling study
# float32 tolerances of the guard (scaling_study); the meshes differ only in the order of the batch sums.
GUARD = {"loss_rtol": 1e-5, "grad_rel": 1e-5, "param_atol": SCALING_LR / 100}
DIFFS = ("loss_rel_diff", "grad_norm_rel_diff", "grad_rel_diff", "max_param_diff")  # each row's, against n = 1


def scaling_note(devices: int, cores: int, load: tuple[float, float] | None = None) -> str:
  """What the scaling table means on this machine, in words (it goes into the JSON and under the table).

  ``load``: the 1-minute load average at the start and the end of the run.
  """
  if load is None:
    shared = ""
  elif load[0] >= 1:
    shared = (
      f" This run started at a load average of {load[0]:.2f} on {cores} cores ({load[1]:.2f} at the end, itself "
      "included): other jobs shared the cores, so its steps are slower and noisier than on an idle machine."
    )
  else:
    shared = f" This run started at a load average of {load[0]:.2f} on {cores} cores: the machine was close to idle."
  return (
    f"The {devices} CPU devices are forced host devices (--xla_force_host_platform_device_count={devices}): "
    f"XLA:CPU devices of one process that share this machine's {cores} cores, not extra processors. "
    f"The speed-up over one device is therefore at most about {min(devices, cores)} (the cores), and less "
    "where one device's step already keeps several cores busy with XLA's intra-op threads; devices beyond "
    "the cores add only partitioning, per-device launches and the all-reduce of the gradients. On real "
    "accelerators (one device per chip) the same program is what data parallelism runs. The machine may "
    "be shared with other jobs (load averages recorded): interleaving spreads that noise over every n, "
    "but absolute times are only as steady as the machine."
  ) + shared


def scaling_study(
  cell: str = "lstm",
  hidden: int = 256,
  length: int = 128,
  batch: int = 64,
  devices: Sequence[int] = (1, 2, 4, 8),
  repeats: int = 15,
  warmup: int = 2,
  log=print,
) -> dict:
  """The data-parallel training step over ``n`` CPU devices for each ``n`` in ``devices``, at one global batch.

  The step is the benchmark's training step (``cell`` over ``length`` steps,
  a linear head on every step, MSE, Adam) built with
  ``jrnn.train.make_step(..., mesh=jrnn.sharding.data_mesh(jax.devices("cpu")[:n]))``:
  the ``batch`` sequences are split into ``n`` shares of ``batch / n``, params
  and Adam state are replicated, and the gradient is summed across devices by
  an all-reduce inside the one jitted step.

  Guard: one step from the same params, state and batch on every mesh gives
  what it gives on one device, to float32 tolerance (:data:`GUARD`): the loss
  and the gradient's norm to a relative 1e-5; the gradient itself, read from
  Adam's first moment (``mu = (1 - β₁) g`` after one step), to 1e-5 of each
  leaf's largest entry; the new params to 1% of one Adam step (``lr / 100``).
  Not to a relative 1e-5: Adam's first update is ``lr · g / (|g| + ε)``, so a
  gradient entry near ``ε = 1e-8`` turns float32 reordering noise into a
  visible fraction of ``lr`` (measured: 1.5e-6 at ``|g|`` = 9e-10, LSTM
  H=256). ``result["guard"]["ok"]`` says whether it held.
  Timing: after a warm-up, each repeat runs every ``n`` once in turn; the
  median step, its IQR, the speed-up ``median(1) / median(n)`` and the
  efficiency ``speed-up / n``; also the fastest step and its speed-up, less
  disturbed by other jobs on a shared machine.

  Needs ``max(devices)`` CPU devices in this process; ``jrnn bench --scaling``
  starts a process with them forced. What the numbers mean on a machine with
  fewer cores than devices: :func:`scaling_note`.
  """
  cpus, devices = jax.devices("cpu"), sorted(set(devices))
  if len(cpus) < max(devices) or 1 not in devices:
    raise ValueError(
      f"scaling_study: devices {tuple(devices)} must include 1 and need at most the {len(cpus)} CPU devices "
      "this process has (jrnn bench --scaling starts a process with 8 forced)."
    )
  env = _bench().environment(peers=False)
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
  env.update(
    cpu_devices=len(cpus),
    cores_available=cores,
    xla_flags=os.environ.get("XLA_FLAGS", ""),
    loadavg_start=list(os.getloadavg()),
  )
  cfg = Config(cell, hidden, length, batch)
  forward, params = bench_models.jrnn_model(cfg)
  loss_fn, opt = bench_models.mse_loss(forward), optax.adam(SCALING_LR)
  opt_state, data = opt.init(params), bench_models.data(cfg)
  runs = {}
  for n in devices:
    mesh = jrnn.sharding.data_mesh(cpus[:n])
    step = jrnn.train.make_step(loss_fn, opt, mesh=mesh)
    args = (*jrnn.sharding.replicate((params, opt_state), mesh), jrnn.sharding.shard_batch(data, mesh))
    t0 = time.perf_counter()
    out = jax.block_until_ready(step(*args))
    runs[n] = {"step": step, "args": args, "out": out, "first_call_s": time.perf_counter() - t0}
    log(
      f"devices={n}: first call (compile and one step) {runs[n]['first_call_s']:.2f} s, loss {float(out[2].loss):.6f}"
    )

  def leaves(out):  # new params and the gradient, from Adam's first moment mu = (1 - b1) g
    return [[np.asarray(x) for x in jax.tree_util.tree_leaves(tree)] for tree in (out[0], out[1][0].mu)]

  ref_params, ref_grads = leaves(runs[1]["out"])
  ref_metrics = runs[1]["out"][2]
  rows, ok = [], True
  for n, run in runs.items():
    params_n, grads_n = leaves(run["out"])
    metrics = run["out"][2]
    loss, grad_norm = float(metrics.loss), float(metrics.grad_norm)
    row = {
      "devices": n,
      "batch_per_device": batch // n,
      "first_call_s": run["first_call_s"],
      "loss": loss,
      "grad_norm": grad_norm,
      "loss_rel_diff_vs_1": abs(loss / float(ref_metrics.loss) - 1),
      "grad_norm_rel_diff_vs_1": abs(grad_norm / float(ref_metrics.grad_norm) - 1),
      "grad_rel_diff_vs_1": max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(grads_n, ref_grads)),
      "max_param_diff_vs_1": max(float(np.max(np.abs(a - b))) for a, b in zip(params_n, ref_params)),
      "times_s": [],
    }
    ok = ok and (
      max(row["loss_rel_diff_vs_1"], row["grad_norm_rel_diff_vs_1"]) <= GUARD["loss_rtol"]
      and row["grad_rel_diff_vs_1"] <= GUARD["grad_rel"]
      and row["max_param_diff_vs_1"] <= GUARD["param_atol"]
    )
    rows.append(row)

  for _ in range(warmup):
    for run in runs.values():
      jax.block_until_ready(run["step"](*run["args"]))
  for _ in range(repeats):
    for row, run in zip(rows, runs.values()):
      t0 = time.perf_counter()
      jax.block_until_ready(run["step"](*run["args"]))
      row["times_s"].append(time.perf_counter() - t0)
  env["loadavg_end"] = list(os.getloadavg())
  for row in rows:
    t = sorted(row["times_s"])
    row["median_s"], row["min_s"] = statistics.median(t), t[0]
    row["iqr_s"] = t[(3 * len(t)) // 4] - t[len(t) // 4]
    row["compile_s"] = max(row["first_call_s"] - row["median_s"], 0.0)
    row["speedup_of_min"] = rows[0]["min_s"] / row["min_s"]
    row["speedup"] = rows[0]["median_s"] / row["median_s"]
    row["efficiency"] = row["speedup"] / row["devices"]
    row["ideal_speedup"] = min(row["devices"], cores)
  return {
    "environment": env,
    "config": {**dataclasses.asdict(cfg), "optimizer": f"adam({SCALING_LR:g})", "loss": "mse, every step"},
    "repeats": repeats,
    "warmup": warmup,
    "guard": {
      **GUARD,
      "ok": ok,
      **{key: max(r[f"{key}_vs_1"] for r in rows) for key in DIFFS},
    },
    "note": scaling_note(max(devices), cores, (env["loadavg_start"][0], env["loadavg_end"][0])),
    "rows": rows,
  }


def format_scaling(result: dict) -> str:
  """The scaling table, with the guard and the note, as printed by ``jrnn bench --scaling``."""
  cfg, env, guard = result["config"], result["environment"], result["guard"]
  lines = [
    f"data-parallel training step: {cfg['cell']} H={cfg['hidden']} T={cfg['length']} global B={cfg['batch']}, "
    f"Adam; {env['cpu_devices']} forced CPU devices on {env['cores_available']} cores "
    f"(os.cpu_count() = {env['cpu_count']}), load average {env['loadavg_start'][0]:.2f} -> "
    f"{env['loadavg_end'][0]:.2f}, {result['repeats']} interleaved repeats",
    "| devices | batch/device | median step (ms) | IQR (ms) | fastest (ms) | speed-up vs 1 | efficiency | ideal "
    "| speed-up of fastest | compile (s) |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in result["rows"]:
    lines.append(
      f"| {r['devices']} | {r['batch_per_device']} | {r['median_s'] * 1e3:.2f} | {r['iqr_s'] * 1e3:.2f} | "
      f"{r['min_s'] * 1e3:.2f} | {r['speedup']:.2f} | {100 * r['efficiency']:.0f}% | {r['ideal_speedup']} | "
      f"{r['speedup_of_min']:.2f} | {r['compile_s']:.2f} |"
    )
  lines.append(
    f"guard ({'held' if guard['ok'] else 'FAILED'}): one step on every mesh against one device: "
    f"loss {guard['loss_rel_diff']:.1e} and gradient norm {guard['grad_norm_rel_diff']:.1e} relative "
    f"(tolerance {guard['loss_rtol']:g}), gradient {guard['grad_rel_diff']:.1e} of each leaf's largest entry "
    f"({guard['grad_rel']:g}), params {guard['max_param_diff']:.1e} absolute ({guard['param_atol']:g})"
  )
  lines.append(result["note"])
  return "\n".join(lines)


def _run_with_forced_devices(argv: Sequence[str], count: int) -> int:
  """``python -m jrnn.apps.bench argv`` in a new process with ``count`` forced CPU devices; its exit code.

  The device count is fixed when JAX starts its CPU client, so the process
  that measures has to be a new one: this one may have started JAX already
  (``jrnn`` in a notebook, under pytest) with one device. The child's output
  is passed on line by line.
  """
  flags = re.sub(r"--xla_force_host_platform_device_count=\S*", "", os.environ.get("XLA_FLAGS", "")).split()
  root = os.path.dirname(os.path.dirname(os.path.abspath(jrnn.__file__)))  # where this jrnn is imported from
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_NUM_CPU_DEVICES=str(count),
    XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={count}"]),
    PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
    **{SCALING_CHILD: "1"},
  )
  command = [sys.executable, "-m", "jrnn.apps.bench", *argv]
  with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as proc:
    assert proc.stdout is not None
    for line in proc.stdout:
      print(line, end="", flush=True)
  return proc.returncode


def run(a, argv) -> int:
  """Runs the study for parsed flags ``a`` (in a new process first); writes the JSON; the exit code."""
  if os.environ.get(SCALING_CHILD) != "1":
    return _run_with_forced_devices(sys.argv[1:] if argv is None else argv, max(a.devices))
  result = scaling_study(a.cells[0], a.hidden[0], a.lengths[0], a.batch, a.devices, a.repeats)
  out = os.path.join(a.out, "scaling")  # a different schema from the grid's files
  os.makedirs(out, exist_ok=True)
  path = _bench()._stem(out, result["environment"]) + ("-quick" if a.quick else "") + ".json"
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  print(format_scaling(result))
  print(f"wrote {path}")
  return 0 if result["guard"]["ok"] else 1


def _bench():
  from jrnn.apps import bench  # bench imports this module for --scaling; the helpers it shares live there

  return bench
