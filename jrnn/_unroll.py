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

  Args:
    cell: a :class:`jrnn.Cell` (``jrnn.elman``, ``gru``, ``lstm``, ``stack``,
      ``bidirectional`` ...).
    params: the cell's params, from ``cell.init``.
    xs: inputs ``[T, input_size]``, floating point; cast to the params' dtype.
    carry: the initial carry; ``None`` for ``cell.initial_carry(params)``.
    mask: optional boolean ``[T]``.
    reverse: scan from the last step to the first.
    unroll: how many steps ``lax.scan`` unrolls per loop iteration (speed only).

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
  return run(cell, params, carry, xs, mask, bool(reverse), unroll)


def run(cell, params, carry, xs, mask, reverse, unroll):
  """:func:`unroll` on already-checked arguments (used by composite layers)."""
  if cell.sequence is not None:
    return cell.sequence(params, carry, xs, mask, reverse, unroll)
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
    if not jnp.issubdtype(g.dtype, jnp.floating):
      raise TypeError(f"{fn_name}: carry must be floating, got dtype {g.dtype}.")
    cast.append(g.astype(e.dtype))
  return jax.tree_util.tree_unflatten(exp_tree, cast)
