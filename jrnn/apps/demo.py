"""``make demo``: a character-level LSTM learns Python's own documentation, in about two minutes.

The default demo trains an LSTM(256) on the text of ``pydoc_data.topics``
(~465k characters that ship with Python) by truncated BPTT with Adam, shows a
progress bar, prints the validation loss beside the uniform (ln |V|) and bigram
baselines, prints a sample, and leaves ``loss.png`` and ``history.json`` in
``--out`` (default ``demo_out/``). ``--task dogs`` runs the seeds' original
"d-o-g -> s" demo instead.
"""

from __future__ import annotations

import argparse
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
  import os
  import time

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
  history = dict(result.history)
  history["final_valid_loss"] = [final["valid_loss"]]
  run.write_outputs(out, history, exp, config)
  print(f"wrote {os.path.join(out, 'loss.png')} and {os.path.join(out, 'history.json')}")
  return {"seconds": elapsed, **final}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jrnn.apps.demo", description=(__doc__ or "").split("\n")[0])
  parser.add_argument("--task", choices=("chars", "dogs"), default="chars")
  parser.add_argument("--steps", type=int, default=None, help=f"default: {CHARS_STEPS} (chars), 300 (dogs)")
  parser.add_argument("--hidden", type=int, default=CHARS_HIDDEN, help="LSTM size for chars")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="demo_out", help="where loss.png and history.json go (chars)")
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
