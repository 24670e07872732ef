r"""Sequence parallelism for the linear recurrences: the time axis split over a mesh axis.

A :class:`jrnn.LinearRecurrence` cell (minGRU, minLSTM, LRU, a
:func:`jrnn.linear_recurrent_block` around one) computes ``c_t = a_t ⊙ c_{t-1}
+ b_t``. A step is the affine map ``c ↦ a c + b``, written ``(a, b)``; running
``(A, B)`` and then ``(A', B')`` is

.. math::

   (A, B) \circ (A', B') = (A A',\; A' B + B'),

an associative composition (the operator of ``jrnn.unroll(...,
scan="associative")``). With ``T`` steps split into ``D`` chunks of ``L =
T/D`` on the ``D`` devices of a mesh axis, device ``k``:

1. projects its chunk and scans it **from zero**, keeping the prefix
   compositions ``(A_t, B_t) = (a_1, b_1) ∘ … ∘ (a_t, b_t)`` of the chunk:
   ``A_t = ∏_{s≤t} a_s`` and ``B_t`` is the chunk's state at ``t`` from a zero
   carry;
2. all-gathers the ``D`` chunk summaries ``S_j = (A_L, B_L)`` of every device
   (``D`` carries' worth of data) and composes them across devices, an
   exclusive scan over ``j < k``: the carry entering its chunk is
   ``c_in = (S_0 ∘ … ∘ S_{k-1})(c_0)``;
3. corrects its chunk, ``c_t = A_t ⊙ c_in + B_t``, and reads out ``h_t``.

The chunk scans and read-outs run in parallel; the only communication is one
all-gather of ``D`` summaries per pass (and its transpose in the backward
pass). Masked steps are the identity ``(1, 0)``; ``reverse`` runs the same
algorithm on the flipped order of steps and of devices.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jrnn import _cell
from jrnn import _checks
from jrnn import _options
from jrnn import _scans

_NAME = "jrnn.sharding.sequence_parallel_unroll"
_tree_map = jax.tree_util.tree_map


def sequence_parallel_unroll(
  cell: _cell.Cell,
  params: Any,
  xs: jax.typing.ArrayLike,
  carry: Any = None,
  *,
  mesh: Mesh,
  axis: str | None = None,
  mask: jax.typing.ArrayLike | None = None,
  reverse: bool = False,
  scan: str = "auto",
  unroll: int | str = "auto",
  precision: Any = None,
) -> tuple[Any, jax.Array]:
  r""":func:`jrnn.unroll` of a linear recurrence with the time axis split over the mesh axis ``axis``.

  .. math::

     c_t = a_t \odot c_{t-1} + b_t, \qquad
     (A, B) \circ (A', B') = (A A', A' B + B')

  Each of the ``D`` devices on ``axis`` holds ``T/D`` consecutive steps,
  scans them from a zero carry, keeping ``A_t = ∏ a`` and ``B_t`` (the
  states from zero); the ``D`` chunk summaries ``(A_L, B_L)`` are all-gathered
  and composed across devices to give each device the carry ``c_in`` entering
  its chunk; the chunk is corrected, ``c_t = A_t ⊙ c_in + B_t``, and read out.
  The result equals :func:`jrnn.unroll` on one device, values and gradients,
  up to rounding (the tests hold it to ``1e-12`` in float64). ``jax.grad``
  works through it (``jax.shard_map`` with ``check_vma``; the parameters'
  gradients are summed over the devices). It places its inputs (params and
  carry replicated, ``xs`` and ``mask`` split along time); under ``jax.jit``
  an argument committed to a single device conflicts with the mesh, so create
  ``xs`` split (``NamedSharding(mesh, P(axis))``) or uncommitted.

  It pays only when **one sequence** is too long for one device's memory (or
  too long to fill several devices otherwise): with a batch of ``B ≥ D``
  sequences, data parallelism (:func:`jrnn.sharding.data_parallel`) uses every
  device with no change to the recurrence. See ``docs/sequence_parallelism.md``
  and ``benchmarks/NOTES.md`` for the measured memory and time.

  Args:
    cell: a cell of kind :class:`jrnn.LinearRecurrence` (``jrnn.min_gru``,
      ``jrnn.min_lstm``, ``jrnn.lru``, ``jrnn.linear_recurrent_block`` around
      one), plain or log-space (:class:`jrnn.LogCoefficients`).
    params: the cell's params (replicated on every device).
    xs: one sequence ``[T, input_size]``, or a batch ``[B, T, input_size]``
      whose every sequence is split along time the same way; ``T`` must be a
      multiple of the number of devices on ``axis``.
    carry: the initial carry (``[B, ...]`` leaves for a batch); ``None`` for
      ``cell.initial_carry(params)``.
    mesh: a ``jax.sharding.Mesh`` with the axis ``axis``; other axes of the
      mesh hold copies (e.g. ``jrnn.sharding.data_mesh(axis="time")``).
    axis: the mesh axis to split time over; ``None`` for the mesh's only axis.
    mask: optional boolean ``[T]`` (``[B, T]`` for a batch); a masked step
      keeps the carry (``a = 1, b = 0``) and gives a zero output row.
    reverse: scan from ``t = T`` down to ``1``; ``hs`` keep the original order.
    scan: how each device scans its chunk: ``"sequential"`` (``lax.scan``),
      ``"associative"`` (``lax.associative_scan``, in log space for
      :class:`jrnn.LogCoefficients`), or ``"auto"``, chosen as
      :func:`jrnn.unroll` chooses for a sequence of the chunk's length.
    unroll: ``lax.scan``'s unroll for the sequential chunk scan.
    precision: the precision of the cell's matrix products, as in
      :func:`jrnn.unroll`.

  Returns:
    ``(carry, hs)``: the carry after the last (unmasked) step in the
    direction of the scan, and ``hs: [T, hidden_size]`` (``[B, T,
    hidden_size]``), split over ``axis`` along time.

  Raises:
    TypeError: for a cell that is not a :class:`jrnn.LinearRecurrence` (an
      LSTM's ``h_t`` is not linear in ``h_{t-1}``, so chunks cannot be
      corrected afterwards), or ``mesh`` not a ``Mesh``.
    ValueError: for ``T`` not divisible by the devices on ``axis``, an axis
      the mesh lacks, or inputs ``jrnn.unroll`` would refuse.

  Example:
    On one device (a mesh of one) it is :func:`jrnn.unroll`; on ``D`` devices
    the same call splits time ``D`` ways:

    >>> import jax, jax.numpy as jnp, jrnn
    >>> from jrnn.sharding import sequence_parallel_unroll
    >>> mesh = jrnn.sharding.data_mesh(jax.devices()[:1], axis="time")
    >>> cell = jrnn.min_gru(16)
    >>> params = cell.init(jax.random.key(0), 4)
    >>> xs = jax.random.normal(jax.random.key(1), (64, 4))
    >>> carry, hs = sequence_parallel_unroll(cell, params, xs, mesh=mesh)
    >>> hs.shape, bool(jnp.allclose(hs, jrnn.unroll(cell, params, xs)[1], atol=1e-5))
    ((64, 16), True)

  References:
    Blelloch, "Prefix sums and their applications" (1990): the scan of
    per-block summaries.
    Martin & Cundy, "Parallelizing linear recurrent neural nets over sequence
    length", ICLR (2018).
  """
  options = _options.check(_options.Options(reverse=reverse, unroll=unroll, scan=scan, precision=precision), _NAME)
  axis = _check_mesh(mesh, axis)
  _check_cell(cell)
  xs = jnp.asarray(xs)
  if xs.ndim not in (2, 3):
    raise ValueError(
      f"{_NAME}: xs must have shape [T, input_size] (one sequence) or [B, T, input_size] (a batch), got shape "
      f"{tuple(xs.shape)}."
    )
  batched = xs.ndim == 3
  xs, carry, mask = (_checks.check_batch if batched else _checks.check_sequence)(cell, params, xs, carry, mask, _NAME)
  T, D = xs.shape[-2], mesh.shape[axis]
  if T % D:
    raise ValueError(
      f"{_NAME}: the sequence length T={T} is not divisible by the {D} devices on the mesh axis {axis!r}; pad "
      f"the sequence to a multiple of {D} (and mask the padding) or use a mesh axis whose size divides T."
    )
  associative = _options.associative(options, T // D)

  def local(params, carry, xs, mask):
    return _chunk(
      cell.kind,
      params,
      carry,
      xs,
      mask,
      axis=axis,
      devices=D,
      reverse=options.reverse,
      associative=associative,
      unroll=options.unroll,
    )

  if batched:
    local = jax.vmap(local, in_axes=(None, 0, 0, None if mask is None else 0), out_axes=(0, 0))

  time = P(None, axis) if batched else P(axis)
  if mask is None:
    body, args, in_specs = (lambda p, c, x: local(p, c, x, None)), (params, carry, xs), (P(), P(), time)
  else:
    body, args, in_specs = local, (params, carry, xs, mask), (P(), P(), time, time)
  # Where each piece lives (a no-op for arrays already placed so; under jit, a sharding constraint).
  args = tuple(jax.device_put(arg, NamedSharding(mesh, spec)) for arg, spec in zip(args, in_specs))

  def stacked(params, *args):
    # Params are the same on every device; marking them as varying here means the backward pass sums their
    # gradient over the devices once, at this point. Left invariant, a coefficient computed from the params
    # alone (the LRU's λ) would be cast inside the chunk scan, and the backward scan would all-reduce every step.
    last, hs = body(lax.pcast(params, (axis,), to="varying"), *args)
    return _tree_map(lambda c: c[None], last), hs

  with _options.matmul_precision(options.precision):
    lasts, hs = jax.shard_map(stacked, mesh=mesh, in_specs=in_specs, out_specs=(P(axis), time))(*args)
  # Every device returns the state at the end of its chunk; the run's carry is that of the chunk scanned last.
  return _tree_map(lambda c: c[0 if options.reverse else -1], lasts), hs


def _check_mesh(mesh, axis):
  if not isinstance(mesh, Mesh):
    raise TypeError(f"{_NAME}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
  if axis is None:
    if len(mesh.axis_names) != 1:
      raise ValueError(
        f"{_NAME}: the mesh has axes {tuple(mesh.axis_names)}; name the one to split time over with axis=."
      )
    return mesh.axis_names[0]
  if axis not in mesh.shape:
    raise ValueError(f"{_NAME}: the mesh has axes {tuple(mesh.axis_names)}, not the axis {axis!r}.")
  return axis


def _check_cell(cell):
  if not isinstance(cell, _cell.Cell):
    raise TypeError(f"{_NAME}: cell must be a jrnn.Cell (e.g. jrnn.min_gru(16)), got {type(cell).__name__}.")
  if not isinstance(cell.kind, _cell.LinearRecurrence):
    raise TypeError(
      f"{_NAME}: {cell.name} is a {type(cell.kind).__name__} cell; sequence parallelism needs a recurrence linear "
      "in the carry, c_t = a_t ⊙ c_{t-1} + b_t (kind jrnn.LinearRecurrence: jrnn.min_gru, jrnn.min_lstm, jrnn.lru, "
      "or jrnn.linear_recurrent_block around one), so that a chunk scanned from zero can be corrected afterwards. "
      "Split the batch instead (jrnn.sharding.data_parallel)."
    )


def _chunk(kind, params, c0, xs, mask, *, axis, devices, reverse, associative, unroll):
  """One device's part for one sequence: its chunk ``xs: [L, I]``, the run's initial carry ``c0``.

  Returns the state at the end of the chunk (in the scan's direction) and the chunk's outputs ``[L, H]``.
  """
  ps = kind.project(params, xs)
  coefficients = kind.coefficients(params, ps)
  log_space = isinstance(coefficients, _cell.LogCoefficients)
  a, b = coefficients
  a = _tree_map(lambda a_, b_: jnp.broadcast_to(a_, b_.shape), a, b)
  if mask is not None:
    # As in _scans.linear: a masked step is the identity; in log space log b is a very negative finite number,
    # since -inf would give logaddexp a nan gradient.
    a = _tree_map(lambda x: _scans._masked(mask, x, 0.0 if log_space else 1.0), a)
    b = _tree_map(lambda x: _scans._masked(mask, x, jnp.finfo(x.dtype).min if log_space else 0.0), b)
  b_leaves, treedef = jax.tree_util.tree_flatten(b)
  a_leaves, c0_leaves = treedef.flatten_up_to(a), treedef.flatten_up_to(c0)
  cs = []
  for a_, b_, c0_ in zip(a_leaves, b_leaves, c0_leaves):
    if reverse:
      a_, b_ = a_[::-1], b_[::-1]
    # Step 1: the prefix compositions (A_t, B_t) of the chunk, in the scan's order.
    if associative and log_space:
      A, B = lax.associative_scan(_scans._log_combine, (a_, b_))
      A, B = jnp.exp(A), jnp.exp(B)
    elif associative:
      A, B = lax.associative_scan(_scans._combine, (a_, b_))
    else:
      A, B = _sequential_prefix(jnp.exp(a_), jnp.exp(b_), unroll) if log_space else _sequential_prefix(a_, b_, unroll)
    # Steps 2 and 3: the incoming carry from every device's summary, and the correction.
    cs.append(_corrected(A, B, c0_, axis=axis, devices=devices, reverse=reverse))
  last = jax.tree_util.tree_unflatten(treedef, [c[-1] for c in cs])
  cs = jax.tree_util.tree_unflatten(treedef, [c[::-1] if reverse else c for c in cs])
  return last, _scans.zero_masked(mask, kind.readout(params, cs, ps))


def _sequential_prefix(a, b, unroll):
  """``(A_t, B_t)`` of the steps ``(a_t, b_t)`` by ``lax.scan``: ``A_t = a_t A_{t-1}``, ``B_t = a_t B_{t-1} + b_t``."""

  def body(prefix, step):
    prefix = _scans._combine(prefix, step)
    return prefix, prefix

  start = (jnp.ones_like(a[0]), jnp.zeros_like(b[0]))
  _, prefix = lax.scan(body, start, (a, b), unroll=unroll)
  return prefix


def _corrected(A, B, c0, *, axis, devices, reverse):
  """``c_t = A_t c_in + B_t`` with ``c_in`` composed from every device's chunk summary ``(A_L, B_L)``."""
  if devices == 1:
    # Nothing to gather. (With the all_gather in place, XLA:CPU in jax 0.10.2 aborted compiling the LRU's
    # gradient on a one-device mesh, in AlgebraicSimplifier::HandlePad.)
    return A * c0[None] + B
  summaries = lax.all_gather((A[-1], B[-1]), axis)  # ([D, ...], [D, ...]) in device order
  k = lax.axis_index(axis)
  if reverse:  # the last device's chunk is scanned first
    summaries, k = _tree_map(lambda x: x[::-1], summaries), devices - 1 - k
  # Inclusive compositions over devices; device k starts where device k - 1's chunk ends (at c0 for k = 0).
  A_upto, B_upto = lax.associative_scan(_scans._combine, summaries)
  ends = A_upto * c0[None] + B_upto
  c_in = jnp.where(k == 0, c0, lax.dynamic_index_in_dim(ends, jnp.maximum(k - 1, 0), keepdims=False))
  return A * c_in[None] + B
