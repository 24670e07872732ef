r"""Layer-normalised LSTM and GRU cells (Ba, Kiros & Hinton, 2016).

Layer normalisation of a vector ``a`` of ``n`` pre-activations, with a learned
gain ``γ`` and bias ``β``:

.. math::

   \mathrm{LN}(a; γ, β) = γ \odot \frac{a - μ}{\sqrt{σ^2 + ε}} + β, \qquad
   μ = \frac1n \sum_k a_k, \quad σ^2 = \frac1n \sum_k (a_k - μ)^2

The statistics are over the whole vector: following the paper (section 3.1 and
the LSTM equations of its supplementary material), the LSTM's four gate blocks
``[i, f, g, o]`` are normalised together as one ``4H`` vector, the GRU's
``[r, z, n]`` as one ``3H`` vector, not gate by gate as some implementations do.
The input product ``x_t W_x`` and the recurrent product ``h_{t-1} W_h`` are
normalised separately, each with its own gain.

Both cells are :class:`jrnn.Projected`: the normalisation of ``x_t W_x`` is per
row, so it is hoisted with the product out of the scan; the normalisation of
``h_{t-1} W_h`` makes the step non-affine in the carry, so ``vjp="fused"`` does
not apply.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _initializers
from jrnn import _lstm


def layer_norm(a: jax.Array, gain: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """``LN(a; gain, bias)`` over the last axis of ``a: [..., n]`` (biased variance, as the paper and PyTorch)."""
  mu = jnp.mean(a, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(a - mu), axis=-1, keepdims=True)
  return _cell.trailing(gain, a) * ((a - mu) * jax.lax.rsqrt(var + eps)) + _cell.trailing(bias, a)


class LayerNormLSTMParams(NamedTuple):
  """Parameters of :func:`layer_norm_lstm`; gate blocks in the order i, f, g, o.

  Attributes:
    wx: input weights ``[input_size, 4 * hidden_size]``.
    wh: recurrent weights ``[hidden_size, 4 * hidden_size]``.
    gx: gain ``[4 * hidden_size]`` of the input product's normalisation.
    gh: gain ``[4 * hidden_size]`` of the recurrent product's normalisation.
    b: bias ``[4 * hidden_size]``: the paper's ``b`` and the two
      normalisations' biases ``β_x + β_h``, which are only ever summed, kept as one.
    gc: gain ``[hidden_size]`` of the cell state's normalisation.
    bc: bias ``[hidden_size]`` of the cell state's normalisation.
  """

  wx: jax.Array
  wh: jax.Array
  gx: jax.Array
  gh: jax.Array
  b: jax.Array
  gc: jax.Array
  bc: jax.Array


class LayerNormGRUParams(NamedTuple):
  """Parameters of :func:`layer_norm_gru`; gate blocks in the order r, z, n.

  Attributes:
    wx: input weights ``[input_size, 3 * hidden_size]``.
    wh: recurrent weights ``[hidden_size, 3 * hidden_size]``.
    gx: gain ``[3 * hidden_size]`` of the input product's normalisation.
    gh: gain ``[3 * hidden_size]`` of the recurrent product's normalisation.
    b: bias ``[3 * hidden_size]`` on the input side: ``β_x``, plus the r and z
      blocks of ``β_h`` (only ever summed with it).
    bhn: the n block ``[hidden_size]`` of ``β_h``, inside the reset gate's
      product (as :class:`jrnn.GRUParams`'s ``bhn``).
  """

  wx: jax.Array
  wh: jax.Array
  gx: jax.Array
  gh: jax.Array
  b: jax.Array
  bhn: jax.Array


def layer_norm_lstm(
  hidden_size: int, *, eps: float = 1e-5, forget_bias: float = 1.0, dtype=jnp.float32, compute_dtype=None
) -> _cell.Cell:
  r"""The layer-normalised LSTM (Ba, Kiros & Hinton, 2016), gate order i, f, g, o.

  .. math::

     [i_t, f_t, g_t, o_t] &= \mathrm{LN}(x_t W_x; γ_x) + \mathrm{LN}(h_{t-1} W_h; γ_h) + b \\
     c_t &= \sigma(f_t) \odot c_{t-1} + \sigma(i_t) \odot \tanh(g_t) \\
     h_t &= \sigma(o_t) \odot \tanh(\mathrm{LN}(c_t; γ_c, β_c))

  ``LN`` normalises over all ``4H`` pre-activations at once, as the paper's
  equations do (see :mod:`jrnn._layer_norm`); the paper's three biases on the
  gates (``β_x``, ``β_h``, ``b``) are one ``b`` here, since only their sum
  enters. Gains start at 1, biases at 0 except the forget block of ``b``
  (``forget_bias``). The carry is :class:`jrnn.LSTMCarry` ``(h, c)``; the
  cell is :class:`jrnn.Projected`.

  Args:
    hidden_size: size of ``h_t`` and ``c_t``.
    eps: added to the variance in each normalisation.
    forget_bias: initial value of the forget gate's bias.
    dtype: dtype of the parameters (and of ``c``).
    compute_dtype: dtype of the matrix products' inputs and of ``h``;
      ``None`` (default) for ``dtype``: then nothing is cast. As in
      :func:`jrnn.lstm` (mixed precision): with ``dtype=float32,
      compute_dtype=bfloat16`` the products take bfloat16 inputs and
      accumulate in float32, and every normalisation's statistics (its
      reductions), the gates and ``c`` are float32; ``h_t`` is rounded to
      bfloat16 when stored. The carry is ``LSTMCarry(h: bfloat16, c:
      float32)``, the outputs bfloat16, the params' gradients float32.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`LayerNormLSTMParams`.

  Example:
    One step from ``h_0 = c_0 = 0`` (so ``LN(h_0 W_h) = 0``), written out:

    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.layer_norm_lstm(3)
    >>> p = cell.init(jax.random.key(0), 2)
    >>> x = jnp.array([1.0, -2.0])
    >>> (h, c), out = cell.step(p, cell.initial_carry(p), x)
    >>> ln = lambda a: (a - a.mean()) / jnp.sqrt(a.var() + 1e-5)
    >>> i, f, g, o = jnp.split(ln(x @ p.wx) + p.b, 4)
    >>> c1 = jax.nn.sigmoid(i) * jnp.tanh(g)
    >>> bool(jnp.allclose(out, jax.nn.sigmoid(o) * jnp.tanh(ln(c1)), atol=1e-6))
    True

  References:
    Ba, Kiros & Hinton, "Layer normalization", arXiv:1607.06450 (2016),
    section 3.1 and the supplementary material's LSTM equations.
    Micikevicius et al., "Mixed precision training", ICLR (2018).
  """
  name = "jrnn.layer_norm_lstm"
  hidden_size = _checks.positive_int(hidden_size, "hidden_size", name)
  compute_dtype = _checks.compute_dtype(compute_dtype, name, dtype)
  if compute_dtype is not None:
    name = f"jrnn.layer_norm_lstm(compute_dtype={compute_dtype.name})"
  H = hidden_size

  def init_fn(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    kx, kh = jax.random.split(key)
    return LayerNormLSTMParams(
      _initializers.input_weights(kx, input_size, H, 4, dtype),
      _initializers.recurrent_weights(kh, H, 4, dtype),
      jnp.ones((4 * H,), dtype),
      jnp.ones((4 * H,), dtype),
      jnp.zeros((4 * H,), dtype).at[H : 2 * H].set(forget_bias),
      jnp.ones((H,), dtype),
      jnp.zeros((H,), dtype),
    )

  def initial_carry(params):
    dtype = _cell.params_dtype(params)
    return _lstm.LSTMCarry(jnp.zeros((H,), dtype if compute_dtype is None else compute_dtype), jnp.zeros((H,), dtype))

  def project(params, xs):
    return layer_norm(_cell.matmul(xs, params.wx, compute_dtype), params.gx, params.b, eps)

  def recur(params, carry, p):
    q = _cell.matmul(carry.h, params.wh, compute_dtype)
    gates = p + layer_norm(q, params.gh, jnp.zeros_like(params.gh), eps)
    i = jax.nn.sigmoid(gates[..., :H])
    f = jax.nn.sigmoid(gates[..., H : 2 * H])
    g = jnp.tanh(gates[..., 2 * H : 3 * H])
    o = jax.nn.sigmoid(gates[..., 3 * H :])
    c = f * carry.c + i * g
    h = o * jnp.tanh(layer_norm(c, params.gc, params.bc, eps))
    return _lstm.LSTMCarry(h if compute_dtype is None else h.astype(compute_dtype), c)

  def readout(params, carry, p):
    del params, p
    return carry.h

  kind = _cell.Projected(project=project, recur=recur, readout=readout)
  return _cell.make_cell(kind, name=name, hidden_size=H, init=init_fn, initial_carry=initial_carry)


def layer_norm_gru(hidden_size: int, *, eps: float = 1e-5, dtype=jnp.float32, compute_dtype=None) -> _cell.Cell:
  r"""The layer-normalised GRU (Ba, Kiros & Hinton, 2016), gate order r, z, n.

  .. math::

     [a^x_r, a^x_z, a^x_n] &= \mathrm{LN}(x_t W_x; γ_x) + b, \qquad
     [a^h_r, a^h_z, a^h_n] = \mathrm{LN}(h_{t-1} W_h; γ_h) + [0, 0, b_{hn}] \\
     r_t &= \sigma(a^x_r + a^h_r), \qquad z_t = \sigma(a^x_z + a^h_z) \\
     n_t &= \tanh(a^x_n + r_t \odot a^h_n) \\
     h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

  The GRU of :func:`jrnn.gru` (PyTorch's and cuDNN's form, the reset gate
  applied after the recurrent product) with the input and recurrent products
  each layer-normalised over all ``3H`` pre-activations at once, as the paper
  normalises the LSTM's (see :mod:`jrnn._layer_norm`); the paper gives no
  separate GRU equations. The recurrent normalisation's bias ``β_h`` is split
  as :class:`jrnn.GRUParams` splits ``b_hh``: its r and z blocks join ``b``, its
  n block is ``bhn``. Gains start at 1, biases at 0. The carry is ``h_t``; the
  cell is :class:`jrnn.Projected`.

  Args:
    hidden_size: size of ``h_t``.
    eps: added to the variance in each normalisation.
    dtype: dtype of the parameters (and of ``h``).
    compute_dtype: dtype of the matrix products' inputs; ``None`` (default)
      for ``dtype``: then nothing is cast. As in :func:`jrnn.gru` (mixed
      precision): with ``dtype=float32, compute_dtype=bfloat16`` the products
      take bfloat16 inputs and accumulate in float32; the normalisations'
      statistics, the gates and the state ``h`` are float32, so the carry,
      the outputs and the params' gradients are float32.

  Returns:
    A :class:`jrnn.Cell` whose params are :class:`LayerNormGRUParams`.

  Example:
    One step from ``h_0 = 0``, written out:

    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.layer_norm_gru(3)
    >>> p = cell.init(jax.random.key(0), 2)
    >>> x = jnp.array([1.0, -2.0])
    >>> h, out = cell.step(p, cell.initial_carry(p), x)
    >>> ln = lambda a: (a - a.mean()) / jnp.sqrt(a.var() + 1e-5)
    >>> r, z, n = jnp.split(ln(x @ p.wx) + p.b, 3)
    >>> bool(jnp.allclose(out, (1 - jax.nn.sigmoid(z)) * jnp.tanh(n + jax.nn.sigmoid(r) * p.bhn), atol=1e-6))
    True

  References:
    Ba, Kiros & Hinton, "Layer normalization", arXiv:1607.06450 (2016), section 3.1.
    Cho et al., "Learning phrase representations using RNN encoder-decoder for
    statistical machine translation", EMNLP (2014).
    Micikevicius et al., "Mixed precision training", ICLR (2018).
  """
  name = "jrnn.layer_norm_gru"
  hidden_size = _checks.positive_int(hidden_size, "hidden_size", name)
  compute_dtype = _checks.compute_dtype(compute_dtype, name, dtype)
  if compute_dtype is not None:
    name = f"jrnn.layer_norm_gru(compute_dtype={compute_dtype.name})"
  H = hidden_size

  def init_fn(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    kx, kh = jax.random.split(key)
    return LayerNormGRUParams(
      _initializers.input_weights(kx, input_size, H, 3, dtype),
      _initializers.recurrent_weights(kh, H, 3, dtype),
      jnp.ones((3 * H,), dtype),
      jnp.ones((3 * H,), dtype),
      jnp.zeros((3 * H,), dtype),
      jnp.zeros((H,), dtype),
    )

  def initial_carry(params):
    return jnp.zeros((H,), _cell.params_dtype(params))

  def project(params, xs):
    return layer_norm(_cell.matmul(xs, params.wx, compute_dtype), params.gx, params.b, eps)

  def recur(params, h, p):
    q = layer_norm(_cell.matmul(h, params.wh, compute_dtype), params.gh, jnp.pad(params.bhn, (2 * H, 0)), eps)
    r = jax.nn.sigmoid(p[..., :H] + q[..., :H])
    z = jax.nn.sigmoid(p[..., H : 2 * H] + q[..., H : 2 * H])
    n = jnp.tanh(p[..., 2 * H :] + r * q[..., 2 * H :])
    return (1.0 - z) * n + z * h

  def readout(params, h, p):
    del params, p
    return h

  kind = _cell.Projected(project=project, recur=recur, readout=readout)
  return _cell.make_cell(kind, name=name, hidden_size=H, init=init_fn, initial_carry=initial_carry)
