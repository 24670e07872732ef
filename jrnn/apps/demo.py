"""``make demo``: a character-level LSTM learns Python's own documentation, in about two minutes.

The default demo trains an LSTM(256) on the text of ``pydoc_data.topics``
(~465k characters that ship with Python) by truncated BPTT with Adam, shows a
progress bar, prints the validation loss beside the uniform (ln |V|) and bigram
baselines, prints a sample, and leaves in ``--out`` (default ``demo_out/``)
``loss.png``, ``history.json`` and the trained model as a checkpoint in the
form ``jrnn train --task chars`` writes, so that ``jrnn generate
--checkpoint-dir demo_out`` samples more text from it (and ``jrnn train
--resume`` trains it on); its last line is that command. Running it again
replaces the checkpoint. ``--task dogs`` runs the seeds' original "d-o-g -> s"
demo instead.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys

import jax
import jax.numpy as jnp
import optax

import jrnn
from jrnn.tasks import DOGS_VOCAB
from jrnn.tasks import dogs

# The chars demo: about two minutes on two laptop CPU cores (measured; see the commit).
CHARS_STEPS = 1000
CHARS_HIDDEN = 256
CHARS_BATCH = 32
CHARS_SEQ_LEN = 32
CHARS_LR = 0.005


def train_dogs(optimizer: optax.GradientTransformation, *, steps: int = 300, hidden: int = 3, seed: int = 0):
  """Trains Elman(hidden) + linear softmax head on "dogs" with ``jrnn.train.make_step``.

  Returns:
    ``(params, losses, probs)``: the trained ``(cell, head)`` params, the loss
    before each step ``[steps]`` and the predicted distributions after
    training ``[3, 4]`` (one row per input letter d, o, g).
  """
  data = dogs()
  cell, head = jrnn.elman(hidden), jrnn.linear(len(DOGS_VOCAB))
  kc, kh = jax.random.split(jax.random.key(seed))
  params = (cell.init(kc, len(DOGS_VOCAB)), head.init(kh, hidden))

  def loss_fn(params, batch):
    xs, labels = batch
    _, logits = jrnn.many_to_many(cell, params[0], head, params[1], xs)
    return jrnn.losses.softmax_cross_entropy(logits, labels)

  step = jax.jit(jrnn.train.make_step(loss_fn, optimizer))
  opt_state = optimizer.init(params)
  losses = []
  for _ in range(steps):
    params, opt_state, metrics = step(params, opt_state, (data.xs, data.labels))
    losses.append(float(metrics.loss))
  probs = jax.nn.softmax(jrnn.many_to_many(cell, params[0], head, params[1], data.xs)[1])
  return params, jnp.asarray(losses), probs


def dogs_demo(steps: int, seed: int) -> None:
  """The seeds' example: Elman 4-3-4 on "dogs" with SGD and Adam."""
  print("jrnn demo: Elman network 4-3-4 (tanh state, softmax output) on the seeds' 'dogs' example")
  print("inputs d, o, g (one-hot); target: the next letter at every step, 's' after 'g'\n")
  for name, opt in (("SGD lr=0.5", optax.sgd(0.5)), ("Adam lr=0.05", optax.adam(0.05))):
    _, losses, probs = train_dogs(opt, steps=steps, seed=seed)
    print(
      f"{name:>13}: cross-entropy {float(losses[0]):.3f} -> {float(losses[-1]):.4f} "
      f"after {steps} steps (chance: ln 4 = {float(jnp.log(4.0)):.3f})"
    )
    for t, (c, p) in enumerate(zip("dog", probs)):
      best = DOGS_VOCAB[int(jnp.argmax(p))]
      dist = " ".join(f"{v}:{float(q):.2f}" for v, q in zip(DOGS_VOCAB, p))
      print(f"{'':>15}t={t + 1} input '{c}' -> predicts '{best}'   [{dist}]")


def chars_demo(steps: int, seed: int, hidden: int, out: str, progress: bool = True) -> dict:
  """Trains a character-level LSTM on ``pydoc_data.topics``; returns the final metrics."""
  import time

  from jrnn import checkpoint
  from jrnn import train
  from jrnn.apps import experiments
  from jrnn.apps import run
  from jrnn.tasks import chars

  config = experiments.resolve(
    {
      "task": "chars",
      "cell": "lstm",
      "hidden": hidden,
      "steps": steps,
      "batch": CHARS_BATCH,
      "seq_len": CHARS_SEQ_LEN,
      "lr": CHARS_LR,
      "seed": seed,
      "eval_every": max(1, steps // 5),
    }
  )
  exp, state, step = run.setup_run(config)
  print(f"jrnn demo: LSTM({hidden}) learns the text of Python's pydoc_data.topics one character at a time")
  print(
    f"vocabulary {len((exp.metadata or {})['vocab'])} characters; truncated BPTT over {config['batch']} streams, "
    f"windows of {config['seq_len']}, Adam lr={config['lr']}, {steps} steps"
  )
  print("baselines (validation, nats/char): " + ", ".join(f"{k} {v:.3f}" for k, v in exp.baselines.items()))
  start = time.perf_counter()
  result = train.fit(
    step,
    state.params,
    state.opt_state,
    exp.batch_fn,
    steps=steps,
    carry=state.carry,
    eval_fn=lambda p: exp.evaluate(p, False),
    eval_every=config["eval_every"],
    progress=progress,
    desc="chars lstm",
  )
  elapsed = time.perf_counter() - start
  final = exp.evaluate(result.params, True)
  print(f"\ntrained {steps} steps in {elapsed:.0f} s")
  print(run.report(exp, final))
  text = chars.generate(
    exp.cell,
    result.params.cell,
    exp.head,
    result.params.head,
    (exp.metadata or {})["vocab"],
    "\n",
    400,
    jax.random.key(seed),
    temperature=0.7,
  )
  print("\nsample (temperature 0.7):\n" + text + "\n")
  os.makedirs(out, exist_ok=True)
  checkpoint.save(
    out,
    checkpoint.TrainState(steps, result.params, result.opt_state, state.key, result.carry),
    metadata=run.checkpoint_metadata(exp, config),
  )
  # A run before this one may have saved other steps; the newest would shadow this one in `jrnn generate`.
  # Each is removed only now that this checkpoint is complete (checkpoint.save is atomic).
  for old in checkpoint.all_steps(out):
    if old != steps:
      shutil.rmtree(checkpoint.step_dir(out, old), ignore_errors=True)
  history = dict(result.history)
  history["final_valid_loss"] = [final["valid_loss"]]
  run.write_outputs(out, history, exp, config)
  written = [os.path.join(out, "loss.png"), os.path.join(out, "history.json"), checkpoint.step_dir(out, steps)]
  print(f"wrote {written[0]}, {written[1]} and the checkpoint {written[2]}")
  print("sample more text from it with:\n  " + generate_command(out))
  return {"seconds": elapsed, **final}


def generate_command(out: str, prime: str = "The ", length: int = 300) -> str:
  """The ``jrnn generate`` command line for the checkpoint in ``out``, as it runs from the current directory.

  ``jrnn`` when it is on the PATH (an activated environment); else the path
  of the ``jrnn`` script beside this Python (``.venv/bin/jrnn`` under ``make
  demo``); else ``python -m jrnn`` with this Python.
  """
  bindir = os.path.dirname(sys.executable)
  script = os.path.join(bindir, "jrnn")
  found = shutil.which("jrnn")
  if found and os.path.realpath(found) == os.path.realpath(script):
    program = "jrnn"
  elif os.path.isfile(script) and os.access(script, os.X_OK):
    program = shlex.quote(_shortest(script))
  else:
    program = shlex.quote(_shortest(sys.executable)) + " -m jrnn"
  args = ["generate", "--checkpoint-dir", out, "--prime", prime, "--length", str(length)]
  return program + " " + " ".join(shlex.quote(a) for a in args)


def _shortest(path: str) -> str:
  """``path`` relative to the current directory when it lies inside it (``.venv/bin/jrnn``), else absolute."""
  try:
    rel = os.path.relpath(path)
  except ValueError:  # on another drive (Windows)
    return path
  return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jrnn.apps.demo", description=(__doc__ or "").split("\n")[0])
  parser.add_argument("--task", choices=("chars", "dogs"), default="chars")
  parser.add_argument("--steps", type=int, default=None, help=f"default: {CHARS_STEPS} (chars), 300 (dogs)")
  parser.add_argument("--hidden", type=int, default=CHARS_HIDDEN, help="LSTM size for chars")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--out", default="demo_out", help="where loss.png, history.json and the checkpoint go (chars; replaced)"
  )
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  steps = args.steps if args.steps is not None else (CHARS_STEPS if args.task == "chars" else 300)
  if steps < 1:
    parser.error("--steps must be at least 1")
  if args.hidden < 1:
    parser.error("--hidden must be at least 1")
  if args.task == "dogs":
    dogs_demo(steps, args.seed)
  else:
    chars_demo(steps, args.seed, args.hidden, args.out, progress=not args.no_progress)
  return 0


if __name__ == "__main__":
  sys.exit(main())
