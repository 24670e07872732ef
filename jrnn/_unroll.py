"""The sequence driver: a cell run over time with ``jax.lax.scan``."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax import lax

from jrnn import _cell


def unroll(
    cell: _cell.Cell,
    params: Any,
    xs: jax.typing.ArrayLike,
    carry: Any = None,
    *,
    mask: Optional[jax.typing.ArrayLike] = None,
    reverse: bool = False,
    unroll: int = 1,
    scan: str = "auto",
) -> tuple[Any, jax.Array]:
  """Runs ``cell`` over a sequence with ``jax.lax.scan``.

  .. math::

     (c_t, h_t) = \\mathrm{step}(c_{t-1}, x_t), \\quad t = 1 \\ldots T

  The carry-independent input projection ``x_t W_x + b`` is computed for all
  ``T`` steps in one matrix product before the scan; only the recurrence runs
  inside it.

  With a ``mask``, steps where ``mask[t]`` is False leave the carry unchanged
  and give a zero output row; holes may be anywhere, not only at the end.
  The returned carry is the one after the last True step (in the direction of
  the scan). ``reverse=True`` scans from ``t = T`` down to ``1`` and returns
  ``hs`` in the original order, so a right-padded sequence run in reverse starts
  at its last real element.

  One sequence is ``[T, features]``; for a batch, wrap the call in ``jax.vmap``.

  Cells whose recurrence is linear in the carry, ``c_t = a_t ⊙ c_{t-1} + b_t``
  (those with ``cell.linear``: :func:`jrnn.min_gru`, :func:`jrnn.min_lstm`,
  :func:`jrnn.lru`), can also run as a parallel scan over time,
  ``jax.lax.associative_scan`` with the operator
  ``(a₁, b₁) ∘ (a₂, b₂) = (a₁ a₂, a₂ b₁ + b₂)``: ``O(log T)`` depth instead of
  ``T`` sequential steps, for about twice the arithmetic. The initial carry is
  folded into the first ``b``; a masked step becomes ``(a, b) = (1, 0)`` (so the
  carry passes through) and gives a zero output row; ``reverse`` scans the
  flipped sequence. Both algorithms give the same ``(carry, hs)`` up to
  rounding.

  ``scan="auto"`` (the default) runs cells without ``linear`` sequentially, so
  their results are unchanged, and picks for linear cells by backend and length:
  associative from ``T >= AUTO_MIN_LENGTH[jax.default_backend()]``, sequential
  below or where the entry is ``None``. On CPU it is ``None`` (always
  sequential): measured with ``benchmarks/linear_recurrences.py`` (training step,
  I=32, H=64, B=8, jax 0.10.2, XLA:CPU, 2 cores, interleaved medians), the
  associative scan was slower at every length from 16 to 16384 steps, minGRU
  associative/sequential = 1.08 (T=16), 1.12 (256), 1.18 (1024), 1.35 (4096),
  1.25 (16384), and it compiles 3-8 times longer, so there is no crossover to
  pick. On GPU and
  TPU it is 256, a guess from the common experience that the parallel scan wins
  there from a few hundred steps; not yet measured in jrnn.

  Args:
    cell: a :class:`jrnn.Cell` (``jrnn.elman``, ``gru``, ``lstm``, ``stack``,
      ``bidirectional`` ...).
    params: the cell's params, from ``cell.init``.
    xs: inputs ``[T, input_size]``, floating point; cast to the params' dtype.
    carry: the initial carry; ``None`` for ``cell.initial_carry(params)``.
    mask: optional boolean ``[T]``.
    reverse: scan from the last step to the first.
    unroll: how many steps ``lax.scan`` unrolls per loop iteration (speed only).
    scan: ``"sequential"`` (``lax.scan`` over ``cell.recur``),
      ``"associative"`` (``lax.associative_scan`` over ``cell.linear``; raises
      ValueError for a cell without it) or ``"auto"`` (see above). Passed on to
      the layers of :func:`jrnn.stack` and :func:`jrnn.bidirectional`.

  Returns:
    ``(carry, hs)`` with ``hs: [T, hidden_size]``.

  Example::

    cell = jrnn.gru(32)
    params = cell.init(jax.random.key(0), 8)
    batched = jax.vmap(lambda xs, m: jrnn.unroll(cell, params, xs, mask=m))
    carry, hs = batched(jnp.ones((4, 20, 8)), jnp.ones((4, 20), bool))   # hs: [4, 20, 32]
  """
  xs, carry, mask = check_inputs(cell, params, xs, carry, mask, "jrnn.unroll")
  if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
    raise ValueError(f"jrnn.unroll: unroll must be a positive int, got {unroll!r}.")
  if scan not in SCANS:
    raise ValueError(f"jrnn.unroll: scan must be one of {SCANS}, got {scan!r}.")
  return run(cell, params, carry, xs, mask, bool(reverse), unroll, scan)


SCANS = ("sequential", "associative", "auto")

# scan="auto" uses the associative scan for linear cells from this length on,
# per backend (jax.default_backend()); None: never. CPU measured (see unroll's
# docstring and benchmarks/NOTES.md); GPU/TPU not yet.
AUTO_MIN_LENGTH = {"cpu": None, "gpu": 256, "tpu": 256}


def resolve_scan(cell, scan, length):
  """The algorithm ``"sequential"`` or ``"associative"`` that ``scan`` means for ``cell``."""
  if scan == "associative":
    if cell.linear is None:
      raise ValueError(
          f"jrnn.unroll: scan='associative' needs a cell whose recurrence is linear in the carry "
          f"(with cell.linear, e.g. jrnn.min_gru, jrnn.min_lstm, jrnn.lru); {cell.name} is not. "
          "Use scan='sequential' or 'auto'.")
    return scan
  if scan == "auto":
    if cell.linear is None:
      return "sequential"
    threshold = AUTO_MIN_LENGTH.get(jax.default_backend())
    return "associative" if threshold is not None and length >= threshold else "sequential"
  return "sequential"


def run(cell, params, carry, xs, mask, reverse, unroll, scan="sequential"):
  """:func:`unroll` on already-checked arguments (used by composite layers)."""
  if cell.sequence is not None:
    return cell.sequence(params, carry, xs, mask, reverse, unroll, scan)
  if resolve_scan(cell, scan, xs.shape[0]) == "associative":
    return associative(cell, params, carry, xs, mask, reverse)
  ps = cell.project(params, xs)

  def recur(c, p):
    return cell.recur(params, c, p)

  if mask is None:
    return lax.scan(recur, carry, ps, reverse=reverse, unroll=unroll)

  def masked_recur(c, p_m):
    p, m = p_m
    new_c, h = recur(c, p)
    c = jax.tree_util.tree_map(lambda n, o: jnp.where(m, n, o), new_c, c)
    return c, jnp.where(m, h, jnp.zeros_like(h))

  return lax.scan(masked_recur, carry, (ps, mask), reverse=reverse, unroll=unroll)


def _where_mask(mask, x, fill):
  """``x`` where ``mask: [T]`` is True, else ``fill``; broadcast explicitly (rank promotion may raise)."""
  m = jnp.reshape(mask, mask.shape + (1,) * (x.ndim - 1))
  return jnp.where(m, x, jnp.asarray(fill, x.dtype))


def _combine(earlier, later):
  """The associative operator ``(a₁, b₁) ∘ (a₂, b₂) = (a₁ a₂, a₂ b₁ + b₂)``."""
  a1, b1 = earlier
  a2, b2 = later
  return a1 * a2, a2 * b1 + b2


def _linear_scan(a, b, c0):
  """States ``c_t = a_t c_{t-1} + b_t`` for ``t = 1..T`` from ``c_0``, as a parallel scan."""
  b = b.at[0].add(a[0] * c0)
  _, cs = lax.associative_scan(_combine, (a, b))
  return cs


def _log_combine(earlier, later):
  """``_combine`` in log space: ``(log a₁ + log a₂, logaddexp(log b₁ + log a₂, log b₂))``."""
  la1, lb1 = earlier
  la2, lb2 = later
  return la1 + la2, jnp.logaddexp(lb1 + la2, lb2)


def _log_linear_scan(log_a, log_b, c0):
  """The same recurrence with ``a, b > 0`` given in log space.

  ``c_t = A_t c_0 + exp(log B_t)`` where ``(log A_t, log B_t)`` is the prefix
  of ``_log_combine``, i.e. ``log A_t = Σ log a`` and ``log B_t = log A_t +
  logcumsumexp(log b - log A)_t`` (Heinsen, 2023). Evaluated as an associative
  scan rather than through ``cumsum`` and ``logcumsumexp`` because the latter
  adds two large terms of opposite sign, ``log A_t`` and the logcumsumexp,
  which lost ~1e-4 relative in float32 gradients already at ``T = 11``.
  ``c_0`` enters linearly rather than through ``log c_0``, so it may be zero or
  negative and its gradient stays finite.
  """
  log_A, log_B = lax.associative_scan(_log_combine, (log_a, log_b))
  return jnp.exp(log_A) * c0[None] + jnp.exp(log_B)


def associative(cell, params, carry, xs, mask, reverse):
  """``run`` with ``scan="associative"``: a parallel scan over ``cell.linear``'s coefficients."""
  coeffs = cell.linear(params, xs)
  log_space = isinstance(coeffs, _cell.LogCoefficients)
  a, b = coeffs
  # a may broadcast over time ([1, N] for the LRU's constant λ).
  a = jax.tree_util.tree_map(lambda a_, b_: jnp.broadcast_to(a_, b_.shape), a, b)
  if mask is not None:
    # A masked step is the identity: a = 1, b = 0 (log a = 0, log b = a very negative
    # finite number rather than -inf, whose logsumexp gradient would be nan).
    one, zero = (0.0, None) if log_space else (1.0, 0.0)
    a = jax.tree_util.tree_map(lambda x: _where_mask(mask, x, one), a)
    b = jax.tree_util.tree_map(
        lambda x: _where_mask(mask, x, jnp.finfo(x.dtype).min if zero is None else zero), b)
  flip = (lambda t: jax.tree_util.tree_map(lambda x: x[::-1], t)) if reverse else (lambda t: t)
  scan_fn = _log_linear_scan if log_space else _linear_scan
  cs = jax.tree_util.tree_map(scan_fn, flip(a), flip(b), carry)
  last = jax.tree_util.tree_map(lambda x: x[-1], cs)
  cs = flip(cs)
  hs = cs if cell.readout is None else cell.readout(params, cs, xs)
  if mask is not None:
    hs = _where_mask(mask, hs, 0)
  return last, hs


def check_inputs(cell, params, xs, carry, mask, fn_name):
  """Checks ``xs``, ``carry`` and ``mask`` at trace time; returns them cast.

  Raises ValueError/TypeError naming the argument, the shape or dtype it got,
  and what was expected.
  """
  if not isinstance(cell, _cell.Cell):
    raise TypeError(f"{fn_name}: cell must be a jrnn.Cell (e.g. jrnn.elman(16)), got {type(cell).__name__}.")
  dtype = _cell.params_dtype(params)
  input_size = cell.input_size(params)
  xs = jnp.asarray(xs)
  if xs.ndim != 2:
    hint = (" For a batch [B, T, features], wrap the call in jax.vmap." if xs.ndim == 3 else "")
    raise ValueError(
        f"{fn_name}: xs must have shape [T, input_size] = [T, {input_size}], got shape "
        f"{tuple(xs.shape)} (rank {xs.ndim}).{hint}")
  if xs.shape[0] == 0:
    raise ValueError(f"{fn_name}: xs is an empty sequence (shape {tuple(xs.shape)}); T must be at least 1.")
  if xs.shape[1] != input_size:
    raise ValueError(
        f"{fn_name}: xs has {xs.shape[1]} features (shape {tuple(xs.shape)}) but {cell.name}'s params "
        f"expect input_size={input_size}, i.e. shape [{xs.shape[0]}, {input_size}].")
  if not jnp.issubdtype(xs.dtype, jnp.floating):
    raise TypeError(
        f"{fn_name}: xs must be a floating array, got dtype {xs.dtype}. "
        "One-hot encode integer tokens first (jax.nn.one_hot(tokens, vocab_size)).")
  xs = xs.astype(dtype)
  carry = check_carry(cell, params, carry, fn_name)
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
      raise TypeError(f"{fn_name}: mask must be a boolean array, got dtype {mask.dtype}; use mask.astype(bool).")
    if mask.shape != (xs.shape[0],):
      raise ValueError(
          f"{fn_name}: mask must have shape [T] = ({xs.shape[0]},) to match xs {tuple(xs.shape)}, "
          f"got shape {tuple(mask.shape)}.")
  return xs, carry, mask


def check_carry(cell, params, carry, fn_name):
  """Returns ``carry`` checked against ``cell.initial_carry(params)``, or the latter if None."""
  if carry is None:
    return cell.initial_carry(params)
  expected = jax.eval_shape(cell.initial_carry, params)
  exp_leaves, exp_tree = jax.tree_util.tree_flatten(expected)
  got_leaves, got_tree = jax.tree_util.tree_flatten(carry)
  if exp_tree != got_tree:
    raise ValueError(
        f"{fn_name}: carry has structure {got_tree}, but {cell.name} expects {exp_tree} "
        "(see cell.initial_carry(params)).")
  cast = []
  for e, g in zip(exp_leaves, got_leaves):
    g = jnp.asarray(g)
    if g.shape != e.shape:
      raise ValueError(
          f"{fn_name}: carry has a leaf of shape {tuple(g.shape)}, expected {tuple(e.shape)} "
          f"(see cell.initial_carry(params)). For a batch, wrap the call in jax.vmap.")
    if not jnp.issubdtype(g.dtype, jnp.inexact):  # complex for the LRU
      raise TypeError(f"{fn_name}: carry must be floating, got dtype {g.dtype}.")
    cast.append(g.astype(e.dtype))
  return jax.tree_util.tree_unflatten(exp_tree, cast)
