"""XLA:CPU compiler flags on jrnn's training and forward steps, against the default compilation.

Issue 15 reports that ``--xla_cpu_multi_thread_eigen=false`` moved the LSTM step
by 10-20% on this machine and that ``--xla_cpu_use_xnnpack=true`` and
``--xla_cpu_use_onednn=true`` moved it too. This script measures each setting per
shape; it changes no default anywhere.

Method:

* **Which flags exist.** Each flag of :data:`FLAGS` (and :data:`PROBE_ONLY`) is
  first passed alone, as ``XLA_FLAGS``, to a subprocess that jits one tiny
  program: an unknown flag makes XLA abort, so the exit status says whether the
  installed jaxlib accepts it. Settings that use a rejected flag are dropped.
* **One process per setting.** XLA reads ``XLA_FLAGS`` once, when the JAX
  backend starts, so every setting (``baseline`` = no extra flags, each single
  flag, the combinations asked for) runs in a fresh worker process of this
  script with ``XLA_FLAGS`` set.
* **Interleaved in the worker.** A worker times jrnn and PyTorch on each config
  of the grid with :func:`jrnn.apps.bench.bench_config` (the models of
  :mod:`jrnn.apps.bench_models`: cell + linear head + MSE, B=32, I=O=32; a
  forward pass, or forward + BPTT + Adam), alternating the two libraries within
  each repeat. PyTorch is the reference the XLA flags do not compile (they reach
  it only through contention for the cores): jrnn/torch in one process cancels
  part of the machine's drift between processes, and torch's own
  setting/baseline shows how much drift there was.
* **Round-robin across settings.** The parent runs every setting once per round,
  for several rounds, the order rotated by one each round, so drift (other jobs
  on the cores) hits all settings alike. For each config and setting it reports
  the median over rounds of: jrnn's median time, jrnn/torch, and
  setting/baseline = the setting's jrnn time over the baseline's jrnn time in the
  same round (and the same with each side divided by its own process's torch
  time, which also cancels drift between the two processes of a round).
* **Disturbed processes.** A worker does the same work in every setting, so one
  whose wall time exceeds 1.25x the median worker's ran while other jobs held
  the cores; it is marked ``disturbed``, and the ``*_clean`` statistics use only
  the rounds where neither the setting's nor the baseline's worker was.
* **Crashes are results.** A worker that dies (oneDNN on the dots aborts on
  jrnn's LSTM here) is recorded with its exit status and stderr, and its setting
  is left out of the later rounds and of the summary.
* **What a flag did to the program.** Each worker also compiles the LSTM
  (H=64, T=128) forward and training step once, records a hash of XLA's
  optimised HLO and a digest of the forward output, so the report says whether a
  flag changed the program, only the generated code or runtime, or the numbers.

Usage (from the repository root; the parent starts the workers itself)::

  PYTHONPATH=. python benchmarks/xla_cpu_flags.py [--quick] [--rounds 3] [--settings all|baseline,eigen1,...]

writes ``benchmarks/results/xla_flags/cpu-<date>[-<tag>][-quick].json``. To time a fixed jrnn while the tree is
being edited, put a copy first on the path (``git archive HEAD jrnn | tar -x -C DIR``, ``PYTHONPATH=DIR``); the
environment records which jrnn was imported and whether its files are HEAD's. Nothing here sets a flag for anyone
else: the flags live only in the workers' environment.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

# The settings under test, by short name: one flag each, or two where the first does nothing alone. In this
# jaxlib (0.10.2) dots already run through YNNPACK (XNNPACK's successor, ``"kind":"__ynn_fusion"`` in the
# optimised HLO: ``--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT`` is the
# default), ``--xla_cpu_use_xnnpack=true`` and ``--xla_cpu_use_onednn=true`` alone leave the program as it
# is, and oneDNN takes the dots only when its fusion type is named too.
FLAGS = {
  "eigen1": "--xla_cpu_multi_thread_eigen=false",  # the lever: Eigen's intra-op thread pool off
  "xnnpack": "--xla_cpu_use_xnnpack=true",  # the issue's; the default program here (a null control)
  "onednn": "--xla_cpu_use_onednn=true",  # the issue's; alone, the default program here
  "onednn_dot": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
  "no_ynn": "--xla_cpu_experimental_ynn_fusion_type=",  # dots by XLA's own emitter / Eigen, not YNNPACK
  "fastmath": "--xla_cpu_enable_fast_math=true",  # LLVM fast math: approximate exp/tanh, reassociation
  "vec512": "--xla_cpu_prefer_vector_width=512",  # AVX-512 vectors in generated loops (default 256)
  "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false",  # the older elemental fusion codegen
  "no_conc_sched": "--xla_cpu_enable_concurrency_optimized_scheduler=false",  # memory-first HLO schedule
  "legacy_runtime": "--xla_cpu_use_thunk_runtime=false",  # the pre-thunk CPU runtime, where still honoured
}
# Probed and recorded, not swept: flags the issue or XLA's sources name that do not bear on a step's speed
# here, or that this jaxlib may not know.
PROBE_ONLY = (
  "--xla_cpu_use_xnnpack=false",
  "--xla_cpu_parallel_codegen_split_count=1",
  "--xla_cpu_disable_loop_unrolling=true",
  "--xla_cpu_small_while_loop_byte_threshold=0",
)
# The default sweep, chosen from a two-round LSTM screen of every setting (``--settings all --cells lstm``,
# results/xla_flags/cpu-2026-11-23-screen-lstm.json): the three flags, the two that did not lose there,
# their combination with the lever, and oneDNN on the dots (which crashes here; the crash is recorded).
# ``no_ynn`` (1.7-2.2x slower training at H >= 256), ``no_fusion_emitters`` (1.6-1.9x slower forward) and the
# scheduler and runtime flags (within the screen's noise) are left to ``--settings all``.
SETTINGS = ("baseline", "eigen1", "xnnpack", "onednn", "onednn_dot", "fastmath", "vec512", "eigen1+fastmath+vec512")
CELLS = ("lstm", "gru", "elman")
MODES = ("train", "forward")
SHAPES = ((64, 128), (64, 1024), (256, 128), (1024, 16))
QUICK = {"cells": ("lstm",), "modes": ("forward", "train"), "shapes": ((32, 16),), "rounds": 2, "repeats": 3}
CHECK = ("lstm", 64, 128)  # the config whose program and output every worker fingerprints

_TABLE_LINE = re.compile(r"^(FileNames|FunctionNames|FileLocations|StackFrames)$|^\d+ ")
_METADATA = re.compile(r", metadata=\{[^}]*\}")
_PROBE_PROGRAM = (
  "import jax, jax.numpy as jnp; print(float(jax.jit(lambda x: jnp.tanh(x @ x).sum())(jnp.ones((8, 8)))))"
)


def setting_flags(name: str) -> str:
  """``XLA_FLAGS`` for a setting name: ``baseline``, a key of :data:`FLAGS`, or keys joined by ``+``."""
  if name == "baseline":
    return ""
  return " ".join(FLAGS[part] for part in name.split("+"))


def probe(flag: str, timeout: float = 300.0) -> dict:
  """Whether this jaxlib accepts ``flag`` in ``XLA_FLAGS``: a tiny jitted program in a subprocess."""
  env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()}
  p = subprocess.run(
    [sys.executable, "-c", _PROBE_PROGRAM], env=env, capture_output=True, text=True, timeout=timeout, check=False
  )
  message = "" if p.returncode == 0 else (p.stderr.strip().splitlines() or [""])[-1][-300:]
  return {"accepted": p.returncode == 0, "returncode": p.returncode, "message": message}


# --- worker -------------------------------------------------------------------------------------


def _strip_metadata(hlo: str) -> str:
  """The HLO text without op metadata and stack-frame tables (source paths and line numbers)."""
  lines = [line for line in hlo.splitlines() if not _TABLE_LINE.match(line)]
  return _METADATA.sub("", "\n".join(lines))


def _fingerprint() -> dict:
  """Hashes of XLA's optimised HLO for the :data:`CHECK` config, and a digest of its forward output."""
  import jax.numpy as jnp
  import numpy as np

  from jrnn.apps import bench_models

  cfg = bench_models.Config(*CHECK)
  out = {}
  for mode in MODES:
    call, (fn, args) = bench_models.jrnn_fns(cfg, mode)
    hlo = fn.lower(*args).compile().as_text() or ""
    out[f"{mode}_hlo_sha1"] = hashlib.sha1(_strip_metadata(hlo).encode()).hexdigest()[:12]
    out[f"{mode}_library_fusions"] = dict(collections.Counter(re.findall(r'"kind":"(__\w+_fusion)"', hlo)))
    if mode == "forward":
      ys = np.asarray(call())
      out["forward_abs_sum"] = float(np.abs(ys).astype(np.float64).sum())
      out["forward_last_step"] = [float(v) for v in ys[0, -1, :8]]
    else:
      _, _, metrics = call()
      out["train_loss"] = float(jnp.asarray(metrics.loss))
  return out


def worker(spec: dict) -> dict:
  """One setting's timings: every config of ``spec``, jrnn and torch interleaved (runs in its own process)."""
  from jrnn.apps import bench
  from jrnn.apps import bench_models

  t0 = time.perf_counter()
  load_start = os.getloadavg()
  check = _fingerprint()
  rows = []
  for mode in spec["modes"]:
    for cell in spec["cells"]:
      for hidden, length in spec["shapes"]:
        cfg = bench_models.Config(cell, hidden, length)
        res = bench.bench_config(
          cfg, mode, ("jrnn", "torch"), spec["repeats"], spec["warmup"], budget_s=spec["budget_s"]
        )
        rows.append({"mode": mode, **dataclasses.asdict(cfg), "results": res})
  return {
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "check": check,
    "rows": rows,
    "wall_s": time.perf_counter() - t0,
    "loadavg_start": load_start,
    "loadavg_end": os.getloadavg(),
  }


# --- parent -------------------------------------------------------------------------------------


def _key(row: dict) -> tuple:
  return (row["mode"], row["cell"], row["hidden"], row["length"])


def _run_worker(setting: str, spec: dict, log) -> dict:
  """Runs one setting's worker; on a crash, ``{"failed": exit status, "stderr": its tail}`` instead of timings."""
  with tempfile.TemporaryDirectory() as tmp:
    spec_path, out_path = pathlib.Path(tmp, "spec.json"), pathlib.Path(tmp, "out.json")
    spec_path.write_text(json.dumps(spec))
    flags = f"{os.environ.get('XLA_FLAGS', '')} {setting_flags(setting)}".strip()
    t0 = time.perf_counter()
    p = subprocess.run(
      [sys.executable, __file__, "--worker", str(spec_path), str(out_path)],
      env={**os.environ, "XLA_FLAGS": flags},
      capture_output=True,
      text=True,
      check=False,
    )
    if p.returncode != 0:
      log(f"  {setting:<24} FAILED, exit status {p.returncode}: {p.stderr.strip()[-200:]!r}")
      return {"xla_flags": flags, "failed": p.returncode, "stderr": p.stderr[-3000:]}
    result = json.loads(out_path.read_text())
  log(f"  {setting:<24} {time.perf_counter() - t0:6.1f} s  load {result['loadavg_start'][0]:.2f}")
  return result


def summarise(runs: list[dict], settings: list[str]) -> list[dict]:
  """Per config and setting: medians over rounds of jrnn time, jrnn/torch and setting/baseline (same round).

  The ``*_clean`` fields use only the rounds where neither the setting's nor the baseline's process was
  ``disturbed`` (see :func:`mark_disturbed`); ``clean_rounds`` says how many.
  """
  by = {(r["round"], r["setting"]): {_key(row): row["results"] for row in r["rows"]} for r in runs}
  disturbed = {(r["round"], r["setting"]) for r in runs if r["disturbed"]}
  rounds = sorted({r["round"] for r in runs})
  keys = [_key(row) for row in runs[0]["rows"]]
  out = []
  for key in keys:
    for s in settings:
      jr, ratio, vs, vs_norm, torch_vs, clean = [], [], [], [], [], []
      for rd in rounds:
        res, base = by[(rd, s)][key], by[(rd, "baseline")][key]
        j, t = res["jrnn"]["median_s"], res["torch"]["median_s"]
        bj, bt = base["jrnn"]["median_s"], base["torch"]["median_s"]
        jr.append(j)
        ratio.append(j / t)
        vs.append(j / bj)
        vs_norm.append((j / t) / (bj / bt))
        torch_vs.append(t / bt)
        clean.append((rd, s) not in disturbed and (rd, "baseline") not in disturbed)
      mode, cell, hidden, length = key
      out.append(
        {
          "mode": mode,
          "cell": cell,
          "hidden": hidden,
          "length": length,
          "setting": s,
          "jrnn_median_s": statistics.median(jr),
          "jrnn_over_torch": statistics.median(ratio),
          "vs_baseline": statistics.median(vs),
          "vs_baseline_min": min(vs),
          "vs_baseline_max": max(vs),
          "vs_baseline_torch_normalised": statistics.median(vs_norm),
          "vs_baseline_rounds": vs,
          "torch_vs_baseline": statistics.median(torch_vs),
          "clean_rounds": sum(clean),
          "jrnn_median_s_clean": _median_where(jr, clean),
          "jrnn_over_torch_clean": _median_where(ratio, clean),
          "vs_baseline_clean": _median_where(vs, clean),
          "torch_vs_baseline_clean": _median_where(torch_vs, clean),
        }
      )
  return out


def _median_where(values: list[float], keep: list[bool]) -> float | None:
  kept = [v for v, k in zip(values, keep, strict=True) if k]
  return statistics.median(kept) if kept else None


def mark_disturbed(runs: list[dict], factor: float = 1.25) -> None:
  """Sets ``disturbed`` on each run whose wall time exceeds ``factor`` x the median over all runs.

  A worker does the same work in every setting (compiles, then a bounded number of calls), so a much
  longer one ran while other jobs held the cores; its times, PyTorch's most (its OpenMP barriers
  stall on a busy core), are not comparable with the round's others.
  """
  median = statistics.median(r["wall_s"] for r in runs)
  for r in runs:
    r["disturbed"] = r["wall_s"] > factor * median


def _geomean(values) -> float:
  values = list(values)
  return float(statistics.geometric_mean(values))


def _jrnn_source() -> dict:
  """Where the timed jrnn came from, and whether its files are the repository's HEAD (others edit the tree)."""
  import jrnn

  pkg = pathlib.Path(jrnn.__file__).parent
  info: dict = {"jrnn_file": str(pkg)}
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    tree = subprocess.run(
      ["git", "ls-tree", "-r", "HEAD", "jrnn"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    committed = {line.split("\t")[1]: line.split()[2] for line in tree if line.endswith(".py")}
    files = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    names = [f"jrnn/{p.relative_to(pkg).as_posix()}" for p in files]
    hashes = subprocess.run(
      ["git", "hash-object", *map(str, files)], capture_output=True, text=True, check=True
    ).stdout.split()
    info["git_head"] = head
    info["jrnn_matches_head"] = dict(zip(names, hashes, strict=True)) == committed
  except (subprocess.CalledProcessError, FileNotFoundError, IndexError):
    info["jrnn_matches_head"] = None
  return info


def run(a: argparse.Namespace, log=print) -> dict:
  flags_probed = {flag: probe(flag) for flag in [*FLAGS.values(), *PROBE_ONLY]}
  for flag, r in flags_probed.items():
    log(f"probe {flag:<58} {'accepted' if r['accepted'] else 'REJECTED ' + r['message'][-120:]}")
  settings = []
  for s in a.settings:
    parts = [] if s == "baseline" else [FLAGS[part] for part in s.split("+")]
    bad = [f for f in parts if not flags_probed[f]["accepted"]]
    if bad:
      log(f"dropping setting {s}: this jaxlib rejects {bad}")
    else:
      settings.append(s)
  spec = {
    "cells": a.cells,
    "modes": a.modes,
    "shapes": a.shapes,
    "repeats": a.repeats,
    "warmup": a.warmup,
    "budget_s": a.budget_s,
  }
  from jrnn.apps import bench

  env = {**bench.environment(), **_jrnn_source(), "xla_flags_inherited": os.environ.get("XLA_FLAGS", "")}
  runs, failed, t0 = [], {}, time.perf_counter()
  for rd in range(a.rounds):
    order = settings[rd % len(settings) :] + settings[: rd % len(settings)]
    log(f"round {rd + 1}/{a.rounds}: {', '.join(order)}")
    for position, s in enumerate(order):
      runs.append({"round": rd, "position": position, "setting": s, **_run_worker(s, spec, log)})
      if "failed" in runs[-1]:
        if s == "baseline":
          raise RuntimeError(f"the baseline worker failed:\n{runs[-1]['stderr']}")
        failed[s] = runs[-1]["failed"]
        settings.remove(s)  # a crash repeats: the setting is left out of the later rounds and the summary
  done = [r for r in runs if r["setting"] in settings]
  mark_disturbed(done, a.disturbed_factor)
  summary = summarise(done, settings)
  return {
    "environment": env,
    "method": {
      "rounds": a.rounds,
      "repeats": a.repeats,
      "warmup": a.warmup,
      "budget_s": a.budget_s,
      "grid": {"cells": a.cells, "modes": a.modes, "shapes": [list(s) for s in a.shapes], "batch": 32, "io": 32},
      "libs": ["jrnn", "torch"],
      "note": "one process per (round, setting); order rotated each round; ratios to baseline within a round",
      "disturbed_if_wall_over_median": a.disturbed_factor,
      "wall_s": time.perf_counter() - t0,
    },
    "flags": {
      "tested": FLAGS,
      "accepted": [f for f, r in flags_probed.items() if r["accepted"]],
      "rejected": {f: r["message"] for f, r in flags_probed.items() if not r["accepted"]},
    },
    "settings": {s: setting_flags(s) for s in settings},
    "failed_settings": {s: {"flags": setting_flags(s), "exit_status": status} for s, status in failed.items()},
    "summary": summary,
    "runs": runs,
  }


def report(result: dict, clean: bool = False, log=print) -> None:
  """One line per config: setting/baseline for every setting, and baseline jrnn/torch; then geometric means.

  With ``clean``, the statistics over the rounds without a disturbed process (``*_clean``).
  """
  suffix = "_clean" if clean else ""
  settings = list(result["settings"])
  others = [s for s in settings if s != "baseline"]
  table: dict = {}
  for r in result["summary"]:
    table.setdefault((r["mode"], r["cell"], r["hidden"], r["length"]), {})[r["setting"]] = r
  fmt = lambda v, spec, scale=1.0: "-" if v is None else format(v * scale, spec)
  log(("clean rounds only: " if clean else "all rounds: ") + "setting/baseline, same round, median over rounds")
  log(f"{'config':<28} {'base ms':>8} {'j/torch':>7} " + " ".join(f"{s[:12]:>12}" for s in others))
  for (mode, cell, hidden, length), row in table.items():
    base = row["baseline"]
    log(
      f"{mode:>7} {cell:>5} H={hidden:<4} T={length:<5} {fmt(base['jrnn_median_s' + suffix], '8.2f', 1e3):>8} "
      f"{fmt(base['jrnn_over_torch' + suffix], '7.2f'):>7} "
      + " ".join(f"{fmt(row[s]['vs_baseline' + suffix], '12.3f'):>12}" for s in others)
    )
  fields = [
    ("geomean setting/baseline", "vs_baseline" + suffix),
    ("  torch in setting/baseline", "torch_vs_baseline" + suffix),
  ]
  if not clean:
    fields.insert(1, ("  same, each over its torch", "vs_baseline_torch_normalised"))
  for label, field in fields:
    means = []
    for s in others:
      values = [row[s][field] for row in table.values() if row[s][field] is not None]
      means.append(f"{_geomean(values):12.3f}" if values else f"{'-':>12}")
    log(f"{label:<45} " + " ".join(means))


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
  p.add_argument("--quick", action="store_true", help="a smoke run: LSTM H=32 T=16, 2 rounds, 3 repeats")
  p.add_argument(
    "--settings",
    default=",".join(SETTINGS),
    help=f"comma-separated: baseline, any of {', '.join(FLAGS)}, or names joined by + (a combination); "
    f"'all' for baseline and every single flag (default {','.join(SETTINGS)})",
  )
  p.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 3; 2 with --quick)")
  p.add_argument("--repeats", type=int, default=None, help="timed repeats per config (default 7; 3 with --quick)")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument(
    "--budget-s",
    type=float,
    default=15.0,
    help="bench_config's budget: configs whose first call (compile included) times --repeats exceeds it get fewer "
    "repeats (at least 3)",
  )
  p.add_argument("--cells", default=None, help=f"default {','.join(CELLS)}")
  p.add_argument("--modes", default=None, help=f"default {','.join(MODES)}")
  p.add_argument("--shapes", default=None, help="H:T pairs, comma-separated (default 64:128,64:1024,256:128,1024:16)")
  p.add_argument(
    "--disturbed-factor",
    type=float,
    default=1.25,
    help="a worker whose wall time exceeds this x the median worker's is marked disturbed; the *_clean "
    "statistics leave its round out (default 1.25)",
  )
  p.add_argument("--out", default="benchmarks/results/xla_flags")
  p.add_argument("--tag", default="", help="appended to the file name, e.g. screen")
  p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
  return p


def main(argv=None) -> int:
  p = _parser()
  a = p.parse_args(argv)
  if a.worker:
    spec_path, out_path = a.worker
    spec = json.loads(pathlib.Path(spec_path).read_text())
    spec["shapes"] = [tuple(s) for s in spec["shapes"]]
    pathlib.Path(out_path).write_text(json.dumps(worker(spec)))
    return 0
  a.settings = ["baseline", *FLAGS] if a.settings == "all" else [s for s in a.settings.split(",") if s]
  unknown = [s for s in a.settings if s != "baseline" and any(part not in FLAGS for part in s.split("+"))]
  if unknown or "baseline" not in a.settings:
    p.error(f"--settings must include baseline and use names from {sorted(FLAGS)} (unknown: {unknown})")
  grid = {"cells": CELLS, "modes": MODES, "shapes": SHAPES, "rounds": 3, "repeats": 7}
  if a.quick:
    grid.update(QUICK)
  a.cells = tuple(a.cells.split(",")) if a.cells else grid["cells"]
  a.modes = tuple(a.modes.split(",")) if a.modes else grid["modes"]
  try:
    a.shapes = (
      tuple(tuple(int(v) for v in pair.split(":")) for pair in a.shapes.split(",")) if a.shapes else grid["shapes"]
    )
  except ValueError:
    p.error("--shapes takes H:T pairs, e.g. 64:128,256:128")
  a.rounds = grid["rounds"] if a.rounds is None else a.rounds
  a.repeats = grid["repeats"] if a.repeats is None else a.repeats
  result = run(a)
  report(result)
  report(result, clean=True)
  os.makedirs(a.out, exist_ok=True)
  date = datetime.date.today().isoformat()
  tag = "".join(f"-{t}" for t in (a.tag, "quick" if a.quick else "") if t)
  path = os.path.join(a.out, f"cpu-{date}{tag}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {path} ({result['method']['wall_s'] / 60:.1f} min)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
