"""Long short-term memory (Hochreiter & Schmidhuber, 1997; Gers et al., 2000)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _initializers


class LSTMParams(NamedTuple):
  """Parameters of :func:`lstm`; gate blocks in the order i, f, g, o (PyTorch's).

  Attributes:
    wx: input weights ``[input_size, 4 * hidden_size]``.
    wh: recurrent weights ``[hidden_size, 4 * hidden_size]``.
    b: bias ``[4 * hidden_size]`` (PyTorch's ``b_ih + b_hh``).
  """

  wx: jax.Array
  wh: jax.Array
  b: jax.Array


class LSTMCarry(NamedTuple):
  """The LSTM's carry: hidden state ``h`` and cell state ``c``, each ``[hidden_size]``."""

  h: jax.Array
  c: jax.Array


def lstm(hidden_size: int, *, forget_bias: float = 1.0, dtype=jnp.float32) -> _cell.Cell:
  """The LSTM cell, gate order i, f, g, o (PyTorch's ``nn.LSTM``).

  .. math::

     [i_t, f_t, g_t, o_t] &= x_t W_x + h_{t-1} W_h + b \\\\
     c_t &= \\sigma(f_t) \\odot c_{t-1} + \\sigma(i_t) \\odot \\tanh(g_t) \\\\
     h_t &= \\sigma(o_t) \\odot \\tanh(c_t)

  The forget-gate slice of ``b`` starts at ``forget_bias`` (Gers et al. 2000;
  Jozefowicz et al. 2015), stored in ``b`` itself: no hidden constant is added
  in the step, so the params mean exactly what PyTorch's mean.
  The carry is :class:`LSTMCarry` ``(h, c)``.

  Args:
    hidden_size: size of ``h_t`` and ``c_t``.
    forget_bias: initial value of the forget gate's bias.
    dtype: dtype of the parameters.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`LSTMParams`.

  References:
    Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation (1997).
    Gers, Schmidhuber & Cummins, "Learning to forget", Neural Computation (2000).
  """
  name = "jrnn.lstm"
  hidden_size = _checks.positive_int(hidden_size, "hidden_size", name)
  H = hidden_size

  def init_fn(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    kx, kh = jax.random.split(key)
    b = jnp.zeros((4 * H,), dtype).at[H : 2 * H].set(forget_bias)
    return LSTMParams(
      _initializers.input_weights(kx, input_size, H, 4, dtype),
      _initializers.recurrent_weights(kh, H, 4, dtype),
      b,
    )

  def initial_carry(params):
    dtype = _cell.params_dtype(params)
    return LSTMCarry(jnp.zeros((H,), dtype), jnp.zeros((H,), dtype))

  def project(params, xs):
    return _cell.affine(xs, params.wx, params.b)

  def recurrent(params, carry):
    return carry.h @ params.wh

  def update(carry, p, q):
    gates = p + q
    i = jax.nn.sigmoid(gates[..., :H])
    f = jax.nn.sigmoid(gates[..., H : 2 * H])
    g = jnp.tanh(gates[..., 2 * H : 3 * H])
    o = jax.nn.sigmoid(gates[..., 3 * H :])
    c = f * carry.c + i * g
    return LSTMCarry(o * jnp.tanh(c), c)

  kind = _cell.AffineRecurrence(project=project, recurrent=recurrent, update=update, output=lambda carry: carry.h)
  return _cell.make_cell(kind, name=name, hidden_size=H, init=init_fn, initial_carry=initial_carry)
