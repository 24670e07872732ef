"""The models the benchmark times: the same cell + linear head + MSE in jrnn, Flax linen and PyTorch.

Each builder ``(config, mode, unroll) -> (call, lowered)`` returns a
zero-argument call that runs one forward pass or one training step (forward,
BPTT, Adam) and blocks until it is done, and for the JAX libraries the jitted
function with its arguments (for XLA's memory analysis). Flax and torch are
imported inside their builders.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jrnn
from jrnn.apps.experiments import CELLS

GATES = {"elman": 1, "gru": 3, "lstm": 4}


@dataclasses.dataclass(frozen=True)
class Config:
  cell: str
  hidden: int
  length: int
  batch: int = 32
  input_size: int = 32
  output_size: int = 32

  def flops(self, mode: str) -> float:
    B, I, H, O, T, G = self.batch, self.input_size, self.hidden, self.output_size, self.length, GATES[self.cell]
    fwd = T * (2 * B * (I + H) * G * H + 2 * B * H * O)
    return fwd if mode == "forward" else 3 * fwd


def data(cfg: Config, seed: int = 0):
  """Inputs ``xs [B, T, I]`` and targets ``ys [B, T, O]``, standard normal float32, as numpy."""
  rng = np.random.default_rng(seed)
  xs = rng.normal(size=(cfg.batch, cfg.length, cfg.input_size)).astype(np.float32)
  ys = rng.normal(size=(cfg.batch, cfg.length, cfg.output_size)).astype(np.float32)
  return xs, ys


# --- jrnn --------------------------------------------------------------------------------------


def jrnn_model(cfg: Config, unroll: int | None = None, **options):
  """jrnn's cell + linear head: ``(forward, params)``, ``forward(params, xs [B, T, I]) -> ys [B, T, O]``.

  The cell runs over the batch with ``jrnn.unroll_batch(..., **options)``;
  ``unroll=None`` is jrnn's default, ``"auto"``.
  """
  steps: int | str = "auto" if unroll is None else unroll
  cell = CELLS[cfg.cell](cfg.hidden)
  head = jrnn.linear(cfg.output_size)
  k1, k2 = jax.random.split(jax.random.key(0))
  params = (cell.init(k1, cfg.input_size), head.init(k2, cfg.hidden))

  def forward(params, xs):
    return head.apply(params[1], jrnn.unroll_batch(cell, params[0], xs, unroll=steps, **options)[1])

  return forward, params


def jrnn_fns(cfg: Config, mode: str, unroll: int | None = None, **options):
  """jrnn's cell + linear head on the batch, ``jrnn.unroll_batch(..., **options)``."""
  return _jax_fns(*jrnn_model(cfg, unroll, **options), cfg, mode)


def mse_loss(forward):
  """``loss_fn(params, (xs, ys))``: the mean squared error of ``forward(params, xs)`` against ``ys``."""

  def loss_fn(params, batch):
    xs, ys = batch
    return jnp.mean(jnp.square(forward(params, xs) - ys))

  return loss_fn


def _jax_fns(forward, params, cfg, mode):
  """Jitted forward or train step for a pure ``forward(params, xs)``; returns (call, lowered-args).

  The train step is ``jrnn.train.make_step`` with Adam: forward, BPTT and the
  update in one jitted program, the same for every JAX library here. It also
  computes the gradient's global norm (its metrics), one reduction over the
  params, which is small beside the scan.
  """
  xs, ys = (jnp.asarray(a) for a in data(cfg))
  if mode == "forward":
    fn = jax.jit(forward)
    args = (params, xs)
  else:
    opt = optax.adam(1e-3)
    fn = jax.jit(jrnn.train.make_step(mse_loss(forward), opt))
    args = (params, opt.init(params), (xs, ys))
  return (lambda: jax.block_until_ready(fn(*args))), (fn, args)


# --- flax --------------------------------------------------------------------------------------


def _flax_fns(cfg: Config, mode: str, unroll: int | None = None):
  import flax.linen as nn

  cell_cls = {"elman": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}[cfg.cell]

  class Model(nn.Module):
    @nn.compact
    def __call__(self, xs):
      return nn.Dense(cfg.output_size)(nn.RNN(cell_cls(cfg.hidden), unroll=unroll or 1)(xs))

  model = Model()
  xs, _ = data(cfg)
  params = model.init(jax.random.key(0), jnp.asarray(xs[:, :1]))
  return _jax_fns(model.apply, params, cfg, mode)


# --- torch -------------------------------------------------------------------------------------


def _torch_fns(cfg: Config, mode: str, unroll: int | None = None):
  del unroll
  import torch

  device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
  torch.manual_seed(0)
  rnn_cls = {"elman": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cfg.cell]
  rnn = rnn_cls(cfg.input_size, cfg.hidden, batch_first=True).to(device)
  head = torch.nn.Linear(cfg.hidden, cfg.output_size).to(device)
  xs, ys = (torch.from_numpy(a).to(device) for a in data(cfg))
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  if mode == "forward":

    def infer():
      with torch.no_grad():
        out = head(rnn(xs)[0])
      sync()
      return out

    return infer, None
  params = list(rnn.parameters()) + list(head.parameters())
  opt = torch.optim.Adam(params, lr=1e-3)

  def train_step():
    opt.zero_grad(set_to_none=True)
    loss = torch.mean((head(rnn(xs)[0]) - ys) ** 2)
    loss.backward()
    opt.step()
    sync()
    return loss

  return train_step, None


# jrnn with the defaults, and variants with one option changed (levers under measurement, NOTES.md).
# The levers of the XLA scan name kernel="xla", so that they are measured on a GPU too, where "auto"
# runs an LSTM on cuDNN.
LIBRARIES: dict[str, Callable] = {
  "jrnn": jrnn_fns,
  "jrnn_hoisted": functools.partial(jrnn_fns, projection="hoisted", kernel="xla"),
  "jrnn_perstep": functools.partial(jrnn_fns, projection="per_step", kernel="xla"),
  "jrnn_fused": functools.partial(jrnn_fns, vjp="fused", kernel="xla"),
  "jrnn_xla": functools.partial(jrnn_fns, kernel="xla"),
  "jrnn_cudnn": functools.partial(jrnn_fns, kernel="cudnn"),
  "flax": _flax_fns,
  "torch": _torch_fns,
}
