"""The Elman network's recurrent cell (Elman, 1990)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _initializers

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}


class ElmanParams(NamedTuple):
  """Parameters of :func:`elman`.

  Attributes:
    wx: input weights ``[input_size, hidden_size]`` (the seeds' Wx, or U).
    wh: recurrent weights ``[hidden_size, hidden_size]`` (the seeds' Ws, or W).
    b: bias ``[hidden_size]``.
  """

  wx: jax.Array
  wh: jax.Array
  b: jax.Array


def elman(
  hidden_size: int,
  *,
  activation: str | Callable[[jax.Array], jax.Array] = "tanh",
  init: str = "default",
  dtype=jnp.float32,
  compute_dtype=None,
) -> _cell.Cell:
  """The Elman (simple) recurrent cell.

  .. math::

     s_t = \\phi(x_t W_x + s_{t-1} W_s + b)

  with ``φ`` = tanh (default), ReLU, the logistic sigmoid, or any elementwise
  callable. The output of each step is the state ``s_t``; put a
  :func:`jrnn.linear` head on it for ``y_t = s_t W_y + b_y``. The carry is
  ``s_t`` itself, ``[hidden_size]``.

  Args:
    hidden_size: size of the state ``s_t``.
    activation: ``"tanh"``, ``"relu"``, ``"sigmoid"`` or a callable.
    init: ``"default"`` (Glorot-uniform ``W_x``, orthogonal ``W_s``, zero
      ``b``) or ``"identity"`` (IRNN: ``W_s = I``, ``b = 0``, ``W_x`` from
      N(0, 0.001²); meant for ``activation="relu"``).
    dtype: dtype of the parameters (and of the computation, unless
      ``compute_dtype`` says otherwise).
    compute_dtype: dtype of the matrix products' inputs and of the state;
      ``None`` (default) for ``dtype``: then nothing is cast. With
      ``dtype=float32, compute_dtype=bfloat16`` (mixed precision,
      Micikevicius et al. 2018; Flax's ``param_dtype``/``dtype``), ``x_t``,
      ``s_{t-1}``, ``W_x`` and ``W_s`` are cast to bfloat16 for the products,
      which accumulate in float32 (``preferred_element_type``); the bias and
      ``φ`` run in float32, and ``s_t`` is rounded to bfloat16 once, when
      stored (it is recomputed from scratch every step, so nothing
      integrates its rounding). The carry and the outputs are then bfloat16,
      the params' gradients float32.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`ElmanParams`.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.elman(16)
    >>> params = cell.init(jax.random.key(0), 4)
    >>> xs = jnp.ones((10, 4))
    >>> carry, hs = jrnn.unroll(cell, params, xs)
    >>> s1 = jnp.tanh(xs[0] @ params.wx + params.b)            # s₀ = 0
    >>> hs.shape, bool(jnp.allclose(hs[0], s1)), bool(jnp.array_equal(carry, hs[-1]))
    ((10, 16), True, True)

  References:
    Elman, "Finding structure in time", Cognitive Science 14 (1990).
    Le, Jaitly & Hinton, "A simple way to initialize recurrent networks of
    rectified linear units", arXiv:1504.00941 (2015).
    Micikevicius et al., "Mixed precision training", ICLR (2018).
  """
  name = "jrnn.elman"
  hidden_size = _checks.positive_int(hidden_size, "hidden_size", name)
  compute_dtype = _checks.compute_dtype(compute_dtype, name, dtype)
  if compute_dtype is not None:
    name = f"jrnn.elman(compute_dtype={compute_dtype.name})"
  if isinstance(activation, str):
    if activation not in _ACTIVATIONS:
      raise ValueError(f"{name}: activation must be one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}.")
    phi = _ACTIVATIONS[activation]
  elif callable(activation):
    phi = activation
  else:
    raise TypeError(f"{name}: activation must be a string or a callable, got {type(activation).__name__}.")
  if init not in ("default", "identity"):
    raise ValueError(f"{name}: init must be 'default' or 'identity', got {init!r}.")

  def init_fn(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    kx, kh = jax.random.split(key)
    b = jnp.zeros((hidden_size,), dtype)
    if init == "identity":
      wx = 1e-3 * jax.random.normal(kx, (input_size, hidden_size), jnp.float32)
      return ElmanParams(wx.astype(dtype), jnp.eye(hidden_size, dtype=dtype), b)
    return ElmanParams(
      _initializers.input_weights(kx, input_size, hidden_size, 1, dtype),
      _initializers.recurrent_weights(kh, hidden_size, 1, dtype),
      b,
    )

  def initial_carry(params):
    return jnp.zeros((hidden_size,), _cell.params_dtype(params) if compute_dtype is None else compute_dtype)

  def project(params, xs):
    return _cell.affine(xs, params.wx, params.b, compute_dtype)

  def recurrent(params, s):
    return _cell.matmul(s, params.wh, compute_dtype)

  def update(s, p, q):
    s = phi(p + q)
    return s if compute_dtype is None else s.astype(compute_dtype)

  kind = _cell.AffineRecurrence(project=project, recurrent=recurrent, update=update, output=lambda s: s)
  return _cell.make_cell(kind, name=name, hidden_size=hidden_size, init=init_fn, initial_carry=initial_carry)
