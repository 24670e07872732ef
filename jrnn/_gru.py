"""The gated recurrent unit (Cho et al., 2014), in PyTorch's and cuDNN's form."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _initializers


class GRUParams(NamedTuple):
  """Parameters of :func:`gru`; gate blocks in the order r, z, n.

  Attributes:
    wx: input weights ``[input_size, 3 * hidden_size]``.
    wh: recurrent weights ``[hidden_size, 3 * hidden_size]``.
    b: bias ``[3 * hidden_size]`` added to the input side; for r and z it is
      PyTorch's ``b_ih + b_hh``, for n it is ``b_in``.
    bhn: the bias ``[hidden_size]`` of the recurrent n branch, ``b_hn``, which
      sits inside the reset gate's product and so cannot be merged into ``b``.
  """

  wx: jax.Array
  wh: jax.Array
  b: jax.Array
  bhn: jax.Array


def gru(hidden_size: int, *, dtype=jnp.float32, compute_dtype=None) -> _cell.Cell:
  """The GRU cell, gate order r, z, n (PyTorch's ``nn.GRU`` and cuDNN).

  .. math::

     r_t &= \\sigma(x_t W_{xr} + h_{t-1} W_{hr} + b_r) \\\\
     z_t &= \\sigma(x_t W_{xz} + h_{t-1} W_{hz} + b_z) \\\\
     n_t &= \\tanh(x_t W_{xn} + b_n + r_t \\odot (h_{t-1} W_{hn} + b_{hn})) \\\\
     h_t &= (1 - z_t) \\odot n_t + z_t \\odot h_{t-1}

  The reset gate multiplies ``h W_hn + b_hn`` after the matrix product (cuDNN's
  form, also PyTorch's and Flax's), not ``h`` before it as in Cho et al.
  The carry is ``h_t``, ``[hidden_size]``.

  **Mixed precision** (Micikevicius et al. 2018), in the manner of Flax's
  ``param_dtype``/``dtype``: ``dtype`` is the params' (storage) dtype,
  ``compute_dtype`` that of the matrix products. With ``dtype=float32,
  compute_dtype=bfloat16``, ``x_t``, ``h_{t-1}``, ``W_x`` and ``W_h`` are cast
  to bfloat16 for the two products, which accumulate in float32
  (``preferred_element_type``); the biases, the gates and the state ``h``
  stay float32: ``h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}`` integrates over time
  as the LSTM's cell state does, and bfloat16's 8-bit mantissa would lose
  small updates. So the carry and the outputs are float32 (the params'
  dtype), and the params' gradients float32.

  Args:
    hidden_size: size of ``h_t``.
    dtype: dtype of the parameters (and of ``h``).
    compute_dtype: dtype of the matrix products' inputs; ``None`` (default)
      for ``dtype``: then nothing is cast.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`GRUParams`.

  References:
    Cho et al., "Learning phrase representations using RNN encoder-decoder for
    statistical machine translation", EMNLP (2014).
    Micikevicius et al., "Mixed precision training", ICLR (2018).
  """
  name = "jrnn.gru"
  hidden_size = _checks.positive_int(hidden_size, "hidden_size", name)
  compute_dtype = _checks.compute_dtype(compute_dtype, name, dtype)
  if compute_dtype is not None:
    name = f"jrnn.gru(compute_dtype={compute_dtype.name})"
  H = hidden_size

  def init_fn(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    kx, kh = jax.random.split(key)
    return GRUParams(
      _initializers.input_weights(kx, input_size, H, 3, dtype),
      _initializers.recurrent_weights(kh, H, 3, dtype),
      jnp.zeros((3 * H,), dtype),
      jnp.zeros((H,), dtype),
    )

  def initial_carry(params):
    return jnp.zeros((H,), _cell.params_dtype(params))

  def project(params, xs):
    return _cell.affine(xs, params.wx, params.b, compute_dtype)

  def recurrent(params, h):
    # [r | z | n] blocks; b_hn joins the n block (inside the reset gate), + 0 elsewhere.
    return _cell.affine(h, params.wh, jnp.pad(params.bhn, (2 * H, 0)), compute_dtype)

  def update(h, p, q):
    r = jax.nn.sigmoid(p[..., :H] + q[..., :H])
    z = jax.nn.sigmoid(p[..., H : 2 * H] + q[..., H : 2 * H])
    n = jnp.tanh(p[..., 2 * H :] + r * q[..., 2 * H :])
    return (1.0 - z) * n + z * h

  kind = _cell.AffineRecurrence(project=project, recurrent=recurrent, update=update, output=lambda h: h)
  return _cell.make_cell(kind, name=name, hidden_size=H, init=init_fn, initial_carry=initial_carry)
