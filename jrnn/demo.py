"""``make demo``: train the seeds' Elman network on "dogs" and print its predictions.

The network is the seeds' x -> s -> y with k = 4 inputs (one-hot d, o, g, s),
d = 3 tanh hidden units and a softmax output over the 4 letters, trained by
BPTT (``jax.grad`` through ``lax.scan``) with optax's SGD and Adam.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import optax

import jrnn
from jrnn.tasks import DOGS_VOCAB, dogs


def train_dogs(optimizer: optax.GradientTransformation, *, steps: int = 300, hidden: int = 3, seed: int = 0):
  """Trains Elman(hidden) + linear softmax head on "dogs"; returns (params, losses)."""
  data = dogs()
  cell, head = jrnn.elman(hidden), jrnn.linear(len(DOGS_VOCAB))
  kc, kh = jax.random.split(jax.random.key(seed))
  params = (cell.init(kc, len(DOGS_VOCAB)), head.init(kh, hidden))

  def loss_fn(params):
    _, logits = jrnn.many_to_many(cell, params[0], head, params[1], data.xs)
    return jrnn.losses.softmax_cross_entropy(logits, data.labels)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  losses = []
  for _ in range(steps):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  probs = jax.nn.softmax(jrnn.many_to_many(cell, params[0], head, params[1], data.xs)[1])
  return params, jnp.asarray(losses), probs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error("--steps must be at least 1")
  print("jrnn demo: Elman network 4-3-4 (tanh state, softmax output) on the seeds' 'dogs' example")
  print("inputs d, o, g (one-hot); target: the next letter at every step, 's' after 'g'\n")
  for name, opt in (("SGD lr=0.5", optax.sgd(0.5)), ("Adam lr=0.05", optax.adam(0.05))):
    _, losses, probs = train_dogs(opt, steps=args.steps, seed=args.seed)
    print(f"{name:>13}: cross-entropy {float(losses[0]):.3f} -> {float(losses[-1]):.4f} "
          f"after {args.steps} steps (chance: ln 4 = {float(jnp.log(4.0)):.3f})")
    for t, (c, p) in enumerate(zip("dog", probs)):
      best = DOGS_VOCAB[int(jnp.argmax(p))]
      dist = " ".join(f"{v}:{float(q):.2f}" for v, q in zip(DOGS_VOCAB, p))
      print(f"{'':>15}t={t + 1} input '{c}' -> predicts '{best}'   [{dist}]")
  return 0


if __name__ == "__main__":
  sys.exit(main())
