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


def lstm(hidden_size: int, *, forget_bias: float = 1.0, dtype=jnp.float32, compute_dtype=None) -> _cell.Cell:
  """The LSTM cell, gate order i, f, g, o (PyTorch's ``nn.LSTM``).

  .. math::

     [i_t, f_t, g_t, o_t] &= x_t W_x + h_{t-1} W_h + b \\\\
     c_t &= \\sigma(f_t) \\odot c_{t-1} + \\sigma(i_t) \\odot \\tanh(g_t) \\\\
     h_t &= \\sigma(o_t) \\odot \\tanh(c_t)

  The forget-gate slice of ``b`` starts at ``forget_bias`` (Gers et al. 2000;
  Jozefowicz et al. 2015), stored in ``b`` itself: no hidden constant is added
  in the step, so the params mean exactly what PyTorch's mean.
  The carry is :class:`LSTMCarry` ``(h, c)``.

  **Mixed precision** (Micikevicius et al. 2018), in the manner of Flax's
  ``param_dtype``/``dtype``: ``dtype`` is the params' (storage) dtype,
  ``compute_dtype`` that of the matrix products. With ``dtype=float32,
  compute_dtype=bfloat16``, ``x_t``, ``h_{t-1}``, ``W_x`` and ``W_h`` are cast
  to bfloat16 for the two products, which accumulate in float32
  (``preferred_element_type``); the gate pre-activations, the nonlinearities
  and the cell state ``c`` stay float32 (``c`` integrates over time, where
  bfloat16's 8-bit mantissa would lose small updates); ``h_t`` is rounded to
  bfloat16 once, when stored. So the carry is ``LSTMCarry(h: bfloat16, c:
  float32)``, the outputs are bfloat16, and the params' gradients float32.
  The cell's name becomes ``jrnn.lstm(compute_dtype=bfloat16)``; cuDNN
  (``kernel="cudnn"``) runs only the plain one.

  Args:
    hidden_size: size of ``h_t`` and ``c_t``.
    forget_bias: initial value of the forget gate's bias.
    dtype: dtype of the parameters (and of ``c``).
    compute_dtype: dtype of the matrix products' inputs and of ``h``; ``None``
      (default) for ``dtype``: then nothing is cast.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`LSTMParams`.

  References:
    Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation (1997).
    Gers, Schmidhuber & Cummins, "Learning to forget", Neural Computation (2000).
    Micikevicius et al., "Mixed precision training", ICLR (2018).
  """
  name = "jrnn.lstm"
  hidden_size = _checks.positive_int(hidden_size, "hidden_size", name)
  compute_dtype = _checks.compute_dtype(compute_dtype, name, dtype)
  if compute_dtype is not None:
    name = f"jrnn.lstm(compute_dtype={compute_dtype.name})"
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
    return LSTMCarry(jnp.zeros((H,), dtype if compute_dtype is None else compute_dtype), jnp.zeros((H,), dtype))

  def project(params, xs):
    return _cell.affine(xs, params.wx, params.b, compute_dtype)

  def recurrent(params, carry):
    return _cell.matmul(carry.h, params.wh, compute_dtype)

  def update(carry, p, q):
    gates = p + q
    i = jax.nn.sigmoid(gates[..., :H])
    f = jax.nn.sigmoid(gates[..., H : 2 * H])
    g = jnp.tanh(gates[..., 2 * H : 3 * H])
    o = jax.nn.sigmoid(gates[..., 3 * H :])
    c = f * carry.c + i * g
    h = o * jnp.tanh(c)
    return LSTMCarry(h if compute_dtype is None else h.astype(compute_dtype), c)

  kind = _cell.AffineRecurrence(project=project, recurrent=recurrent, update=update, output=lambda carry: carry.h)
  return _cell.make_cell(kind, name=name, hidden_size=H, init=init_fn, initial_carry=initial_carry)
