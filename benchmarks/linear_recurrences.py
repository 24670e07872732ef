"""Training-step time vs T: GRU (sequential) vs minGRU and LRU (sequential and associative).

One process, interleaved: each repeat times every variant once in turn at a given
T, so the load from other jobs on the machine hits them alike; we report medians
and ratios to the GRU. The model: cell (I -> H) over T steps, a linear head to O
on every step, MSE, gradient, SGD update; batch B by ``jax.vmap``.

Usage: ``PYTHONPATH=. python benchmarks/linear_recurrences.py [--lengths 64 256 ...]``
writes ``benchmarks/linear_recurrences.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jrnn

VARIANTS = {
  "gru/sequential": (lambda H: jrnn.gru(H), "sequential"),
  "min_gru/sequential": (lambda H: jrnn.min_gru(H), "sequential"),
  "min_gru/associative": (lambda H: jrnn.min_gru(H), "associative"),
  "lru/sequential": (lambda H: jrnn.lru(H, r_min=0.9, r_max=0.999), "sequential"),
  "lru/associative": (lambda H: jrnn.lru(H, r_min=0.9, r_max=0.999), "associative"),
}


def make_step(cell, scan, head):
  def loss(params, xs, ys):
    cp, hp = params
    _, hs = jax.vmap(lambda x: jrnn.unroll(cell, cp, x, scan=scan))(xs)
    return jnp.mean(jnp.square(head.apply(hp, hs) - ys))

  @jax.jit
  def step(params, xs, ys):
    value, grads = jax.value_and_grad(loss)(params, xs, ys)
    return jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, params, grads), value

  return step


def measure(lengths, batch=8, input_size=32, hidden=64, repeats=5, variants=tuple(VARIANTS)):
  head = jrnn.linear(input_size)
  rows = []
  for T in lengths:
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(batch, T, input_size)), jnp.float32)
    ys = jnp.asarray(rng.normal(size=(batch, T, input_size)), jnp.float32)
    runs = {}
    for name in variants:
      make, scan = VARIANTS[name]
      cell = make(hidden)
      params = (cell.init(jax.random.key(0), input_size), head.init(jax.random.key(1), hidden))
      step = make_step(cell, scan, head)
      t0 = time.perf_counter()
      jax.block_until_ready(step(params, xs, ys))
      runs[name] = (step, params, time.perf_counter() - t0, [])
    reps = repeats if T <= 4096 else max(2, repeats // 2)
    for _ in range(reps):
      for name in variants:
        step, params, _, times = runs[name]
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, xs, ys))
        times.append(time.perf_counter() - t0)
    base = statistics.median(runs["gru/sequential"][3]) if "gru/sequential" in runs else None
    for name in variants:
      _, _, compile_s, times = runs[name]
      med = statistics.median(times)
      rows.append(
        dict(
          variant=name,
          T=T,
          median_ms=1e3 * med,
          min_ms=1e3 * min(times),
          compile_s=compile_s,
          vs_gru=(med / base if base else None),
        )
      )
      print(
        f"T={T:6d} {name:22s} {1e3 * med:10.2f} ms  (min {1e3 * min(times):9.2f})  "
        f"/gru {rows[-1]['vs_gru'] or float('nan'):6.3f}  compile {compile_s:5.2f} s",
        flush=True,
      )
  return rows


def plot(rows, path, batch=8, hidden=64):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for name in dict.fromkeys(r["variant"] for r in rows):
    pts = [(r["T"], r["median_ms"]) for r in rows if r["variant"] == name]
    ax.loglog(*zip(*pts), marker="o", label=name)
  ax.set_xlabel("sequence length T")
  ax.set_ylabel("training step (ms, median)")
  ax.set_title(f"{jax.default_backend()} · B={batch}, I=32, H={hidden}")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256, 1024, 4096, 16384])
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--hidden", type=int, default=64)
  p.add_argument("--out", default="benchmarks/linear_recurrences")
  a = p.parse_args()
  rows = measure(a.lengths, batch=a.batch, hidden=a.hidden, repeats=a.repeats)
  meta = dict(
    jax=jax.__version__,
    backend=jax.default_backend(),
    device=str(jax.devices()[0]),
    machine=platform.machine(),
    cpus=__import__("os").cpu_count(),
    batch=a.batch,
    input_size=32,
    hidden=a.hidden,
  )
  with open(a.out + ".json", "w") as f:
    json.dump(dict(meta=meta, rows=rows), f, indent=1)
  plot(rows, a.out + ".png", a.batch, a.hidden)


if __name__ == "__main__":
  main()
