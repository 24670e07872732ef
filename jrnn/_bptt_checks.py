"""Trace-time checks of :func:`jrnn.bptt.elman_bptt`'s arguments, with messages that name them."""

from __future__ import annotations

import jax.numpy as jnp

from jrnn import _checks
from jrnn import _elman
from jrnn import _linear

FN = "jrnn.bptt.elman_bptt"
_STATE_ACTIVATIONS = ("tanh", "sigmoid", "relu")
_OUTPUTS = ("linear", "sigmoid", "softmax")
_LOSSES = ("mse", "cross_entropy")
_REDUCTIONS = ("mean", "sum")


def check(params, xs, targets, s0, activation, output, loss, reduction, truncate):
  if not isinstance(params, _linear.ModelParams):
    if (
      isinstance(params, tuple)
      and len(params) == 2
      and isinstance(params[0], _elman.ElmanParams)
      and isinstance(params[1], _linear.LinearParams)
    ):
      params = _linear.ModelParams(*params)
    else:
      raise TypeError(
        f"{FN}: params must be ElmanNetParams(cell=ElmanParams, head=LinearParams) or a pair "
        f"(ElmanParams, LinearParams), got {type(params).__name__}."
      )
  for name, value, options in (
    ("activation", activation, _STATE_ACTIVATIONS),
    ("output", output, _OUTPUTS),
    ("loss", loss, _LOSSES),
    ("reduction", reduction, _REDUCTIONS),
  ):
    if value not in options:
      raise ValueError(f"{FN}: {name} must be one of {options}, got {value!r}.")
  if loss == "cross_entropy" and output == "linear":
    raise ValueError(
      f"{FN}: loss='cross_entropy' needs probabilities: use output='softmax' (integer labels) or "
      "output='sigmoid' (binary targets in [0, 1]); for unnormalised logits use output='softmax'."
    )
  if truncate is not None and not _checks.is_positive_int(truncate):
    raise ValueError(f"{FN}: truncate must be None or a positive int, got {truncate!r}.")
  wx, wh, b = (jnp.asarray(a) for a in params.cell)
  wy, by = (jnp.asarray(a) for a in params.head)
  if wx.ndim != 2:
    raise ValueError(f"{FN}: params.cell.wx must have shape [input_size, hidden_size], got {tuple(wx.shape)}.")
  I, H = wx.shape
  if wy.ndim != 2:
    raise ValueError(f"{FN}: params.head.w must have shape [hidden_size, output_size], got {tuple(wy.shape)}.")
  O = wy.shape[1]
  for name, a, shape in (
    ("params.cell.wh", wh, (H, H)),
    ("params.cell.b", b, (H,)),
    ("params.head.w", wy, (H, O)),
    ("params.head.b", by, (O,)),
  ):
    if a.shape != shape:
      raise ValueError(
        f"{FN}: {name} must have shape {shape} to match params.cell.wx {tuple(wx.shape)} "
        f"and params.head.w {tuple(wy.shape)}, got {tuple(a.shape)}."
      )
  dtype = wx.dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{FN}: params must be floating, got dtype {dtype}.")
  for name, a in (("params.cell.wh", wh), ("params.cell.b", b), ("params.head.w", wy), ("params.head.b", by)):
    if a.dtype != dtype:
      raise TypeError(f"{FN}: all params must share one dtype; params.cell.wx is {dtype} but {name} is {a.dtype}.")
  params = _linear.ModelParams(_elman.ElmanParams(wx, wh, b), _linear.LinearParams(wy, by))

  xs = jnp.asarray(xs)
  if xs.ndim != 2 or xs.shape[1] != I or xs.shape[0] == 0:
    raise ValueError(
      f"{FN}: xs must have shape [T, input_size] = [T, {I}] with T >= 1, got shape "
      f"{tuple(xs.shape)}. For a batch, wrap the call in jax.vmap."
    )
  if not jnp.issubdtype(xs.dtype, jnp.floating):
    raise TypeError(f"{FN}: xs must be floating, got dtype {xs.dtype}; one-hot encode tokens first.")
  xs = xs.astype(dtype)
  T = xs.shape[0]
  targets = jnp.asarray(targets)
  if loss == "cross_entropy" and output == "softmax":
    if not jnp.issubdtype(targets.dtype, jnp.integer):
      raise TypeError(
        f"{FN}: with output='softmax' and loss='cross_entropy', targets must be integer "
        f"class labels of shape [T] = ({T},), got dtype {targets.dtype}."
      )
    if targets.shape != (T,):
      raise ValueError(f"{FN}: targets must be integer labels of shape [T] = ({T},), got shape {tuple(targets.shape)}.")
  else:
    if not jnp.issubdtype(targets.dtype, jnp.floating):
      raise TypeError(
        f"{FN}: with output={output!r} and loss={loss!r}, targets must be floating "
        f"[T, output_size] = ({T}, {O}), got dtype {targets.dtype}."
      )
    if targets.shape != (T, O):
      raise ValueError(
        f"{FN}: targets must have shape [T, output_size] = ({T}, {O}), got shape {tuple(targets.shape)}."
      )
    targets = targets.astype(dtype)
  if s0 is None:
    s0 = jnp.zeros((H,), dtype)
  else:
    s0 = jnp.asarray(s0)
    if s0.shape != (H,):
      raise ValueError(f"{FN}: s0 must have shape [hidden_size] = ({H},), got shape {tuple(s0.shape)}.")
    if not jnp.issubdtype(s0.dtype, jnp.floating):
      raise TypeError(f"{FN}: s0 must be floating, got dtype {s0.dtype}.")
    s0 = s0.astype(dtype)
  return params, xs, targets, s0
