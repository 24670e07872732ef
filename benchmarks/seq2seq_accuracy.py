"""Attention vs the plain encoder-decoder, beam search vs greedy: exact-match accuracy on the seq2seq tasks.

Trains the command line's set-ups (``jrnn train --task dates`` / ``--task reverse``, their defaults unless
given) with ``--attention none`` and with attention, and scores each on held-out pairs at a few step
counts: greedy and beam-search (width 4) exact match, and the mean log-probability of the decoded
sequences. ``reverse`` is also scored on strings longer than any seen in training. One JSON per run:

  python benchmarks/seq2seq_accuracy.py --out benchmarks/results/seq2seq/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from jrnn import train
from jrnn.apps import experiments
from jrnn.apps import run
from jrnn.apps import seq2seq
from jrnn.apps.seq2seq import sequence_log_prob
from jrnn.tasks import transduction as tr

RUNS = [  # (task, attention, steps scored at)
  ("dates", "none", (300, 1000, 4000)),
  ("dates", "additive", (300, 1000)),
  ("reverse", "none", (500, 2000, 6000)),
  ("reverse", "additive", (500, 2000)),
  ("reverse", "dot", (500, 2000)),
]


def score(exp, params, tests, beam_size):
  """Exact match and mean log p of the decoded sequences, greedy and beam, on each test set."""
  model = exp.cell
  out = {}
  for name, enc in tests.items():
    L = enc.dec_out.shape[1]
    for width in (1, beam_size):
      r = jax.jit(lambda p, s, m: model.decode(p, s, m, beam_size=width, max_length=L))(  # noqa: B023
        params, enc.src, enc.src_mask
      )
      tokens = np.asarray(r.tokens[:, 0])
      key = f"{'greedy' if width == 1 else f'beam{width}'}{name}"
      out[f"exact_match_{key}"] = float(tr.exact_match(tokens, enc).mean())
      out[f"log_prob_{key}"] = float(np.mean(sequence_log_prob(model, params, enc.src, enc.src_mask, tokens)))
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="benchmarks/results/seq2seq/accuracy.json")
  ap.add_argument("--beam", type=int, default=4)
  ap.add_argument("--only", help="comma-separated task:attention pairs to run (default: all)")
  args = ap.parse_args(argv)
  results = {}
  if os.path.exists(args.out):
    with open(args.out) as f:
      results = json.load(f)
  results.setdefault("jax", jax.__version__)
  for task, attention, checkpoints in RUNS:
    if args.only and f"{task}:{attention}" not in args.only.split(","):
      continue
    config = experiments.resolve(dict(task=task, attention=attention, steps=max(checkpoints)))
    exp, state, step = run.setup_run(config)  # what `jrnn train` runs
    tests = seq2seq.task_data(task, config["seed"], config["seq_len"]).tests
    params, opt_state, done, rows, elapsed = state.params, state.opt_state, 0, [], 0.0
    for n in checkpoints:
      t0 = time.perf_counter()
      out = train.fit(step, params, opt_state, exp.batch_fn, steps=n, start_step=done, progress=False, verbose=False)
      elapsed += time.perf_counter() - t0
      params, opt_state, done = out.params, out.opt_state, n
      row = {"steps": n, "train_seconds": round(elapsed, 1), **score(exp, params, tests, args.beam)}
      row["test_loss"] = exp.evaluate(params, True)["test_loss"]
      print(task, attention, row, flush=True)
      rows.append(row)
    results[f"{task}:{attention}"] = {
      "config": config,
      "rows": rows,
      "sizes": {k: len(v.src) for k, v in tests.items()},
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
      json.dump(results, f, indent=1)
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
  main()
