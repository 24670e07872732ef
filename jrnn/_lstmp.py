"""The LSTM with a recurrent projection layer, LSTMP (Sak, Senior & Beaufays, 2014)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _initializers

_orthogonal = jax.nn.initializers.orthogonal()


class LSTMPParams(NamedTuple):
  """Parameters of :func:`lstmp`; gate blocks in the order i, f, g, o (PyTorch's).

  Attributes:
    wx: input weights ``[input_size, 4 * hidden_size]``.
    wh: recurrent weights ``[proj_size, 4 * hidden_size]``: they act on the
      projected ``h``.
    b: bias ``[4 * hidden_size]`` (PyTorch's ``b_ih + b_hh``).
    wr: projection ``[hidden_size, proj_size]`` (PyTorch's ``weight_hr^T``).
  """

  wx: jax.Array
  wh: jax.Array
  b: jax.Array
  wr: jax.Array


class LSTMPCarry(NamedTuple):
  """The LSTMP's carry.

  Attributes:
    h: the projected hidden state ``[proj_size]``, also the step's output.
    c: the cell state ``[hidden_size]``.
  """

  h: jax.Array
  c: jax.Array


def lstmp(
  hidden_size: int, proj_size: int, *, forget_bias: float = 1.0, dtype=jnp.float32, compute_dtype=None
) -> _cell.Cell:
  r"""The LSTM with a projected hidden state (LSTMP), as PyTorch's ``nn.LSTM(..., proj_size=P)``.

  Gate order i, f, g, o. The cell state is the LSTM's (size ``H``); the
  hidden state, which is both the output and what the gates see at the next
  step, is projected down to size ``P``:

  .. math::

     [i_t, f_t, g_t, o_t] &= x_t W_x + h_{t-1} W_h + b \\
     c_t &= \sigma(f_t) \odot c_{t-1} + \sigma(i_t) \odot \tanh(g_t) \\
     h_t &= (\sigma(o_t) \odot \tanh(c_t))\, W_r

  with ``W_h: [P, 4H]`` and ``W_r: [H, P]``. The recurrent product then costs
  ``P·4H`` instead of ``H·4H``. The cell's ``hidden_size`` is ``P`` (the size
  of its outputs, what :func:`jrnn.stack` feeds the next layer and a head
  reads); the cell state keeps ``H``. ``P = H`` with ``W_r = I`` is
  :func:`jrnn.lstm`.

  Kind: :class:`jrnn.Projected` (the input product is hoisted). It is not an
  :class:`jrnn.AffineRecurrence`: the projection ``W_r`` is a parameter used
  after the non-linearities, which that kind's parameter-free ``update`` cannot
  hold, so ``vjp="fused"`` does not apply.

  Args:
    hidden_size: size ``H`` of the cell state ``c_t`` and of each gate.
    proj_size: size ``P`` of ``h_t``, the outputs.
    forget_bias: initial value of the forget gate's bias (as :func:`jrnn.lstm`).
    dtype: dtype of the parameters (and of ``c``).
    compute_dtype: dtype of the matrix products' inputs and of ``h``;
      ``None`` (default) for ``dtype``: then nothing is cast. As in
      :func:`jrnn.lstm` (mixed precision): with ``dtype=float32,
      compute_dtype=bfloat16`` the three products (``W_x``, ``W_h``, ``W_r``)
      take bfloat16 inputs and accumulate in float32, the gates and ``c``
      stay float32, and ``h_t`` is rounded to bfloat16 when stored: the
      carry is ``LSTMPCarry(h: bfloat16, c: float32)``, the outputs
      bfloat16, the params' gradients float32.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`LSTMPParams` and carry
    :class:`LSTMPCarry` ``(h [P], c [H])``, with ``hidden_size = proj_size``.

  Example:
    With ``P = H`` and ``W_r = I`` it is the plain LSTM:

    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.lstmp(4, 4)
    >>> p = cell.init(jax.random.key(0), 3)._replace(wr=jnp.eye(4))
    >>> xs = jax.random.normal(jax.random.key(1), (5, 3))
    >>> _, hs = jrnn.unroll(cell, p, xs)
    >>> _, want = jrnn.unroll(jrnn.lstm(4), jrnn.LSTMParams(p.wx, p.wh, p.b), xs)
    >>> float(jnp.max(jnp.abs(hs - want)))
    0.0
    >>> carry, hs = jrnn.unroll(jrnn.lstmp(8, 3), jrnn.lstmp(8, 3).init(jax.random.key(0), 3), xs)
    >>> hs.shape, carry.h.shape, carry.c.shape
    ((5, 3), (3,), (8,))

  References:
    Sak, Senior & Beaufays, "Long short-term memory recurrent neural network
    architectures for large scale acoustic modeling", Interspeech (2014).
    Micikevicius et al., "Mixed precision training", ICLR (2018).
  """
  name = "jrnn.lstmp"
  hidden_size = _checks.positive_int(hidden_size, "hidden_size", name)
  compute_dtype = _checks.compute_dtype(compute_dtype, name, dtype)
  if compute_dtype is not None:
    name = f"jrnn.lstmp(compute_dtype={compute_dtype.name})"
  proj_size = _checks.positive_int(proj_size, "proj_size", name)
  H, P = hidden_size, proj_size

  def init_fn(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    kx, kh, kr = jax.random.split(key, 3)
    b = jnp.zeros((4 * H,), dtype).at[H : 2 * H].set(forget_bias)
    wh = jnp.concatenate([_orthogonal(k, (P, H), jnp.float32).astype(dtype) for k in jax.random.split(kh, 4)], 1)
    return LSTMPParams(
      _initializers.input_weights(kx, input_size, H, 4, dtype),
      wh,
      b,
      _initializers.glorot_uniform(kr, (H, P), dtype),
    )

  def initial_carry(params):
    dtype = _cell.params_dtype(params)
    return LSTMPCarry(jnp.zeros((P,), dtype if compute_dtype is None else compute_dtype), jnp.zeros((H,), dtype))

  def project(params, xs):
    return _cell.affine(xs, params.wx, params.b, compute_dtype)

  def recur(params, carry, p):
    gates = p + _cell.matmul(carry.h, params.wh, compute_dtype)
    i = jax.nn.sigmoid(gates[..., :H])
    f = jax.nn.sigmoid(gates[..., H : 2 * H])
    g = jnp.tanh(gates[..., 2 * H : 3 * H])
    o = jax.nn.sigmoid(gates[..., 3 * H :])
    c = f * carry.c + i * g
    h = _cell.matmul(o * jnp.tanh(c), params.wr, compute_dtype)
    return LSTMPCarry(h if compute_dtype is None else h.astype(compute_dtype), c)

  def readout(params, carry, p):
    del params, p
    return carry.h

  kind = _cell.Projected(project=project, recur=recur, readout=readout)
  return _cell.make_cell(kind, name=name, hidden_size=P, init=init_fn, initial_carry=initial_carry)
