"""Input checks at trace time: clear ValueError/TypeError messages instead of a failure deep in a scan.

Each message names the function and the argument, what it got and what it
expected.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def is_int_at_least(value: Any, minimum: int = 1) -> bool:
  """True for a Python int ``>= minimum`` (``bool`` is not an int here)."""
  return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_positive_int(value: Any) -> bool:
  """True for a Python int ``>= 1``."""
  return is_int_at_least(value, 1)


def positive_int(value: Any, what: str, fn_name: str, minimum: int = 1) -> int:
  """``value`` if it is an int ``>= minimum`` (default 1), else a ValueError naming ``fn_name: what``."""
  if not is_int_at_least(value, minimum):
    wanted = {1: "a positive int", 0: "a non-negative int"}.get(minimum, f"an int >= {minimum}")
    raise ValueError(f"{fn_name}: {what} must be {wanted}, got {value!r}.")
  return value


def compute_dtype(value: Any, fn_name: str, params_dtype: Any) -> Any:
  """``value`` as a floating NumPy dtype, or None for None or ``params_dtype`` itself (nothing to cast).

  A TypeError naming ``fn_name: compute_dtype`` for anything else.
  """
  if value is None:
    return None
  try:
    dtype = jnp.dtype(value)
  except TypeError:
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
      f"{fn_name}: compute_dtype must be None or a floating dtype (jnp.bfloat16, jnp.float16, jnp.float32), "
      f"got {value!r}."
    )
  return None if dtype == jnp.dtype(params_dtype) else dtype


def params_dtype(params: Any) -> jnp.dtype:
  """The floating dtype of a parameter pytree (that of its first leaf)."""
  leaves = jax.tree_util.tree_leaves(params)
  if not leaves:
    raise ValueError("params is an empty pytree; call cell.init(key, input_size) first.")
  return jnp.result_type(leaves[0])


def check_x(cell_name: str, x: Any, input_size: int, dtype: Any, what: str = "x") -> jax.Array:
  """Checks one input row ``x: [input_size]`` and casts it to the params' dtype."""
  x = jnp.asarray(x)
  if x.ndim != 1 or x.shape[0] != input_size:
    raise ValueError(
      f"{cell_name}.step: {what} must have shape ({input_size},) [input_size], got shape "
      f"{tuple(x.shape)}. For a batch, wrap the call in jax.vmap; for a sequence use jrnn.unroll."
    )
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
      f"{cell_name}.step: {what} must be a floating array, got dtype {x.dtype}. "
      "One-hot encode integer tokens first (jax.nn.one_hot)."
    )
  return x.astype(dtype)


def check_batch(cell, params, xs, carry, mask, fn_name):
  """:func:`check_sequence` for a batch ``xs: [B, T, input_size]``: the batch axes, then one sequence's checks.

  Returns ``xs`` cast to the params' dtype, the carry (``initial_carry`` broadcast over ``B`` if None) cast
  to the initial carry's dtypes, and the mask as an array (or None).
  """
  B = xs.shape[0]
  if mask is not None and jnp.shape(mask) != xs.shape[:2]:
    raise ValueError(
      f"{fn_name}: mask must have shape [B, T] = {tuple(xs.shape[:2])} to match xs {tuple(xs.shape)}: every "
      f"mask leaf needs the leading batch axis B={B}, got shape {tuple(jnp.shape(mask))}."
    )
  for leaf in jax.tree_util.tree_leaves(carry):
    if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != B:
      raise ValueError(
        f"{fn_name}: every carry leaf needs the leading batch axis B={B} of xs {tuple(xs.shape)} (a leading "
        f"axis of size {B}, as cell.initial_carry(params) broadcast to it), got shape {tuple(jnp.shape(leaf))}."
      )
  # One sequence's shapes and dtypes, with unroll's own messages.
  one = lambda t: None if t is None else jax.tree_util.tree_map(lambda x: jnp.asarray(x)[0], t)
  jax.eval_shape(lambda x, c, m: check_sequence(cell, params, x, c, m, fn_name), one(xs), one(carry), one(mask))
  xs = xs.astype(params_dtype(params))
  if carry is None:
    carry = jax.tree_util.tree_map(lambda c: jnp.broadcast_to(c, (B,) + c.shape), cell.initial_carry(params))
  carry = jax.tree_util.tree_map(
    lambda c, e: jnp.asarray(c).astype(e.dtype), carry, jax.eval_shape(cell.initial_carry, params)
  )
  return xs, carry, None if mask is None else jnp.asarray(mask)


def check_sequence(cell, params, xs, carry, mask, fn_name):
  """Checks ``xs: [T, input_size]``, ``carry`` and ``mask: [T]``; returns them cast to the params' dtype."""
  dtype = params_dtype(params)
  input_size = cell.input_size(params)
  xs = jnp.asarray(xs)
  if xs.ndim != 2:
    hint = " For a batch [B, T, features], use jrnn.unroll_batch or jax.vmap." if xs.ndim == 3 else ""
    raise ValueError(
      f"{fn_name}: xs must have shape [T, input_size] = [T, {input_size}], got shape "
      f"{tuple(xs.shape)} (rank {xs.ndim}).{hint}"
    )
  if xs.shape[0] == 0:
    raise ValueError(f"{fn_name}: xs is an empty sequence (shape {tuple(xs.shape)}); T must be at least 1.")
  if xs.shape[1] != input_size:
    raise ValueError(
      f"{fn_name}: xs has {xs.shape[1]} features (shape {tuple(xs.shape)}) but {cell.name}'s params "
      f"expect input_size={input_size}, i.e. shape [{xs.shape[0]}, {input_size}]."
    )
  if not jnp.issubdtype(xs.dtype, jnp.floating):
    raise TypeError(
      f"{fn_name}: xs must be a floating array, got dtype {xs.dtype}. "
      "One-hot encode integer tokens first (jax.nn.one_hot(tokens, vocab_size))."
    )
  carry = check_carry(cell, params, carry, fn_name)
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
      raise TypeError(f"{fn_name}: mask must be a boolean array, got dtype {mask.dtype}; use mask.astype(bool).")
    if mask.shape != (xs.shape[0],):
      raise ValueError(
        f"{fn_name}: mask must have shape [T] = ({xs.shape[0]},) to match xs {tuple(xs.shape)}, "
        f"got shape {tuple(mask.shape)}."
      )
  return xs.astype(dtype), carry, mask


def check_carry(cell, params, carry, fn_name):
  """Returns ``carry`` checked against ``cell.initial_carry(params)``, or the latter if None."""
  if carry is None:
    return cell.initial_carry(params)
  expected = jax.eval_shape(cell.initial_carry, params)
  exp_leaves, exp_tree = jax.tree_util.tree_flatten(expected)
  got_leaves, got_tree = jax.tree_util.tree_flatten(carry)
  if exp_tree != got_tree:
    raise ValueError(
      f"{fn_name}: carry has structure {got_tree}, but {cell.name} expects {exp_tree} (see cell.initial_carry(params))."
    )
  cast = []
  for e, g in zip(exp_leaves, got_leaves):
    g = jnp.asarray(g)
    if g.shape != e.shape:
      raise ValueError(
        f"{fn_name}: carry has a leaf of shape {tuple(g.shape)}, expected {tuple(e.shape)} "
        f"(see cell.initial_carry(params)). For a batch, use jrnn.unroll_batch or jax.vmap."
      )
    if not jnp.issubdtype(g.dtype, jnp.inexact):  # complex for the LRU
      raise TypeError(f"{fn_name}: carry must be floating, got dtype {g.dtype}.")
    cast.append(g.astype(e.dtype))
  return jax.tree_util.tree_unflatten(exp_tree, cast)


def params_mismatch(cell, params, input_size, fn_name):
  """A ValueError if ``params`` are not the pytree ``cell.init`` makes, else None.

  Called after running the cell failed (a missing field, shapes that do not
  multiply), so the happy path pays nothing; compares the structure and the
  leaf shapes with ``jax.eval_shape(cell.init, ...)``.
  """
  try:
    expected = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
  except Exception:  # the cell cannot even be initialised for this input: say nothing more
    return None
  got_leaves, got_tree = jax.tree_util.tree_flatten(params)
  exp_leaves, exp_tree = jax.tree_util.tree_flatten(expected)
  got_shapes = [tuple(jnp.shape(g)) for g in got_leaves]
  exp_shapes = [tuple(e.shape) for e in exp_leaves]
  if got_tree == exp_tree and got_shapes == exp_shapes:
    return None
  return ValueError(
    f"{fn_name}: the params do not belong to {cell.name}: got {type(params).__name__} with leaf shapes "
    f"{got_shapes}, but {cell.name}.init(key, {input_size}) makes {type(expected).__name__} with leaf shapes "
    f"{exp_shapes}. Pass the params from this cell's own init."
  )


def check_reset(reset: Any, shape: tuple[int, ...], fn_name: str) -> jax.Array | None:
  """Checks ``reset``: ``None``, or a boolean array of ``shape`` (``[T]``, or ``[B, T]`` for a batch)."""
  if reset is None:
    return None
  reset = jnp.asarray(reset)
  wanted = "[T]" if len(shape) == 1 else "[B, T]"
  if reset.dtype != jnp.bool_:
    raise TypeError(
      f"{fn_name}: reset must be a boolean array of shape {wanted} = {shape}, got dtype {reset.dtype}; "
      "use reset.astype(bool)."
    )
  if reset.shape != shape:
    raise ValueError(
      f"{fn_name}: reset must have shape {wanted} = {shape} to match xs (one flag per step), got shape "
      f"{tuple(reset.shape)}."
    )
  return reset
