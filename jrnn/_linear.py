"""The linear read-out head ``y = h W_y + b_y``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _initializers
from jrnn import _options


class LinearParams(NamedTuple):
  """Params of :func:`linear`: ``w`` ``[in, out]`` (the seeds' Wy, or V) and ``b`` ``[out]``."""

  w: jax.Array
  b: jax.Array


class ModelParams(NamedTuple):
  """The params of a model made of a recurrent cell and a read-out head: the seeds' x → s → y.

  Attributes:
    cell: the cell's params (the seeds' ``Wx``, ``Ws`` and the state bias for an Elman cell).
    head: the head's params, :class:`LinearParams` (the seeds' ``Wy`` and output bias).
  """

  cell: Any
  head: Any


class Head(NamedTuple):
  """A read-out head: ``init(key, input_size) -> params`` and ``apply(params, h) -> y``.

  :func:`linear`'s ``apply`` also takes ``precision=``; the modes do not pass
  it, they call ``apply`` under ``jax.default_matmul_precision``, so any head
  follows their ``precision`` option.
  """

  init: Callable[[jax.Array, int], Any]
  apply: Callable[..., jax.Array]
  output_size: int


def linear(output_size: int, *, dtype=jnp.float32) -> Head:
  """A linear head: the Elman network's output layer.

  .. math::

     y_t = s_t W_y + b_y

  ``apply(params, h, *, precision=None)`` works on any leading shape (``[H]``,
  ``[T, H]``, ``[B, T, H]``); ``precision`` is the product's, as in
  :class:`jrnn.Options` (``None``: JAX's default or the surrounding
  ``jax.default_matmul_precision``; ``"highest"`` for float32 on TPU).
  For classification, ``y`` are logits: take :func:`jax.nn.softmax` for
  probabilities, or pass them to :func:`jrnn.losses.softmax_cross_entropy`.
  Weights are Glorot-uniform, the bias zero.

  Args:
    output_size: size of ``y``.
    dtype: dtype of the parameters.
  """
  name = "jrnn.linear"
  output_size = _checks.positive_int(output_size, "output_size", name)

  def init(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    return LinearParams(
      _initializers.glorot_uniform(key, (input_size, output_size), dtype), jnp.zeros((output_size,), dtype)
    )

  def apply(params, h, *, precision=None):
    precision = _options.check_precision(precision, f"{name}.apply")
    h = jnp.asarray(h)
    if h.ndim < 1 or h.shape[-1] != params.w.shape[0]:
      raise ValueError(f"{name}.apply: h must have shape [..., {params.w.shape[0]}], got shape {tuple(h.shape)}.")
    if not jnp.issubdtype(h.dtype, jnp.floating):
      raise TypeError(f"{name}.apply: h must be floating, got dtype {h.dtype}.")
    with _options.matmul_precision(precision):
      return _cell.affine(h.astype(params.w.dtype), params.w, params.b)

  return Head(init, apply, output_size)
