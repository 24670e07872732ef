"""The word-level language model with and without dropout, beside its n-gram baselines.

Trains ``jrnn train --task words`` (a 2-layer LSTM(200) with a tied embedding, Zaremba et al.'s small
model) twice on the same training tokens, with dropout 0.5 and without, each with the same seed, steps
and evaluations, then writes one summary beside the two runs' histories:

  python benchmarks/word_lm.py --out benchmarks/results/words   # ~25 min on 2 CPU cores

``summary.json`` holds, per run, the validation perplexity at every evaluation, the best one and its
step, the final validation and test perplexity and the training speed in tokens per second (the median
step time, evaluations excluded); and the baselines on the same split: the add-one unigram model and the
interpolated Kneser–Ney trigram model counted on the same training tokens, and the trigram counted on the
whole training split. ``curves.png`` plots both learning curves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

RUNS = {"dropout": 0.5, "no_dropout": 0.0}


def _train(out, name, dropout, args):
  directory = os.path.join(args.work, name)
  shutil.rmtree(directory, ignore_errors=True)
  cmd = [sys.executable, "-m", "jrnn", "train", "--task", "words", "--dropout", str(dropout)]
  cmd += ["--steps", str(args.steps), "--eval-every", str(args.eval_every), "--seed", str(args.seed)]
  cmd += ["--checkpoint-dir", directory, "--save-every", str(args.steps), "--no-progress"]
  if args.train_tokens:
    cmd += ["--train-tokens", str(args.train_tokens)]
  print(" ".join(cmd), flush=True)
  log = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  print(log, flush=True)
  with open(os.path.join(directory, "history.json")) as f:
    history = json.load(f)
  os.makedirs(os.path.join(out, name), exist_ok=True)
  shutil.copy(os.path.join(directory, "history.json"), os.path.join(out, name, "history.json"))
  with open(os.path.join(out, name, "train.log"), "w") as f:
    f.write(log)
  return history


def _summary(history):
  config = history["config"]
  steps = np.asarray(history["step"])
  dt = np.diff(np.asarray(history["time"]))
  evaluated = np.isin(steps[1:], np.asarray(history["eval_step"]) + 1)  # a step after an evaluation waits for it
  tokens_per_step = config["batch"] * config["seq_len"]
  valid = history["eval_valid_ppl"]
  best = int(np.argmin(valid))
  return {
    "eval_step": history["eval_step"],
    "valid_ppl": valid,
    "best_valid_ppl": valid[best],
    "best_step": history["eval_step"][best],
    "final_valid_ppl": valid[-1],
    "final_test_ppl": _final(history, "test_ppl"),
    "tokens_per_second": float(tokens_per_step / np.median(dt[~evaluated])),
  }


def _final(history, name):
  log = history.get("_log", "")
  for line in log.splitlines():
    if line.strip().startswith(f"{name}:"):
      return float(line.split(":")[1])
  return None


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="benchmarks/results/words")
  ap.add_argument("--work", default="runs/word_lm", help="where the runs' checkpoints go")
  ap.add_argument("--steps", type=int, default=3000)
  ap.add_argument("--eval-every", type=int, default=250)
  ap.add_argument("--train-tokens", type=int, default=250_000)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)

  from jrnn.tasks import words

  data = words.words()
  V = len(data.vocab)
  train = data.train[: args.train_tokens] if args.train_tokens else data.train
  n = f"{train.size:,}"
  baselines = {
    f"unigram, add-one ({n} tokens)": {
      "valid_ppl": words.unigram_perplexity(train, data.valid, V),
      "test_ppl": words.unigram_perplexity(train, data.test, V),
    },
    f"Kneser-Ney trigram ({n} tokens)": {
      "valid_ppl": words.kneser_ney_perplexity(train, data.valid, V),
      "test_ppl": words.kneser_ney_perplexity(train, data.test, V),
    },
    f"Kneser-Ney trigram (all {data.train.size:,} training tokens)": {
      "valid_ppl": words.kneser_ney_perplexity(data.train, data.valid, V),
      "test_ppl": words.kneser_ney_perplexity(data.train, data.test, V),
    },
  }
  print(json.dumps(baselines, indent=1), flush=True)
  os.makedirs(args.out, exist_ok=True)
  runs = {}
  for name, p in RUNS.items():
    history = _train(args.out, name, p, args)
    with open(os.path.join(args.out, name, "train.log")) as f:
      history["_log"] = f.read()
    runs[name] = _summary(history)
  corpus = {"train": int(data.train.size), "valid": int(data.valid.size), "test": int(data.test.size)}
  summary = {
    "python": sys.version.split()[0],
    "corpus_tokens": corpus,
    "valid_unk_fraction": float(np.mean(data.valid == 0)),
    "train_tokens": int(train.size),
    "steps": args.steps,
    "baselines": baselines,
    "runs": runs,
  }
  with open(os.path.join(args.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  _plot(args.out, runs, baselines)
  print(json.dumps(runs, indent=1))


def _plot(out, runs, baselines):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4))
  for name, r in runs.items():
    ax.plot(r["eval_step"], r["valid_ppl"], "o-", label=f"LSTM, {name.replace('_', ' ')}")
  for (name, b), style in zip(baselines.items(), ("--", ":", "-.")):
    ax.axhline(b["valid_ppl"], ls=style, color="gray", label=f"{name}: {b['valid_ppl']:.1f}")
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("validation perplexity")
  ax.set_title("jrnn: word-level LM on the Python standard library")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "curves.png"), dpi=100)


if __name__ == "__main__":
  main()
