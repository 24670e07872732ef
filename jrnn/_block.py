"""A residual block around a linear recurrence: the non-linear mixing between layers."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _initializers


class BlockParams(NamedTuple):
  """Params of :func:`linear_recurrent_block`.

  Attributes:
    cell: the inner cell's params.
    w: GLU weights ``[hidden_size, 2 * hidden_size]``, blocks in the order value, gate.
    b: GLU bias ``[2 * hidden_size]``.
  """

  cell: Any
  w: jax.Array
  b: jax.Array


def _norm(x, eps=1e-5):
  """Layer normalisation over features, without learned scale or shift."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def linear_recurrent_block(cell: _cell.Cell, *, dtype=jnp.float32) -> _cell.Cell:
  """Wraps a (linear-recurrent) cell in a pre-norm residual block with a GLU.

  .. math::

     h_t &= \\mathrm{cell}(h_{t-1}, \\mathrm{LN}(u_t)) \\\\
     y_t &= u_t + (h_t W_v + b_v) \\odot \\sigma(h_t W_g + b_g)

  the block of the LRU and minGRU papers (normalisation, recurrence,
  position-wise non-linearity, skip connection), so that a
  :func:`jrnn.stack` of blocks is a deep network although each recurrence is
  linear. ``LN`` has no learned parameters. The skip term ``u_t`` is added only
  when ``input_size == hidden_size`` (from the second layer of a stack of equal
  widths on); a first layer of another width has none.

  The non-linearities act on the input and on the output of the recurrence,
  never inside it, so the block keeps a :class:`jrnn.LinearRecurrence` cell's
  kind: it runs with ``jrnn.unroll(..., scan="associative")`` when ``cell``
  does. It is a cell wrapper: any split cell (``Projected``,
  ``AffineRecurrence``, ``LinearRecurrence``) can be wrapped. It also has a
  ``step`` (generation, :func:`jrnn.one_to_many`). The carry is the inner cell's.

  Args:
    cell: the recurrent cell, e.g. :func:`jrnn.min_gru` or :func:`jrnn.lru`
      (any split cell works sequentially).
    dtype: dtype of the GLU parameters.

  Returns:
    A :class:`jrnn.Cell` with :class:`BlockParams` and ``hidden_size =
    cell.hidden_size``.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> deep = jrnn.stack([jrnn.linear_recurrent_block(jrnn.min_gru(16)) for _ in range(3)])
    >>> params = deep.init(jax.random.key(0), 16)
    >>> xs = jax.random.normal(jax.random.key(1), (50, 16))
    >>> _, hs = jrnn.unroll(deep, params, xs, scan="associative")
    >>> hs.shape, bool(jnp.allclose(hs, jrnn.unroll(deep, params, xs, scan="sequential")[1], atol=1e-4))
    ((50, 16), True)

  References:
    Orvieto et al., "Resurrecting recurrent neural networks for long sequences",
    ICML (2023), section 3 and figure 1; Feng et al., "Were RNNs all we
    needed?", arXiv:2410.01201 (2024); Dauphin et al., "Language modeling with
    gated convolutional networks", ICML (2017) (the GLU).
  """
  name = "jrnn.linear_recurrent_block"
  if not isinstance(cell, _cell.Cell):
    raise TypeError(f"{name}: cell must be a jrnn.Cell, got {type(cell).__name__}.")
  inner = cell.kind
  if not isinstance(inner, _cell.SPLIT_KINDS):
    raise ValueError(
      f"{name}: {cell.name} is a {type(inner).__name__}; the block wraps a cell split into "
      "project and recur (jrnn.Projected, AffineRecurrence or LinearRecurrence)."
    )
  H = cell.hidden_size

  def init(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    kc, kw = jax.random.split(key)
    return BlockParams(
      cell.init(kc, input_size), _initializers.input_weights(kw, H, H, 2, dtype), jnp.zeros((2 * H,), dtype)
    )

  def initial_carry(params):
    return cell.initial_carry(params.cell)

  def project(params, xs):
    return inner.project(params.cell, _norm(xs)), xs

  def recur(params, c, p):
    return inner.recur(params.cell, c, p[0])

  def readout(params, c, p):
    pc, u = p
    y = _cell.affine(inner.readout(params.cell, c, pc), params.w, params.b)
    y = y[..., :H] * jax.nn.sigmoid(y[..., H:])
    return y + u if u.shape[-1] == H else y

  if isinstance(inner, _cell.LinearRecurrence):
    kind = _cell.LinearRecurrence(
      project=project, readout=readout, coefficients=lambda params, p: inner.coefficients(params.cell, p[0])
    )
  else:
    kind = _cell.Projected(project=project, recur=recur, readout=readout)
  return _cell.make_cell(
    kind,
    name=name,
    hidden_size=H,
    init=init,
    initial_carry=initial_carry,
    input_size=lambda params: cell.input_size(params.cell),
  )
