"""The sequence driver: a cell run over time with ``jax.lax.scan``."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

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
    projection: str = "auto",
    remat: Any = None,
    vjp: str = "autodiff",
) -> tuple[Any, jax.Array]:
  """Runs ``cell`` over a sequence with ``jax.lax.scan``.

  .. math::

     (c_t, h_t) = \\mathrm{step}(c_{t-1}, x_t), \\quad t = 1 \\ldots T

  Each step is split in two: the carry-independent input projection
  ``p_t = x_t W_x + b`` (``cell.project``) and the recurrence on it
  (``cell.recur``). ``projection="hoisted"`` computes ``p`` for all ``T``
  steps as one ``[T, I] @ [I, G·H]`` matrix product before the scan, so only
  ``h_{t-1} W_h`` runs inside it (cuDNN's schedule); ``"per_step"`` projects
  ``x_t`` inside the scan body. Same results (up to rounding); which is faster
  depends on the backend: on XLA:CPU the per-step form was faster in all 36
  rows of the benchmark's quick grid (1.04-2.71x, ``benchmarks/NOTES.md``),
  because reading the ``[T, G·H]`` slab inside the loop costs more than the
  small product it saves. ``"auto"`` (the default) takes
  ``AUTO_PROJECTION[jax.default_backend()]``: per-step on CPU (measured),
  hoisted on GPU and TPU (cuDNN's choice; not yet measured in jrnn).

  ``remat`` trades compute for activation memory in the backward pass
  (gradient checkpointing, Chen et al. 2016; Griewank & Walther 2000):
  ``"step"`` wraps the scan body in ``jax.checkpoint``, so only the carry of
  each step is stored and the gates are recomputed; ``"sqrt"`` is the
  two-level scheme, an outer scan over chunks of ``K = round(√T)`` steps whose
  body (the inner scan over a chunk, with that chunk's projection) is
  checkpointed, so the forward pass stores only the ``T/K`` carries at chunk
  boundaries and the backward pass recomputes one chunk at a time:
  ``O(√T)`` stored steps instead of ``O(T)`` for about one extra forward
  pass. An int ``K`` is the same with chunks of ``K`` steps. Values do not
  change, only what is stored.

  ``vjp="fused"`` replaces autodiff of the scan by a hand-written backward pass
  (:mod:`jrnn._fused`, for cells with ``cell.recurrent`` and ``cell.update``:
  elman, gru, lstm): the backward scan carries only ``∂L/∂c_t`` and emits
  ``∂L/∂p_t`` and ``∂L/∂q_t`` (``q_t`` the recurrent product); the weight
  gradients are then single matrix products over all ``T·B`` rows,
  ``∂L/∂W_h = Σ_t h_{t-1}ᵀ ∂L/∂q_t`` and ``∂L/∂W_x = Σ_t x_tᵀ ∂L/∂p_t``, as
  cuDNN computes them, instead of ``T`` rank-``B`` updates accumulated in the
  scan carry. Under ``jax.vmap`` the batch is handled as one ``[B, ...]``
  problem (``jax.custom_batching.custom_vmap``), so those products contract
  over the batch too. Same gradients to float rounding; reverse mode only (no
  ``jax.jvp``, no second derivatives); default ``"autodiff"``.

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
      ValueError for a cell without it) or ``"auto"`` (see above).
    projection: ``"hoisted"``, ``"per_step"`` or ``"auto"`` (see above).
    remat: ``None`` (store every step's residuals), ``"step"``, ``"sqrt"`` or
      a positive int chunk length (see above).
    vjp: ``"autodiff"`` (``jax.grad`` through the scan) or ``"fused"`` (see
      above).

    All of ``reverse`` ... ``vjp`` are passed on to the layers of
    :func:`jrnn.stack` and :func:`jrnn.bidirectional`.

  Returns:
    ``(carry, hs)`` with ``hs: [T, hidden_size]``.

  References:
    Chen, Xu, Zhang & Guestrin, "Training deep nets with sublinear memory
    cost", arXiv:1604.06174 (2016).
    Appleyard, Kocisky & Blunsom, "Optimizing performance of recurrent neural
    networks on GPUs", arXiv:1604.01946 (2016).

  Example::

    cell = jrnn.gru(32)
    params = cell.init(jax.random.key(0), 8)
    batched = jax.vmap(lambda xs, m: jrnn.unroll(cell, params, xs, mask=m))
    carry, hs = batched(jnp.ones((4, 20, 8)), jnp.ones((4, 20), bool))   # hs: [4, 20, 32]
  """
  xs, carry, mask = check_inputs(cell, params, xs, carry, mask, "jrnn.unroll")
  options = check_options(Options(bool(reverse), unroll, scan, projection, remat, vjp), "jrnn.unroll")
  return run(cell, params, carry, xs, mask, options)


def unroll_batch(
    cell: _cell.Cell,
    params: Any,
    xs: jax.typing.ArrayLike,
    carry: Any = None,
    *,
    mask: Optional[jax.typing.ArrayLike] = None,
    reverse: bool = False,
    unroll: int = 1,
    scan: str = "auto",
    projection: str = "auto",
    remat: Any = None,
    vjp: str = "autodiff",
) -> tuple[Any, jax.Array]:
  """:func:`unroll` over a batch of sequences ``xs: [B, T, input_size]``.

  The same as ``jax.vmap`` of :func:`unroll` over the leading axis of ``xs``,
  ``carry`` and ``mask`` (params shared), with the same options. The
  difference is ``vjp="fused"``: here the custom VJP sees the whole batch,
  so the weight gradients are single matrix products over all ``T·B`` rows,
  ``∂L/∂W_h = Σ_{t,b} h_{t-1}ᵀ ∂L/∂q_t`` (see :mod:`jrnn._fused`), rather
  than one per sequence summed afterwards. Composite cells
  (:func:`jrnn.stack`, :func:`jrnn.bidirectional`) run their layers per
  sequence under ``vmap``.

  Args:
    cell, params, reverse, unroll, scan, projection, remat, vjp: as in
      :func:`unroll`.
    xs: inputs ``[B, T, input_size]``, floating point.
    carry: the initial carry, every leaf with a leading ``[B]`` axis; ``None``
      for ``cell.initial_carry(params)`` for every sequence.
    mask: optional boolean ``[B, T]``.

  Returns:
    ``(carry, hs)``: every carry leaf ``[B, ...]``, ``hs: [B, T, hidden_size]``.

  Example::

    cell = jrnn.lstm(128)
    params = cell.init(jax.random.key(0), 16)
    carry, hs = jrnn.unroll_batch(cell, params, jnp.ones((32, 100, 16)), vjp="fused")
  """
  fn_name = "jrnn.unroll_batch"
  if not isinstance(cell, _cell.Cell):
    raise TypeError(f"{fn_name}: cell must be a jrnn.Cell (e.g. jrnn.elman(16)), got {type(cell).__name__}.")
  xs = jnp.asarray(xs)
  if xs.ndim != 3:
    raise ValueError(
        f"{fn_name}: xs must have shape [B, T, input_size] = [B, T, {cell.input_size(params)}], got shape "
        f"{tuple(xs.shape)} (rank {xs.ndim}). For one sequence use jrnn.unroll.")
  B = xs.shape[0]
  for what, tree in (("carry", carry), ("mask", mask)):
    for leaf in jax.tree_util.tree_leaves(tree):
      if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != B:
        raise ValueError(f"{fn_name}: every {what} leaf needs the leading batch axis B={B} of xs "
                         f"{tuple(xs.shape)}, got shape {tuple(jnp.shape(leaf))}.")
  options = check_options(Options(bool(reverse), unroll, scan, projection, remat, vjp), fn_name)

  # Check one sequence's shapes and dtypes with unroll's own messages (names the same arguments).
  one = lambda t: None if t is None else jax.tree_util.tree_map(lambda x: jnp.asarray(x)[0], t)
  jax.eval_shape(lambda x, c, m: check_inputs(cell, params, x, c, m, fn_name), one(xs), one(carry), one(mask))
  xs = xs.astype(_cell.params_dtype(params))
  if carry is None:
    carry = jax.tree_util.tree_map(lambda c: jnp.broadcast_to(c, (B,) + c.shape), cell.initial_carry(params))
  carry = jax.tree_util.tree_map(lambda c, e: jnp.asarray(c).astype(e.dtype), carry,
                                 jax.eval_shape(cell.initial_carry, params))
  if mask is not None:
    mask = jnp.asarray(mask)

  if (options.vjp == "fused" and cell.sequence is None
      and resolve_scan(cell, options.scan, xs.shape[1]) == "sequential"):
    from jrnn import _fused  # pylint: disable=g-import-not-at-top (it imports this module)
    return _fused.batch_sequence(cell, params, carry, xs, mask, options)
  return jax.vmap(lambda x, c, m: run(cell, params, c, x, m, options))(xs, carry, mask)


SCANS = ("sequential", "associative", "auto")
PROJECTIONS = ("hoisted", "per_step", "auto")
REMATS = (None, "step", "sqrt")
VJPS = ("autodiff", "fused")

# projection="auto" per backend (jax.default_backend()); other backends: "hoisted".
AUTO_PROJECTION = {"cpu": "per_step", "gpu": "hoisted", "tpu": "hoisted"}


class Options(NamedTuple):
  """How :func:`unroll` runs a sequence (see its arguments); passed to ``cell.sequence``."""

  reverse: bool = False
  unroll: int = 1
  scan: str = "auto"
  projection: str = "auto"
  remat: Any = None
  vjp: str = "autodiff"


def check_options(options: Options, fn_name: str) -> Options:
  """Raises ValueError for an option outside its documented values."""
  unroll = options.unroll
  if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
    raise ValueError(f"{fn_name}: unroll must be a positive int, got {unroll!r}.")
  if options.scan not in SCANS:
    raise ValueError(f"{fn_name}: scan must be one of {SCANS}, got {options.scan!r}.")
  if options.projection not in PROJECTIONS:
    raise ValueError(f"{fn_name}: projection must be one of {PROJECTIONS}, got {options.projection!r}.")
  remat = options.remat
  is_chunk = isinstance(remat, int) and not isinstance(remat, bool) and remat >= 1
  if not is_chunk and not (remat is None or (isinstance(remat, str) and remat in REMATS)):
    raise ValueError(f"{fn_name}: remat must be None, 'step', 'sqrt' or a positive int chunk length, "
                     f"got {remat!r}.")
  if options.vjp not in VJPS:
    raise ValueError(f"{fn_name}: vjp must be one of {VJPS}, got {options.vjp!r}.")
  if options.vjp == "fused" and remat is not None:
    raise ValueError(f"{fn_name}: vjp='fused' stores its own residuals and cannot be combined with "
                     f"remat={remat!r}; use vjp='autodiff' with remat.")
  return options

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


def resolve_projection(projection):
  """``"hoisted"`` or ``"per_step"``: what ``projection`` means on the default backend."""
  if projection == "auto":
    return AUTO_PROJECTION.get(jax.default_backend(), "hoisted")
  return projection


def run(cell, params, carry, xs, mask, options=Options()):
  """:func:`unroll` on already-checked arguments (used by composite layers)."""
  if cell.sequence is not None:
    return cell.sequence(params, carry, xs, mask, options)
  if resolve_scan(cell, options.scan, xs.shape[0]) == "associative":
    return associative(cell, params, carry, xs, mask, options.reverse)
  if options.vjp == "fused":
    from jrnn import _fused  # pylint: disable=g-import-not-at-top (it imports this module)
    return _fused.sequence(cell, params, carry, xs, mask, options)
  return scan_sequence(cell, params, carry, xs, mask, options)


def scan_sequence(cell, params, carry, xs, mask, options):
  """``lax.scan`` over ``cell.recur`` with the projection and remat of ``options``."""
  per_step = resolve_projection(options.projection) == "per_step"
  reverse, remat = options.reverse, options.remat

  def body(c, inputs):
    p, m = inputs
    if per_step:
      p = cell.project(params, p)
    new_c, h = cell.recur(params, c, p)
    if m is None:
      return new_c, h
    new_c = jax.tree_util.tree_map(lambda n, o: jnp.where(m, n, o), new_c, c)
    return new_c, jnp.where(m, h, jnp.zeros_like(h))

  def segment(c, inputs, step_body=body):
    x, m = inputs
    p = x if per_step else cell.project(params, x)
    return lax.scan(step_body, c, (p, m), reverse=reverse, unroll=options.unroll)

  if remat is None:
    return segment(carry, (xs, mask))
  if remat == "step":
    return segment(carry, (xs, mask), jax.checkpoint(body))
  T = xs.shape[0]
  chunk = max(1, round(T ** 0.5)) if remat == "sqrt" else min(remat, T)
  return chunked_scan(jax.checkpoint(segment), carry, (xs, mask), chunk, reverse)


def chunked_scan(segment, carry, inputs, chunk, reverse):
  """``segment`` over ``inputs`` (leading axis ``T``) in chunks of ``chunk`` steps.

  An outer ``lax.scan`` runs ``segment(carry, chunk_inputs) -> (carry, ys)``
  over the ``T // chunk`` full chunks, then once more over the remaining
  ``T % chunk`` steps (first instead of last when ``reverse``), so that the
  carry flows through the steps in order. With a checkpointed ``segment``
  this is the two-level remat scheme.
  """
  T = jax.tree_util.tree_leaves(inputs)[0].shape[0]
  n, r = divmod(T, chunk)  # chunk <= T, so n >= 1

  main = jax.tree_util.tree_map(lambda x: x[:n * chunk].reshape((n, chunk) + x.shape[1:]), inputs)
  rest = jax.tree_util.tree_map(lambda x: x[n * chunk:], inputs)

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
  ys = jax.tree_util.tree_map(lambda *y: jnp.concatenate(y, axis=0), *parts)
  return carry, ys


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
