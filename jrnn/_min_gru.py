"""minGRU (Feng et al., 2024): a GRU whose gates see only the input, so it is linear in h."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _initializers


class MinGRUParams(NamedTuple):
  """Parameters of :func:`min_gru`; blocks in the order z, h̃.

  Attributes:
    wx: input weights ``[input_size, 2 * hidden_size]``.
    b: bias ``[2 * hidden_size]``.
  """

  wx: jax.Array
  b: jax.Array


def g(x: jax.Array) -> jax.Array:
  """``g(x) = x + 0.5`` for ``x >= 0``, ``σ(x)`` otherwise: positive, continuous, linear for large ``x``."""
  return jnp.where(x >= 0, jax.nn.relu(x) + 0.5, jax.nn.sigmoid(x))


def log_g(x: jax.Array) -> jax.Array:
  """``log g(x)`` computed without forming ``g(x)`` (``-softplus(-x)`` on the negative side)."""
  return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def min_gru(hidden_size: int, *, log_space: bool = False, dtype=jnp.float32) -> _cell.Cell:
  """The minimal GRU, linear in its state so it can run as a parallel scan.

  .. math::

     z_t &= \\sigma(x_t W_{xz} + b_z) \\\\
     \\tilde h_t &= x_t W_{xh} + b_h \\\\
     h_t &= (1 - z_t) \\odot h_{t-1} + z_t \\odot \\tilde h_t

  The gates depend on ``x_t`` only, so ``h_t = a_t ⊙ h_{t-1} + b_t`` with
  ``a_t = 1 - z_t`` and ``b_t = z_t ⊙ h̃_t``: ``jrnn.unroll(...,
  scan="associative")`` runs it as ``jax.lax.associative_scan``. The carry and
  the output are ``h_t``, ``[hidden_size]``.

  ``log_space=True`` is the paper's numerically stable variant: the candidate
  is made positive, ``h̃_t = g(x_t W_{xh} + b_h)`` with ``g(x) = x + 0.5`` for
  ``x ≥ 0`` and ``σ(x)`` otherwise, and the parallel scan runs in log space,
  ``log a_t = -softplus(k_z)``, ``log b_t = -softplus(-k_z) + log g(k_h)``
  (Heinsen, 2023; see :class:`jrnn.LogCoefficients`). The sequential path
  computes the same model in the plain form. (The associative scan never
  divides by a cumulative product, so the plain form is stable without logs
  too; the log form is there for fidelity to the paper.) The sequential
  path takes ``exp`` of the same log coefficients.

  Args:
    hidden_size: size of ``h_t``.
    log_space: use the positive candidate ``g`` and the log-space scan.
    dtype: dtype of the parameters.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`MinGRUParams`, with
    ``linear`` set.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.min_gru(32)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> xs = jax.random.normal(jax.random.key(1), (1000, 8))
    >>> _, hs = jrnn.unroll(cell, params, xs, scan="associative")
    >>> _, hs_sequential = jrnn.unroll(cell, params, xs, scan="sequential")
    >>> hs.shape, bool(jnp.allclose(hs, hs_sequential, atol=1e-5))
    ((1000, 32), True)

  References:
    Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs all we needed?",
    arXiv:2410.01201 (2024).
    Heinsen, "Efficient parallelization of a ubiquitous sequential computation",
    arXiv:2311.06281 (2023).
  """
  H = _checks.positive_int(hidden_size, "hidden_size", "jrnn.min_gru")

  def coefficients(p):
    z = jax.nn.sigmoid(p[..., :H])
    return 1.0 - z, z * p[..., H:]

  def log_coefficients(p):
    kz, kh = p[..., :H], p[..., H:]
    return _cell.LogCoefficients(-jax.nn.softplus(kz), -jax.nn.softplus(-kz) + log_g(kh))

  return input_gated("jrnn.min_gru", MinGRUParams, H, 2, log_coefficients if log_space else coefficients, dtype=dtype)


def input_gated(
  name: str, params_type: type, hidden_size: int, blocks: int, coefficients: Callable[[jax.Array], Any], *, dtype
) -> _cell.Cell:
  """A :class:`jrnn.LinearRecurrence` cell whose gates see only the input (minGRU, minLSTM).

  ``p_t = x_t W_x + b`` in ``blocks`` blocks of ``hidden_size``;
  ``coefficients(p) -> (a, b)`` (or :class:`jrnn.LogCoefficients`) of
  ``h_t = a_t ⊙ h_{t-1} + b_t``; the carry and the output are ``h_t``.
  ``params_type(wx, b)`` holds the params.
  """
  H = hidden_size

  def init_fn(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    return params_type(_initializers.input_weights(key, input_size, H, blocks, dtype), jnp.zeros((blocks * H,), dtype))

  def initial_carry(params):
    return jnp.zeros((H,), _cell.params_dtype(params))

  def project(params, xs):
    return _cell.affine(xs, params.wx, params.b)

  def cell_coefficients(params, p):
    del params
    return coefficients(p)

  kind = _cell.LinearRecurrence(project=project, coefficients=cell_coefficients, readout=lambda params, h, p: h)
  return _cell.make_cell(kind, name=name, hidden_size=H, init=init_fn, initial_carry=initial_carry)
