r"""The ``jax.custom_vjp`` layer around jrnn's CPU kernel, and the packing of its weights.

:mod:`jrnn._cpu_kernel` decides where the kernel runs; this module is one
layer's call (one cell, one direction), forward and backward. The forward
call returns ``hs``, the final carry and, under differentiation, what the
backward pass needs: the activated gates, ``\tanh c_t``, ``c_{t-1}``
(LSTM), ``q_n`` (GRU) and the carry ``h_{t-1}`` of every step.

The backward call walks the steps the other way, carrying only
``\bar h = ∂L/∂h_t`` (and ``\bar c``, LSTM). With ``g = \bar h_t + ∂L/∂y_t``
it emits ``\bar p_t`` and ``\bar h_{t-1} = (∂h_t/∂h_{t-1})_{\text{direct}} +
\bar q_t W_h^\top`` (one more small GEMM):

* Elman, ``h_t = \tanh(a_t)``: ``\bar p_t = \bar q_t = g (1 - h_t^2)``.
* GRU: ``\bar n = g (1 - z)(1 - n^2)``, ``\bar z = g (h_{t-1} - n) z (1 - z)``,
  ``\bar r = \bar n\, q_n\, r (1 - r)``; ``\bar p = [\bar r, \bar z, \bar n]``,
  ``\bar q = [\bar r, \bar z, r \bar n]`` and the direct term ``g z``.
* LSTM: ``\bar c_t \mathrel{+}= g\, o (1 - \tanh^2 c_t)``,
  ``\bar p = \bar q = [\bar c_t g_t i(1-i),\ \bar c_t c_{t-1} f(1-f),\
  \bar c_t i (1-g_t^2),\ g \tanh(c_t)\, o(1-o)]`` and
  ``\bar c_{t-1} = \bar c_t f``.

The weight gradients stay in XLA as one GEMM each over all ``T·B`` rows:
``∂L/∂W_h = Σ h_{t-1}^\top \bar q_t``, ``∂L/∂W_x = Σ x_t^\top \bar p_t``,
``∂L/∂b = Σ \bar p_t``, ``∂L/∂b_{hn} = Σ r ⊙ \bar n`` (GRU) and
``∂L/∂x_t = \bar p_t W_x^\top``. The layer is a ``jax.custom_vjp``, so
``jax.grad`` and the training loop need no change (reverse mode only: no
``jax.jvp``, no second derivatives).

References:
  Appleyard, Kocisky & Blunsom, "Optimizing performance of recurrent neural
  networks on GPUs", arXiv:1604.01946 (2016).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import _cell
from jrnn import _lstm
from jrnn import _options

ELMAN, GRU, LSTM = 0, 1, 2  # the cell attribute of the calls (recurrence.cc)
GATES = {ELMAN: 1, GRU: 3, LSTM: 4}
STORED = {ELMAN: 1, GRU: 4, LSTM: 6}  # values kept per step and unit for the backward pass (recurrence.cc)
FORWARD, BACKWARD = "jrnn_recurrence_forward", "jrnn_recurrence_backward"
PANEL = 32  # columns per packed panel of the weights (kPanel in recurrence.cc)


def pack(w, gates: int):
  r"""``W [K, G·H]`` (``W_x``, ``W_h``, or ``b`` as ``[1, G·H]``) in the panels of the packed GEMM: ``[G, P, K, 32]``.

  Panel ``p`` of gate ``g`` holds columns ``g H + 32 p …`` of ``W`` as a
  contiguous ``[K, 32]`` block, zero past ``H``; ``P = ⌈H / 32⌉``. One
  transpose per call, in XLA.
  """
  K, H = w.shape[0], w.shape[1] // gates
  P = -(-H // PANEL)
  w = jnp.pad(w.reshape(K, gates, H), ((0, 0), (0, 0), (0, P * PANEL - H)))
  return w.reshape(K, gates, P, PANEL).transpose(1, 2, 0, 3)


def pack_transposed(wh):
  r"""``W_h^\top`` for the backward GEMM ``\bar h \mathrel{+}= \bar q W_h^\top``: ``[P, G·H, 32]``."""
  H = wh.shape[0]
  P = -(-H // PANEL)
  w = jnp.pad(wh, ((0, P * PANEL - H), (0, 0)))  # [32 P, G H]
  return w.reshape(P, PANEL, wh.shape[1]).transpose(0, 2, 1)


@functools.cache
def layer(code: int, reverse: bool, precision: Any = None, packed: bool = False):
  """The custom-VJP layer ``(params, carry, xs [B, T, I], lengths [B]) -> (carry, hs [B, T, H])`` of one cell.

  ``packed``: float32 runs the kernel's packed GEMM (AVX-512; :func:`jrnn._cpu_kernel.packed`), which takes
  ``W_x``, ``W_h`` and ``b`` in panels and projects the inputs itself; else ``p`` is one GEMM in XLA.

  ``precision``: of XLA's products (the projection, the weight gradients), entered again in the backward
  rule, which JAX traces after the caller's ``jax.default_matmul_precision`` has exited.
  """
  attrs = dict(cell=np.int32(code), reverse=reverse)

  def split(carry):
    return (carry.h, carry.c) if code == LSTM else (carry, jnp.zeros_like(carry))

  def run(params, carry, xs, lengths, store):
    """The forward call; ``store``: keep what the backward pass needs (``ws``, ``hprev``), else size 0.

    Packed (float32 on AVX-512), the kernel computes ``p_t = x_t W_x + b`` step by step (no ``[B, T, G·H]``
    buffer); else ``p`` is one GEMM in XLA.
    """
    h0, c0 = split(carry)
    (B, T, _), H, dtype = xs.shape, params.wh.shape[0], params.wh.dtype
    G = GATES[code]
    none = jnp.zeros((0,), dtype)
    if dtype == jnp.float32 and packed:
      p, fused = none, (xs, pack(params.wh, G), pack(params.wx, G), pack(params.b[None], G))
    else:
      p, fused = _cell.affine(xs, params.wx, params.b), (none, none, none, none)  # [B, T, G·H], batch-major
    x, wp, wxp, bp = fused
    bhn = params.bhn if code == GRU else jnp.zeros((H,), dtype)
    shape = lambda *s: jax.ShapeDtypeStruct(s, dtype)
    kept = (shape(T, B, STORED[code] * H), shape(B, T, H)) if store else (shape(0), shape(0))
    results = (shape(B, T, H), shape(B, H), shape(B, H), *kept)
    call = jax.ffi.ffi_call(FORWARD, results, vmap_method="sequential")
    hs, h, c, ws, hprev = call(p, x, params.wh, wp, wxp, bp, bhn, h0, c0, lengths, **attrs)
    final = _lstm.LSTMCarry(h, c) if code == LSTM else h
    return (final, hs), (ws, hprev)

  def forward(params, carry, xs, lengths):
    out, (ws, hprev) = run(params, carry, xs, lengths, store=True)
    return out, (params, xs, lengths, ws, hprev)

  def backward(residuals, cotangents):
    with _options.matmul_precision(precision):
      return backward_products(residuals, cotangents)

  def backward_products(residuals, cotangents):
    params, xs, lengths, ws, hprev = residuals
    d_final, dhs = cotangents
    dh, dc = split(d_final)
    (B, T, _), H = xs.shape, params.wh.shape[0]
    GH = GATES[code] * H
    shape = lambda *s: jax.ShapeDtypeStruct(s, ws.dtype)
    results = (shape(B, T, GH), shape(B, T, H) if code == GRU else shape(0), shape(B, H), shape(B, H))
    call = jax.ffi.ffi_call(BACKWARD, results, vmap_method="sequential")
    wp = pack_transposed(params.wh) if ws.dtype == jnp.float32 and packed else jnp.zeros((0,), ws.dtype)
    dp, dqn, dh0, dc0 = call(ws, hprev, params.wh, wp, lengths, dhs, dh, dc, **attrs)
    dq = jnp.concatenate([dp[..., : 2 * H], dqn], axis=-1) if code == GRU else dp
    # The weight gradients: one product over all T·B rows each.
    dwh = hprev.reshape(B * T, H).T @ dq.reshape(B * T, GH)
    _, project_vjp = jax.vjp(lambda wx, b, x: _cell.affine(x, wx, b), params.wx, params.b, xs)
    dwx, db, dxs = project_vjp(dp)
    grads = params._replace(wx=dwx, wh=dwh, b=db)
    if code == GRU:
      grads = grads._replace(bhn=dqn.sum(axis=(0, 1)))
    d_carry = _lstm.LSTMCarry(dh0, dc0) if code == LSTM else dh0
    return grads, d_carry, dxs, None  # no cotangent for the integer lengths

  @jax.custom_vjp
  def layer(params, carry, xs, lengths):  # the primal (no gradient to come): nothing stored
    return run(params, carry, xs, lengths, store=False)[0]

  layer.defvjp(forward, backward)
  return layer
