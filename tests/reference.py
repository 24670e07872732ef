"""Plain NumPy float64 references for the cells: the equations, written out once more.

These are deliberately independent of jrnn's code (loops, no lax.scan, NumPy
only) so the tests compare jrnn with the math rather than with itself.
"""

import numpy as np


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0), "sigmoid": sigmoid}


def elman_step(p, h, x, activation="tanh"):
  wx, wh, b = (np.asarray(a, np.float64) for a in p)
  h_new = ACTIVATIONS[activation](x @ wx + h @ wh + b)
  return h_new, h_new


def gru_step(p, h, x):
  wx, wh, b, bhn = (np.asarray(a, np.float64) for a in p)
  H = h.shape[0]
  gx, gh = x @ wx + b, h @ wh
  r = sigmoid(gx[:H] + gh[:H])
  z = sigmoid(gx[H : 2 * H] + gh[H : 2 * H])
  n = np.tanh(gx[2 * H :] + r * (gh[2 * H :] + bhn))
  h_new = (1 - z) * n + z * h
  return h_new, h_new


def lstm_step(p, carry, x):
  wx, wh, b = (np.asarray(a, np.float64) for a in p)
  h, c = carry
  H = h.shape[0]
  g = x @ wx + h @ wh + b
  i, f, gg, o = sigmoid(g[:H]), sigmoid(g[H : 2 * H]), np.tanh(g[2 * H : 3 * H]), sigmoid(g[3 * H :])
  c = f * c + i * gg
  h = o * np.tanh(c)
  return (h, c), h


def run(step, carry, xs, mask=None, reverse=False):
  """Python loop over time: masked steps keep the carry and output zeros."""
  T = xs.shape[0]
  order = range(T - 1, -1, -1) if reverse else range(T)
  outs = [None] * T
  for t in order:
    new_carry, h = step(carry, xs[t])
    if mask is None or mask[t]:
      carry, outs[t] = new_carry, h
    else:
      outs[t] = np.zeros_like(h)
  return carry, np.stack(outs)
