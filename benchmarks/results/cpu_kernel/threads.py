"""OpenBLAS threads for the CPU kernel's per-step GEMMs: 1 vs 2, interleaved, with kernel="xla" as the control.

Run from the repository root: ``python benchmarks/results/cpu_kernel/threads.py`` (writes threads.json here).
The training step (forward, BPTT, Adam) of jrnn's benchmark model, B=32, I=O=32, T=128.
"""

import json
import os
import statistics
import time

import jax

from jrnn import _cpu_kernel
from jrnn.apps import bench_models

assert _cpu_kernel.available(), _cpu_kernel.why_unavailable()
lib = _cpu_kernel._library[0]
rows = []
for cell, hidden in (("lstm", 64), ("lstm", 256), ("gru", 256)):
  cfg = bench_models.Config(cell, hidden, 128, 32)
  cpu, _ = bench_models.jrnn_fns(cfg, "train", None, kernel="cpu")
  xla, _ = bench_models.jrnn_fns(cfg, "train", None, kernel="xla")
  runs = {"cpu_1": (cpu, 1), "cpu_2": (cpu, 2), "xla": (xla, 1)}
  for call, threads in runs.values():
    lib.JrnnSetBlasThreads(threads)
    call(), call()
  times = {name: [] for name in runs}
  for _ in range(15):
    for name, (call, threads) in runs.items():
      lib.JrnnSetBlasThreads(threads)
      t0 = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - t0)
  med = {name: statistics.median(t) for name, t in times.items()}
  row = dict(cell=cell, hidden=hidden, length=128, batch=32, median_s=med, two_over_one=med["cpu_2"] / med["cpu_1"])
  print(row, flush=True)
  rows.append(row)
lib.JrnnSetBlasThreads(_cpu_kernel.BLAS_THREADS)
out = dict(devices=str(jax.devices()), cpus=os.cpu_count(), rows=rows)
with open(os.path.join(os.path.dirname(__file__), "threads.json"), "w") as f:
  json.dump(out, f, indent=1)
