"""BPTT with the weight gradients as single matrix products: ``vjp="fused"``.

The backward pass of a recurrent layer, written by hand as a ``jax.custom_vjp``
in the way cuDNN schedules it (Appleyard et al., 2016). A step is split into
the input projection, the recurrent product and the parameter-free rest
(``cell.kind.project``, ``recurrent``, ``update``):

.. math::

   p_t = x_t W_x + b, \\qquad q_t = h_{t-1} W_h\\,(+\\,b_{hn}), \\qquad
   (c_t, h_t) = \\mathrm{update}(c_{t-1}, p_t, q_t)

The backward scan runs from ``t = T`` to ``1`` carrying only
``\\bar c_t = ∂L/∂c_t`` and emits ``\\bar p_t`` and ``\\bar q_t`` (the VJP of
``update``, plus ``\\bar q_t W_hᵀ`` into ``\\bar c_{t-1}``). The weight
gradients are then one matrix product each over all ``T·B`` rows, instead of
``T`` rank-``B`` updates accumulated inside the scan (what autodiff of
``lax.scan`` does):

.. math::

   \\frac{∂L}{∂W_h} = \\sum_{t,b} h_{t-1}^{\\top} \\bar q_t, \\qquad
   \\frac{∂L}{∂W_x} = \\sum_{t,b} x_t^{\\top} \\bar p_t, \\qquad
   \\frac{∂L}{∂b} = \\sum_{t,b} \\bar p_t, \\qquad
   \\frac{∂L}{∂x_t} = \\bar p_t W_x^{\\top}

The forward pass stores ``c_{t-1}``, ``p_t`` and ``q_t`` of every step.
With ``reset``, ``c_{t-1}`` is the carry after the reset (``c_0`` at a reset
step), and the backward scan adds ``\\bar c_{t-1}`` of every reset step to
the gradient of ``c_0`` instead of passing it on.

The custom VJP is defined on the batched layer (``[B, T, I]``), so the sums
run over the batch as well: :func:`jrnn.unroll_batch` uses it directly. A
single sequence (:func:`jrnn.unroll`) runs as a batch of one; under a user's
``jax.vmap`` JAX then computes per-sequence weight gradients and sums them,
which is correct but gives up the single product over the batch. (It is not a
``jax.custom_batching.custom_vmap``: that would sum inside ``vmap(grad(...))``
too and so give wrong per-example gradients.)

It needs a cell of kind :class:`jrnn.AffineRecurrence` (``project``,
``recurrent``, ``update``, ``output``): elman, gru, lstm.

Reverse mode only: like any ``jax.custom_vjp``, no ``jax.jvp`` and no
second derivatives.

``options.precision`` is entered by the layer itself, around the primal, the
forward and the backward pass: JAX traces a ``custom_vjp``'s rules when it
differentiates, after the driver's ``jax.default_matmul_precision`` has closed.

References:
  Appleyard, Kocisky & Blunsom, "Optimizing performance of recurrent neural
  networks on GPUs", arXiv:1604.01946 (2016).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jrnn import _cell
from jrnn import _options

_tree_map = jax.tree_util.tree_map


def check_cell(cell, fn_name):
  if not isinstance(cell.kind, _cell.AffineRecurrence):
    raise ValueError(
      f"{fn_name}: vjp='fused' needs a cell split into recurrent and update (kind jrnn.AffineRecurrence: "
      f"jrnn.elman, jrnn.gru, jrnn.lstm); {cell.name} is not (it is a {type(cell.kind).__name__}). "
      "Use vjp='autodiff'."
    )


def sequence(cell, params, carry, xs, mask, options, reset=None):
  """:func:`jrnn.unroll` with ``vjp="fused"`` on one sequence: a batch of one."""
  add = lambda t: _tree_map(lambda x: x[None], t)
  carry, hs = batch_sequence(cell, params, add(carry), xs[None], add(mask), options, add(reset))
  return _tree_map(lambda x: x[0], carry), hs[0]


def batch_sequence(cell, params, carry, xs, mask, options, reset=None):
  """The fused layer on a batch: ``carry`` leaves ``[B, ...]``, ``xs: [B, T, I]``, ``mask`` and ``reset: [B, T]``.

  The driver has checked the cell with :func:`check_cell` (``jrnn._unroll.algorithm``).
  """
  per_step = _options.projection(options) == "per_step"
  layer = _layer(cell.kind, per_step, options.reverse, options.unroll, options.precision)
  return layer(params, carry, xs, mask, reset)


def _under(precision, fn):
  """``fn`` traced under ``jax.default_matmul_precision(precision)`` whenever JAX traces it."""

  @functools.wraps(fn)
  def traced(*args):
    with _options.matmul_precision(precision):
      return fn(*args)

  return traced


def _layer(kind, per_step, reverse, unroll, precision):
  """The custom-VJP layer ``(params, carry, xs, mask, reset) -> (carry, hs)`` for one configuration.

  Built anew for every trace (cheap: it only defines functions), so nothing
  is cached per cell. The primal and both rules run under ``precision``.
  """
  recurrent = jax.vmap(kind.recurrent, (None, 0))  # over the batch

  @jax.vmap
  def update(c, p, q):
    new = kind.update(c, p, q)
    return new, kind.output(new)

  def forward(params, c0, xs, mask, reset):
    xs_t = jnp.swapaxes(xs, 0, 1)  # [T, B, I]
    m_t = None if mask is None else mask.T  # [T, B]
    r_t = None if reset is None else reset.T  # [T, B]
    inputs = xs_t if per_step else kind.project(params, xs_t)

    def body(c, inp):
      x, m, r = inp
      if r is not None:
        c = _tree_map(lambda init, old: jnp.where(_cell.leading(r, old), init, old), c0, c)
      p = kind.project(params, x) if per_step else x
      q = recurrent(params, c)
      new_c, h = update(c, p, q)
      if m is not None:
        new_c = _tree_map(lambda n, o: jnp.where(_cell.leading(m, n), n, o), new_c, c)
        h = jnp.where(_cell.leading(m, h), h, jnp.zeros_like(h))
      return new_c, (h, c, p if per_step else None, q)

    cT, (hs, cs, ps, qs) = lax.scan(body, c0, (inputs, m_t, r_t), reverse=reverse, unroll=unroll)
    ps = ps if per_step else inputs
    return (cT, jnp.swapaxes(hs, 0, 1)), (params, xs_t, m_t, r_t, cs, ps, qs)

  def backward(res, cotangents):
    params, xs_t, m_t, r_t, cs, ps, qs = res
    dcT, dhs = cotangents
    dhs_t = jnp.swapaxes(dhs, 0, 1)

    def body(state, inp):
      dc, dc0 = state
      c, p, q, dh, m, r = inp
      d_new = dc
      if m is not None:
        dh = jnp.where(_cell.leading(m, dh), dh, jnp.zeros_like(dh))
        d_new = _tree_map(lambda d: jnp.where(_cell.leading(m, d), d, jnp.zeros_like(d)), dc)
      _, update_vjp = jax.vjp(update, c, p, q)
      dc_prev, dp, dq = update_vjp((d_new, dh))
      _, recurrent_vjp = jax.vjp(lambda c_: recurrent(params, c_), c)
      (dc_rec,) = recurrent_vjp(dq)
      dc_prev = _tree_map(jnp.add, dc_prev, dc_rec)
      if m is not None:  # a masked step passed the carry through unchanged
        dc_prev = _tree_map(lambda a, d: a + jnp.where(_cell.leading(m, d), jnp.zeros_like(d), d), dc_prev, dc)
      if r is not None:  # the carry entering a reset step was c0: its gradient goes there
        at = lambda d: _cell.leading(r, d)
        dc0 = _tree_map(lambda acc, d: acc + jnp.where(at(d), d, jnp.zeros_like(d)), dc0, dc_prev)
        dc_prev = _tree_map(lambda d: jnp.where(at(d), jnp.zeros_like(d), d), dc_prev)
      return (dc_prev, dc0), (dp, dq)

    at_resets = None if r_t is None else _tree_map(jnp.zeros_like, dcT)  # no extra carry without resets
    scanned = (cs, ps, qs, dhs_t, m_t, r_t)
    (dc0, at_resets), (dps, dqs) = lax.scan(body, (dcT, at_resets), scanned, reverse=not reverse, unroll=unroll)
    if at_resets is not None:
      dc0 = _tree_map(jnp.add, dc0, at_resets)
    # The weight gradients: one product over all T·B rows each.
    _, recurrent_vjp = jax.vjp(lambda p_: jax.vmap(recurrent, (None, 0))(p_, cs), params)
    (d_recurrent,) = recurrent_vjp(dqs)
    _, project_vjp = jax.vjp(kind.project, params, xs_t)
    d_project, dxs_t = project_vjp(dps)
    dparams = _tree_map(jnp.add, d_recurrent, d_project)
    return dparams, dc0, jnp.swapaxes(dxs_t, 0, 1), None, None  # no cotangents for the boolean mask and reset

  fwd, bwd = _under(precision, forward), _under(precision, backward)

  @jax.custom_vjp
  def layer(params, c0, xs, mask, reset):
    return fwd(params, c0, xs, mask, reset)[0]

  layer.defvjp(fwd, bwd)
  return layer
