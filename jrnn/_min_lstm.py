"""minLSTM (Feng et al., 2024): an LSTM reduced to input-only gates, linear in h."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _min_gru


class MinLSTMParams(NamedTuple):
  """Parameters of :func:`min_lstm`; blocks in the order f, i, h̃.

  Attributes:
    wx: input weights ``[input_size, 3 * hidden_size]``.
    b: bias ``[3 * hidden_size]``.
  """

  wx: jax.Array
  b: jax.Array


def min_lstm(hidden_size: int, *, log_space: bool = False, dtype=jnp.float32) -> _cell.Cell:
  """The minimal LSTM, with the paper's length-independent gate normalisation.

  .. math::

     f_t &= \\sigma(x_t W_{xf} + b_f), \\quad i_t = \\sigma(x_t W_{xi} + b_i) \\\\
     f'_t &= \\frac{f_t}{f_t + i_t}, \\quad i'_t = \\frac{i_t}{f_t + i_t} \\\\
     \\tilde h_t &= x_t W_{xh} + b_h \\\\
     h_t &= f'_t \\odot h_{t-1} + i'_t \\odot \\tilde h_t

  Linear in ``h`` (``a_t = f'_t``, ``b_t = i'_t ⊙ h̃_t``), so
  ``jrnn.unroll(..., scan="associative")`` runs it as a parallel scan. There is
  no separate cell state and no output gate: the carry and the output are
  ``h_t``, ``[hidden_size]``.

  ``log_space=True`` is the paper's stable variant: ``h̃_t = g(x_t W_{xh} +
  b_h)`` (``g`` as in :func:`jrnn.min_gru`), and the scan runs in log space with
  ``d = softplus(-k_f) - softplus(-k_i)``, ``log f'_t = -softplus(d)``,
  ``log i'_t = -softplus(-d)`` (Heinsen, 2023).

  Args:
    hidden_size: size of ``h_t``.
    log_space: use the positive candidate ``g`` and the log-space scan.
    dtype: dtype of the parameters.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`MinLSTMParams`, with
    ``linear`` set.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.min_lstm(32, log_space=True)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> xs = jax.random.normal(jax.random.key(1), (1000, 8))
    >>> _, hs = jrnn.unroll(cell, params, xs, scan="associative")
    >>> _, hs_sequential = jrnn.unroll(cell, params, xs, scan="sequential")
    >>> hs.shape, bool(jnp.allclose(hs, hs_sequential, atol=1e-5))
    ((1000, 32), True)

  References:
    Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs all we needed?",
    arXiv:2410.01201 (2024).
  """
  H = _checks.positive_int(hidden_size, "hidden_size", "jrnn.min_lstm")

  def coefficients(p):
    f = jax.nn.sigmoid(p[..., :H])
    i = jax.nn.sigmoid(p[..., H : 2 * H])
    return f / (f + i), i / (f + i) * p[..., 2 * H :]

  def log_coefficients(p):
    d = jax.nn.softplus(-p[..., :H]) - jax.nn.softplus(-p[..., H : 2 * H])
    return _cell.LogCoefficients(-jax.nn.softplus(d), -jax.nn.softplus(-d) + _min_gru.log_g(p[..., 2 * H :]))

  return _min_gru.input_gated(
    "jrnn.min_lstm", MinLSTMParams, H, 3, log_coefficients if log_space else coefficients, dtype=dtype
  )
