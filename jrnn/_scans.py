r"""The scan algorithms: sequential with rematerialisation, and the parallel (associative) scans.

* :func:`sequential`: ``lax.scan`` of a step body, optionally checkpointed per
  step, or in chunks (the two-level remat scheme of Chen et al., 2016).
* :func:`linear`: ``c_t = a_t ⊙ c_{t-1} + b_t`` for all ``t`` as
  ``lax.associative_scan`` with ``(a₁, b₁) ∘ (a₂, b₂) = (a₁ a₂, a₂ b₁ + b₂)``,
  ``O(log T)`` depth; in log space for :class:`jrnn.LogCoefficients`.

They know nothing of cells: :mod:`jrnn._unroll` builds the bodies and the
coefficients and picks the algorithm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jrnn import _cell


def sequential(
  body: Callable,
  carry: Any,
  inputs: Any,
  *,
  reverse: bool = False,
  unroll: int = 1,
  remat: Any = None,
  prepare: Callable[[Any], Any] = lambda inputs: inputs,
) -> tuple[Any, Any]:
  """``lax.scan(body, carry, prepare(inputs))``, storing what ``remat`` asks for the backward pass.

  ``prepare`` maps a segment of the inputs (leading axis ``T``, or a chunk of
  it) to the scanned ones; :func:`jrnn.unroll` hoists the input projection
  there. ``remat``: ``None`` stores every step's residuals; ``"step"``
  checkpoints the body, so only each step's carry is stored; ``"sqrt"`` or an
  int ``K`` runs an outer scan over chunks of ``K = round(√T)`` (or ``K``)
  steps whose body, the inner scan over one chunk with its ``prepare``, is
  checkpointed: ``O(T/K + K)`` stored steps for about one extra forward pass.
  """

  def segment(c, segment_inputs, step_body=body):
    return lax.scan(step_body, c, prepare(segment_inputs), reverse=reverse, unroll=unroll)

  if remat is None:
    return segment(carry, inputs)
  if remat == "step":
    return segment(carry, inputs, jax.checkpoint(body))
  T = jax.tree_util.tree_leaves(inputs)[0].shape[0]
  chunk = max(1, round(T**0.5)) if remat == "sqrt" else min(remat, T)
  return chunked(jax.checkpoint(segment), carry, inputs, chunk, reverse)


def chunked(segment: Callable, carry: Any, inputs: Any, chunk: int, reverse: bool) -> tuple[Any, Any]:
  """``segment`` over ``inputs`` (leading axis ``T``) in chunks of ``chunk`` steps.

  An outer ``lax.scan`` runs ``segment(carry, chunk_inputs) -> (carry, ys)``
  over the ``T // chunk`` full chunks, then once more over the remaining
  ``T % chunk`` steps (first instead of last when ``reverse``), so that the
  carry flows through the steps in order.
  """
  T = jax.tree_util.tree_leaves(inputs)[0].shape[0]
  n, r = divmod(T, chunk)  # chunk <= T, so n >= 1
  main = jax.tree_util.tree_map(lambda x: x[: n * chunk].reshape((n, chunk) + x.shape[1:]), inputs)
  rest = jax.tree_util.tree_map(lambda x: x[n * chunk :], inputs)

  def run_main(c):
    c, ys = lax.scan(segment, c, main, reverse=reverse)
    return c, jax.tree_util.tree_map(lambda y: y.reshape((n * chunk,) + y.shape[2:]), ys)

  parts = []
  if reverse:
    if r:
      carry, ys = segment(carry, rest)
      parts.append(ys)
    carry, ys = run_main(carry)
    parts.insert(0, ys)
  else:
    carry, ys = run_main(carry)
    parts.append(ys)
    if r:
      carry, ys = segment(carry, rest)
      parts.append(ys)
  return carry, jax.tree_util.tree_map(lambda *y: jnp.concatenate(y, axis=0), *parts)


def _combine(earlier, later):
  """The associative operator ``(a₁, b₁) ∘ (a₂, b₂) = (a₁ a₂, a₂ b₁ + b₂)``."""
  a1, b1 = earlier
  a2, b2 = later
  return a1 * a2, a2 * b1 + b2


def _log_combine(earlier, later):
  """``_combine`` in log space: ``(log a₁ + log a₂, logaddexp(log b₁ + log a₂, log b₂))``."""
  la1, lb1 = earlier
  la2, lb2 = later
  return la1 + la2, jnp.logaddexp(lb1 + la2, lb2)


def _segmented(combine):
  """``combine`` on elements ``(r, a, b)`` that restart at ``r``: a later element with ``r`` discards the earlier.

  The segmented scan of Blelloch (1990): associative whenever ``combine`` is.
  """

  def segmented(earlier, later):
    r1, *e = earlier
    r2, *l = later
    a, b = combine(e, l)
    return r1 | r2, jnp.where(_cell.leading(r2, a), l[0], a), jnp.where(_cell.leading(r2, b), l[1], b)

  return segmented


def _linear_scan(a, b, c0, reset=None):
  """States ``c_t = a_t c_{t-1} + b_t`` for ``t = 1..T`` from ``c_0``, as a parallel scan.

  Where ``reset[t]``, ``c_{t-1}`` is replaced by ``c_0``: the step becomes
  ``(0, a_t c_0 + b_t)``, a constant map.
  """
  if reset is not None:
    at_reset = _cell.leading(reset, a)
    b = jnp.where(at_reset, a * c0[None] + b, b)
    a = jnp.where(at_reset, jnp.zeros_like(a), a)
  b = b.at[0].add(a[0] * c0)
  _, cs = lax.associative_scan(_combine, (a, b))
  return cs


def _log_linear_scan(log_a, log_b, c0, reset=None):
  r"""The same recurrence with ``a, b > 0`` given in log space.

  ``c_t = A_t c_0 + exp(log B_t)`` where ``(log A_t, log B_t)`` is the prefix
  of ``_log_combine``, i.e. ``log A_t = Σ log a`` and ``log B_t = log A_t +
  logcumsumexp(log b - log A)_t`` (Heinsen, 2023). Evaluated as an associative
  scan rather than through ``cumsum`` and ``logcumsumexp`` because the latter
  adds two large terms of opposite sign, which lost ~1e-4 relative in float32
  gradients already at ``T = 11``. ``c_0`` enters linearly rather than through
  ``log c_0``, so it may be zero or negative and its gradient stays finite.

  Where ``reset[t]``, ``c_{t-1}`` is replaced by ``c_0``. ``a_t c_0 + b_t``
  has no logarithm when ``c_0 ≤ 0``, so the prefix is the segmented one
  instead (:func:`_segmented`): ``(log A_t, log B_t)`` start again at each
  reset, and ``c_t = A_t c_0 + B_t`` holds within every segment.
  """
  if reset is not None:
    _, log_A, log_B = lax.associative_scan(_segmented(_log_combine), (reset, log_a, log_b))
    return jnp.exp(log_A) * c0[None] + jnp.exp(log_B)
  log_A, log_B = lax.associative_scan(_log_combine, (log_a, log_b))
  return jnp.exp(log_A) * c0[None] + jnp.exp(log_B)


def _masked(mask, x, fill):
  """``x`` where ``mask: [T]`` is True, else ``fill``."""
  return jnp.where(_cell.leading(mask, x), x, jnp.asarray(fill, x.dtype))


def linear(coefficients: Any, carry: Any, mask: Any, reverse: bool, reset: Any = None) -> tuple[Any, Any]:
  """All carries of ``c_t = a_t ⊙ c_{t-1} + b_t`` by ``lax.associative_scan``; returns ``(c_T, cs)``.

  ``coefficients`` is ``(a, b)`` or :class:`jrnn.LogCoefficients`, leaves with
  a leading ``[T]`` axis (``a`` may broadcast over it). A masked step becomes
  the identity ``(a, b) = (1, 0)``, so the carry passes through; ``reverse``
  scans the flipped sequence and returns ``cs`` in the original order. Where
  ``reset: [T]`` is True, the carry entering step ``t`` (in the direction of
  the scan) is ``carry`` itself, masked step or not.
  """
  log_space = isinstance(coefficients, _cell.LogCoefficients)
  a, b = coefficients
  a = jax.tree_util.tree_map(lambda a_, b_: jnp.broadcast_to(a_, b_.shape), a, b)
  if mask is not None:
    # log b of a masked step is a very negative finite number rather than -inf,
    # whose logsumexp gradient would be nan.
    one = 0.0 if log_space else 1.0
    a = jax.tree_util.tree_map(lambda x: _masked(mask, x, one), a)
    b = jax.tree_util.tree_map(lambda x: _masked(mask, x, jnp.finfo(x.dtype).min if log_space else 0.0), b)
  flip = (lambda t: jax.tree_util.tree_map(lambda x: x[::-1], t)) if reverse else (lambda t: t)
  scan = _log_linear_scan if log_space else _linear_scan
  r = None if reset is None else flip(reset)
  cs = jax.tree_util.tree_map(lambda a_, b_, c_: scan(a_, b_, c_, r), flip(a), flip(b), carry)
  last = jax.tree_util.tree_map(lambda x: x[-1], cs)
  return last, flip(cs)


def zero_masked(mask: Any, hs: jax.Array) -> jax.Array:
  """``hs`` with the rows where ``mask: [T]`` is False set to zero (no-op for ``mask=None``)."""
  return hs if mask is None else _masked(mask, hs, 0)
