"""The Linear Recurrent Unit (Orvieto et al., 2023): a diagonal complex linear recurrence."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jrnn import _cell
from jrnn import _checks


class LRUParams(NamedTuple):
  """Parameters of :func:`lru`, all real (complex matrices as real and imaginary parts).

  Attributes:
    nu_log: ``[state_size]``, ``|λ| = exp(-exp(nu_log))``.
    theta_log: ``[state_size]``, ``arg λ = exp(theta_log)``.
    gamma_log: ``[state_size]``, the input normalisation ``γ = exp(gamma_log)``.
    b_re, b_im: input matrix ``B`` ``[input_size, state_size]``.
    c_re, c_im: output matrix ``C`` ``[state_size, hidden_size]``.
    d: skip connection ``D`` ``[input_size, hidden_size]``.
  """

  nu_log: jax.Array
  theta_log: jax.Array
  gamma_log: jax.Array
  b_re: jax.Array
  b_im: jax.Array
  c_re: jax.Array
  c_im: jax.Array
  d: jax.Array


def eigenvalues(params: LRUParams) -> jax.Array:
  """``λ = exp(-exp(ν) + i exp(θ))``, complex ``[state_size]``."""
  return jnp.exp(lax.complex(-jnp.exp(params.nu_log), jnp.exp(params.theta_log)))


def lru(
  hidden_size: int,
  *,
  state_size: int | None = None,
  r_min: float = 0.0,
  r_max: float = 1.0,
  max_phase: float = 2 * math.pi,
  dtype=jnp.float32,
) -> _cell.Cell:
  """The Linear Recurrent Unit: a diagonal complex recurrence with a real read-out.

  .. math::

     \\lambda &= \\exp(-\\exp(\\nu) + i \\exp(\\theta)) \\\\
     x_t &= \\lambda \\odot x_{t-1} + \\gamma \\odot (u_t B) \\\\
     y_t &= \\mathrm{Re}(x_t C) + u_t D

  with ``x_t ∈ ℂ^N`` (``N = state_size``), ``B ∈ ℂ^{I×N}``, ``C ∈ ℂ^{N×H}``
  and ``D ∈ ℝ^{I×H}``. The exponential parametrisation keeps ``|λ| < 1``
  (stable) for any ``ν``. Initialisation as in the paper: ring initialisation,
  ``|λ|²`` uniform on ``[r_min², r_max²]`` (``λ`` uniform on the ring's area)
  and ``arg λ`` uniform on ``[0, max_phase]``; the normalisation ``γ =
  sqrt(1 - |λ|²)`` (a trained parameter, ``gamma_log``, initialised to this);
  ``B ~ 𝒩(0, 1/(2I))`` and ``C ~ 𝒩(0, 1/N)`` per real and imaginary part.

  Differences from the paper, to fit jrnn's cell contract: the output size is
  ``hidden_size`` (``C`` maps to ``H`` and ``D`` is a dense ``[I, H]`` matrix,
  ``𝒩(0, 1/I)``), so ``hidden_size`` is the size of what :func:`jrnn.unroll`
  returns; with ``I = H`` and ``D`` kept diagonal this is the paper's layer.
  The paper's layer is a linear map: put it in :func:`jrnn.linear_recurrent_block`
  for the non-linear mixing between layers.

  The recurrence is linear in ``x``, so ``jrnn.unroll(..., scan="associative")``
  runs it as a parallel scan. The carry is the complex state ``x_t``
  ``[state_size]``: complex64 for float32 params, complex128 for float64.
  ``cell.step`` returns ``(x_t, y_t)``.

  Args:
    hidden_size: size of the output ``y_t``.
    state_size: size ``N`` of the complex state; defaults to ``hidden_size``.
    r_min, r_max: the ring ``r_min ≤ |λ| ≤ r_max`` at initialisation,
      ``0 ≤ r_min ≤ r_max ≤ 1`` (the paper uses e.g. 0.9 and 0.999 for long
      ranges).
    max_phase: ``arg λ`` is initialised uniform on ``[0, max_phase]``
      (the paper uses ``π/10`` for long-range tasks).
    dtype: dtype of the (real) parameters.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`LRUParams`, of kind
    :class:`jrnn.LinearRecurrence`.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.lru(32, state_size=64, r_min=0.9, r_max=0.999)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> state, ys = jrnn.unroll(cell, params, jnp.ones((1000, 8)), scan="associative")
    >>> ys.shape, state.dtype, bool(jnp.all(jnp.abs(jrnn._lru.eigenvalues(params)) < 1))
    ((1000, 32), dtype('complex64'), True)

  References:
    Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De, "Resurrecting recurrent
    neural networks for long sequences", ICML (2023), arXiv:2303.06349.
  """
  name = "jrnn.lru"
  hidden_size = _checks.positive_int(hidden_size, "hidden_size", name)
  H = hidden_size
  N = H if state_size is None else _checks.positive_int(state_size, "state_size", name)
  if not 0.0 <= r_min <= r_max <= 1.0:
    raise ValueError(f"{name}: need 0 <= r_min <= r_max <= 1, got r_min={r_min!r}, r_max={r_max!r}.")
  if not max_phase > 0:
    raise ValueError(f"{name}: max_phase must be positive, got {max_phase!r}.")

  def init_fn(key, input_size):
    I = _checks.positive_int(input_size, "input_size", f"{name}.init")
    k1, k2, kb1, kb2, kc1, kc2, kd = jax.random.split(key, 7)
    tiny = jnp.finfo(dtype).tiny  # keeps log(0) out of nu_log and theta_log
    u1 = jax.random.uniform(k1, (N,), dtype, minval=tiny)
    u2 = jax.random.uniform(k2, (N,), dtype, minval=tiny)
    mod2 = u1 * (r_max**2 - r_min**2) + r_min**2  # |λ|², uniform on [r_min², r_max²]
    nu_log = jnp.log(-0.5 * jnp.log(mod2))
    theta_log = jnp.log(max_phase * u2)
    gamma_log = 0.5 * jnp.log1p(-mod2)
    normal = lambda k, shape, fan: jax.random.normal(k, shape, dtype) / math.sqrt(fan)
    return LRUParams(
      nu_log,
      theta_log,
      gamma_log,
      normal(kb1, (I, N), 2 * I),
      normal(kb2, (I, N), 2 * I),
      normal(kc1, (N, H), N),
      normal(kc2, (N, H), N),
      normal(kd, (I, H), I),
    )

  def initial_carry(params):
    zeros = jnp.zeros((N,), _cell.params_dtype(params))
    return lax.complex(zeros, zeros)

  def project(params, xs):
    gamma = jnp.exp(params.gamma_log)
    re, im = xs @ params.b_re, xs @ params.b_im
    return lax.complex(re * _cell.trailing(gamma, re), im * _cell.trailing(gamma, im)), xs @ params.d

  def coefficients(params, p):
    bu, _ = p
    return jnp.broadcast_to(eigenvalues(params), bu.shape), bu

  def readout(params, x, p):
    _, du = p
    return x.real @ params.c_re - x.imag @ params.c_im + du

  def input_size_fn(params):
    return params.b_re.shape[0]

  kind = _cell.LinearRecurrence(project=project, coefficients=coefficients, readout=readout)
  return _cell.make_cell(
    kind, name=name, hidden_size=H, init=init_fn, initial_carry=initial_carry, input_size=input_size_fn
  )
