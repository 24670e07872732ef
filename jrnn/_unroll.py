r"""The sequence driver: a cell run over time, dispatched on the cell's kind in one place."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _cpu_kernel
from jrnn import _cudnn
from jrnn import _fused
from jrnn import _options
from jrnn import _scans


def unroll(
  cell: _cell.Cell,
  params: Any,
  xs: jax.typing.ArrayLike,
  carry: Any = None,
  *,
  mask: jax.typing.ArrayLike | None = None,
  reset: jax.typing.ArrayLike | None = None,
  reverse: bool = False,
  unroll: int | str = "auto",
  scan: str = "auto",
  projection: str = "auto",
  remat: Any = None,
  vjp: str = "autodiff",
  precision: Any = None,
  kernel: str = "auto",
) -> tuple[Any, jax.Array]:
  r"""Runs ``cell`` over a sequence with ``jax.lax.scan``.

  .. math::

     (c_t, h_t) = \mathrm{step}(c_{t-1}, x_t), \quad t = 1 \ldots T

  How it runs depends on ``cell.kind`` (:mod:`jrnn._cell`) and on the options
  (the fields of :class:`jrnn.Options`), none of which changes the result
  beyond rounding:

  * **projection.** A split cell's step is ``p_t = x_t W_x + b``
    (``kind.project``) and the recurrence on it. ``"hoisted"`` computes ``p``
    for all ``T`` steps as one ``[T, I] @ [I, G·H]`` product before the scan,
    so only ``h_{t-1} W_h`` runs inside it (cuDNN's schedule); ``"per_step"``
    projects ``x_t`` inside the scan body; ``"auto"`` takes
    ``jrnn._options.AUTO_PROJECTION[backend]``: per-step on CPU, where it was
    faster in every measured row (``benchmarks/NOTES.md``), hoisted on GPU
    (faster in every row measured on an H100) and TPU.
  * **remat** (gradient checkpointing; Chen et al. 2016, Griewank & Walther
    2000): ``"step"`` checkpoints the scan body, so only each step's carry is
    stored; ``"sqrt"`` is the two-level scheme, an outer scan over chunks of
    ``K = round(√T)`` steps whose body (the inner scan over a chunk, with that
    chunk's projection) is checkpointed: ``O(√T)`` stored steps for about one
    extra forward pass; an int ``K`` is the same with chunks of ``K`` steps.
  * **vjp="fused"** (:class:`jrnn.AffineRecurrence` cells: elman, gru, lstm)
    replaces autodiff of the scan by the hand-written backward pass of
    :mod:`jrnn._fused`, whose weight gradients are single matrix products over
    all ``T·B`` rows, ``∂L/∂W_h = Σ_t h_{t-1}ᵀ ∂L/∂q_t``, as cuDNN computes
    them. It is a ``jax.custom_vjp`` on the batched layer, not a
    ``custom_vmap``: under a user's ``jax.vmap`` the per-sequence gradients
    are computed and summed by JAX (use :func:`unroll_batch` for the single
    product over the batch). Reverse mode only.
  * **scan.** A :class:`jrnn.LinearRecurrence` cell, ``c_t = a_t ⊙ c_{t-1} +
    b_t``, can also run as ``jax.lax.associative_scan`` with ``(a₁, b₁) ∘
    (a₂, b₂) = (a₁ a₂, a₂ b₁ + b₂)``: ``O(log T)`` depth for about twice the
    arithmetic. ``"auto"`` runs other cells sequentially and linear ones
    associatively from ``jrnn._options.AUTO_MIN_LENGTH[backend]`` steps on
    (never on CPU, where it was slower at every length measured; from 16 on
    GPU, where it was faster at every length measured).
  * **unroll**: steps per ``lax.scan`` iteration; ``"auto"`` is
    ``jrnn._options.AUTO_UNROLL[backend]``, 1 on CPU (unrolling was slower) and
    8 on GPU (1.2-2.5x faster training steps on an H100).
  * **precision** sets the precision of every matrix product of the run,
    forward and backward (``jax.default_matmul_precision`` around the trace,
    entered again by the fused backward pass): ``None`` keeps JAX's default
    (one bfloat16 pass for float32 on TPU), ``"highest"`` asks for float32
    (six passes on TPU). It changes rounding on TPU and on GPUs with
    TensorFloat-32, nothing on CPU; see ``docs/accelerators.md``.

  With a ``mask``, steps where ``mask[t]`` is False leave the carry unchanged
  and give a zero output row; holes may be anywhere. The returned carry is the
  one after the last True step (in the direction of the scan).
  ``reverse=True`` scans from ``t = T`` down to ``1`` and returns ``hs`` in the
  original order, so a right-padded sequence run in reverse starts at its last
  real element. One sequence is ``[T, features]``; for a batch use
  :func:`unroll_batch` or ``jax.vmap``.

  With ``reset``, the carry is reset before every step where ``reset[t]`` is
  True, as Haiku's ``ResetCore`` does (episode boundaries in reinforcement
  learning, document boundaries in packed batches):

  .. math::

     c_{t-1} \leftarrow c_0 \quad \text{where } \mathrm{reset}_t

  ``c_0`` is the carry the run started from: the ``carry`` argument, else
  ``cell.initial_carry(params)``. ``t - 1`` is the step before ``t`` in the
  direction of the scan, so with ``reverse=True`` the carry coming from step
  ``t + 1`` is the one replaced: ``reset[t]`` marks the first step of a
  segment when scanning forward and its last step (the first one scanned) in
  reverse. A reset applies at a masked step too (which then passes ``c_0``
  on), so the result always equals running each segment on its own, from
  ``c_0``, with its part of the mask, and concatenating the ``hs``; the
  returned carry is that of the segment scanned last. Every layer of
  :func:`jrnn.stack` resets its own carry at the same steps; the backward
  direction of :func:`jrnn.bidirectional` resets at the last step of each
  segment, so a bidirectional layer never sees across a boundary. It works
  with every algorithm: in the associative scan a reset step becomes
  ``(a_t, b_t) ← (0, a_t c_0 + b_t)`` (segmented scan in log space), and
  ``vjp="fused"`` carries the gradient of ``c_0`` back from every reset.

  Args:
    cell: a :class:`jrnn.Cell` (``jrnn.elman``, ``gru``, ``lstm``, ``stack``,
      ``bidirectional`` ...).
    params: the cell's params, from ``cell.init``.
    xs: inputs ``[T, input_size]``, floating point; cast to the params' dtype.
    carry: the initial carry; ``None`` for ``cell.initial_carry(params)``.
    mask: optional boolean ``[T]``.
    reset: optional boolean ``[T]``: where True, the carry entering step ``t``
      is ``c_0`` (see above).
    reverse, unroll, scan, projection, remat, vjp, precision: see above and
      :class:`jrnn.Options`; all of them are passed on to the layers of
      :func:`jrnn.stack` and :func:`jrnn.bidirectional`.
    kernel: ``"auto"`` or ``"xla"``: one sequence runs on XLA; ``"cpu"``
      runs it on jrnn's CPU kernel as a batch of one (see
      :func:`unroll_batch`); ``"cudnn"`` needs a batch
      (:func:`unroll_batch`) and is refused here.

  Returns:
    ``(carry, hs)`` with ``hs: [T, hidden_size]``.

  References:
    Chen, Xu, Zhang & Guestrin, "Training deep nets with sublinear memory
    cost", arXiv:1604.06174 (2016).
    Appleyard, Kocisky & Blunsom, "Optimizing performance of recurrent neural
    networks on GPUs", arXiv:1604.01946 (2016).
    Blelloch, "Prefix sums and their applications" (1990).
    Haiku's ``hk.ResetCore`` (the carry reset).

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.gru(32)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> carry, hs = jrnn.unroll(cell, params, jnp.ones((20, 8)), remat="sqrt")
    >>> hs.shape, carry.shape
    ((20, 32), (32,))
  """
  fn_name = "jrnn.unroll"
  options = _options.check(_options.Options(reverse, unroll, scan, projection, remat, vjp, precision, kernel), fn_name)
  _check_cell(cell, fn_name)
  with _explained_params_errors(cell, params, xs, fn_name):
    xs, carry, mask = _checks.check_sequence(cell, params, xs, carry, mask, fn_name)
    reset = _checks.check_reset(reset, xs.shape[:1], fn_name)
    if options.kernel == "cudnn":
      raise ValueError(f"{fn_name}: kernel='cudnn' runs a batch; use jrnn.unroll_batch, or kernel='auto' or 'xla'.")
    if options.kernel == "cpu":  # a batch of one
      add = lambda t: None if t is None else jax.tree_util.tree_map(lambda x: x[None], t)
      _cudnn.choose(cell, params, xs[None], add(mask), add(reset), options, fn_name)  # raises where it cannot run

      def xla():
        return jax.tree_util.tree_map(lambda x: x[None], run(cell, params, carry, xs, mask, options, reset))

      with _options.matmul_precision(options.precision):
        out = _cpu_kernel.batch(cell, params, add(carry), xs[None], add(mask), options, xla, required=True)
      return jax.tree_util.tree_map(lambda x: x[0], out)
    return run(cell, params, carry, xs, mask, options, reset)


def unroll_batch(
  cell: _cell.Cell,
  params: Any,
  xs: jax.typing.ArrayLike,
  carry: Any = None,
  *,
  mask: jax.typing.ArrayLike | None = None,
  reset: jax.typing.ArrayLike | None = None,
  reverse: bool = False,
  unroll: int | str = "auto",
  scan: str = "auto",
  projection: str = "auto",
  remat: Any = None,
  vjp: str = "autodiff",
  precision: Any = None,
  kernel: str = "auto",
) -> tuple[Any, jax.Array]:
  r""":func:`unroll` over a batch of sequences ``xs: [B, T, input_size]``.

  The same as ``jax.vmap`` of :func:`unroll` over the leading axis of ``xs``,
  ``carry`` and ``mask`` (params shared), with the same options. The
  difference is ``vjp="fused"``: here the custom VJP sees the whole batch,
  so the weight gradients are single matrix products over all ``T·B`` rows,
  ``∂L/∂W_h = Σ_{t,b} h_{t-1}ᵀ ∂L/∂q_t`` (see :mod:`jrnn._fused`), rather
  than one per sequence summed afterwards.

  **kernel.** ``"cudnn"`` runs :func:`jrnn.lstm`, and :func:`jrnn.stack` and
  :func:`jrnn.bidirectional` layers of it, as NVIDIA cuDNN's fused LSTM
  (:func:`jax.experimental.rnn.lstm`; one library call per layer and pass,
  see :mod:`jrnn._cudnn`) on a GPU, in float32, with no ``reset``,
  ``remat`` or ``vjp="fused"`` and a right-padding ``mask`` (each row True
  then False, one True at least); anything else raises ValueError (under
  ``jit``, rows of a mask that is not right padding come back as NaN).
  ``"auto"`` (the default) takes cuDNN where it applies on a backend where
  it was measured faster (``jrnn._options.AUTO_KERNEL``: none yet; on an
  H100, JAX's cuDNN LSTM lost to the XLA scan, ``benchmarks/NOTES.md``), and
  decides on a traced mask's values on the device (``lax.cond``); ``"xla"``
  always runs the scan of the other options.
  ``jrnn.cudnn_available()`` says whether this machine has cuDNN.

  ``"cpu"`` runs :func:`jrnn.elman` (tanh), :func:`jrnn.gru` and
  :func:`jrnn.lstm`, and :func:`jrnn.stack` and :func:`jrnn.bidirectional`
  compositions of them, on jrnn's compiled CPU kernel (:mod:`jrnn._cpu_kernel`:
  one call per layer and pass runs the time loop, forward and backward, with
  its own packed GEMM on two threads in float32 on AVX-512; the weight
  gradients are single GEMMs in XLA), on a CPU, in float32 or float64, with
  no ``reset`` or ``remat``, a precision other than one bfloat16 pass, and a
  right-padding ``mask`` (each row True then False; an all-False row is a
  length of 0). ``unroll``, ``projection`` and ``vjp`` do not apply to it
  (its backward pass is the fused one). It is differentiable in reverse mode
  once (``jax.grad``, ``jax.vjp``): forward mode (``jax.jvp``,
  ``jax.jacfwd``) and second derivatives need ``kernel="xla"``. Anything else
  raises ValueError; under ``jit``, rows of a traced mask that are not right
  padding come back as NaN, as with cuDNN. ``"auto"`` takes it in
  ``unroll_batch`` on a CPU wherever it applies (``AUTO_KERNEL["cpu"]``: it
  was faster than the XLA scan in 26 of 27 training rows and 25 of 27
  forward rows of the 2-core sweep, ``benchmarks/NOTES.md``), unless the
  caller sets ``unroll``, ``projection`` or ``vjp``, and decides on
  a traced mask's values on the device; :func:`jrnn.unroll` of one sequence
  (which ``jax.vmap`` batches) stays on the XLA scan unless asked.
  ``jrnn.cpu_kernel_available()`` says whether it was built.

  Args:
    cell, params, reverse, unroll, scan, projection, remat, vjp, precision: as
      in :func:`unroll`.
    kernel: ``"auto"``, ``"xla"``, ``"cudnn"`` or ``"cpu"`` (above).
    xs: inputs ``[B, T, input_size]``, floating point.
    carry: the initial carry, every leaf with a leading ``[B]`` axis; ``None``
      for ``cell.initial_carry(params)`` for every sequence.
    mask: optional boolean ``[B, T]``.
    reset: optional boolean ``[B, T]``: each sequence's carry is reset to its
      own initial carry, as in :func:`unroll`.

  Returns:
    ``(carry, hs)``: every carry leaf ``[B, ...]``, ``hs: [B, T, hidden_size]``.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.lstm(16)
    >>> params = cell.init(jax.random.key(0), 4)
    >>> carry, hs = jrnn.unroll_batch(cell, params, jnp.ones((3, 10, 4)), vjp="fused")
    >>> hs.shape, carry.c.shape
    ((3, 10, 16), (3, 16))
  """
  fn_name = "jrnn.unroll_batch"
  options = _options.check(_options.Options(reverse, unroll, scan, projection, remat, vjp, precision, kernel), fn_name)
  _check_cell(cell, fn_name)
  xs = jnp.asarray(xs)
  with _explained_params_errors(cell, params, xs, fn_name):
    if xs.ndim != 3:
      raise ValueError(
        f"{fn_name}: xs must have shape [B, T, input_size] = [B, T, {cell.input_size(params)}], got shape "
        f"{tuple(xs.shape)} (rank {xs.ndim}). For one sequence use jrnn.unroll."
      )
    xs, carry, mask = _checks.check_batch(cell, params, xs, carry, mask, fn_name)
    reset = _checks.check_reset(reset, xs.shape[:2], fn_name)

    def xla():
      if algorithm(cell, options, xs.shape[1], fn_name) == "fused":
        return _fused.batch_sequence(cell, params, carry, xs, mask, options, reset)
      return jax.vmap(lambda x, c, m, r: run(cell, params, c, x, m, options, r))(xs, carry, mask, reset)

    kernel = _cudnn.choose(cell, params, xs, mask, reset, options, fn_name)
    if kernel == "xla":
      return xla()
    fused = _cpu_kernel.batch if kernel == "cpu" else _cudnn.batch
    with _options.matmul_precision(options.precision):
      return fused(cell, params, carry, xs, mask, options, xla, required=options.kernel == kernel)


def _check_cell(cell, fn_name):
  if not isinstance(cell, _cell.Cell):
    raise TypeError(f"{fn_name}: cell must be a jrnn.Cell (e.g. jrnn.elman(16)), got {type(cell).__name__}.")


@contextlib.contextmanager
def _explained_params_errors(cell, params, xs, fn_name):
  """Turns the AttributeError/TypeError of params that belong to another cell into a clear ValueError."""
  try:
    yield
  except (AttributeError, TypeError) as error:
    if jnp.ndim(xs) >= 1:
      better = _checks.params_mismatch(cell, params, int(jnp.shape(xs)[-1]), fn_name)
      if better is not None:
        raise better from error
    raise


def algorithm(cell, options, length, fn_name="jrnn.unroll"):
  """``"sequence"``, ``"associative"``, ``"fused"`` or ``"sequential"``: how ``run`` runs ``cell``.

  Raises ValueError for an option the cell's kind cannot honour.
  """
  kind = cell.kind
  if isinstance(kind, _cell.SequenceLayer):
    return "sequence"
  linear = isinstance(kind, _cell.LinearRecurrence)
  if options.scan == "associative" and not linear:
    raise ValueError(
      f"{fn_name}: scan='associative' needs a cell whose recurrence is linear in the carry (kind "
      f"jrnn.LinearRecurrence: jrnn.min_gru, jrnn.min_lstm, jrnn.lru); {cell.name} is not (it is a "
      f"{type(kind).__name__}). Use scan='sequential' or 'auto'."
    )
  if options.vjp == "fused":
    _fused.check_cell(cell, fn_name)
  if isinstance(kind, _cell.Stepwise) and cell.step is None:
    raise ValueError(f"{fn_name}: {cell.name} is Stepwise but has no step.")
  if linear and _options.associative(options, length):
    return "associative"
  return "fused" if options.vjp == "fused" else "sequential"


def run(
  cell: _cell.Cell,
  params: Any,
  carry: Any,
  xs: jax.Array,
  mask: jax.Array | None,
  options: _options.Options = _options.Options(),
  reset: jax.Array | None = None,
) -> tuple[Any, jax.Array]:
  """:func:`unroll` on already-checked arguments; wrapped cells call it for their inner cells.

  Every product is traced under ``options.precision`` (the fused layer enters
  it again for its backward pass, which JAX traces later). ``reset`` (``[T]``
  bool or None) is passed to a :class:`jrnn.SequenceLayer`'s ``run`` as the
  keyword ``reset`` only when given, so layers written before it still run.
  """
  with _options.matmul_precision(options.precision):
    match algorithm(cell, options, xs.shape[0]), cell.kind:
      case "sequence", _cell.SequenceLayer() as kind:
        if reset is None:
          return kind.run(params, carry, xs, mask, options)
        _check_takes_reset(cell, kind)
        return kind.run(params, carry, xs, mask, options, reset=reset)
      case "associative", _cell.LinearRecurrence() as kind:
        ps = kind.project(params, xs)
        last, cs = _scans.linear(kind.coefficients(params, ps), carry, mask, options.reverse, reset)
        return last, _scans.zero_masked(mask, kind.readout(params, cs, ps))
      case "fused", _:
        return _fused.sequence(cell, params, carry, xs, mask, options, reset)
      case _:
        return _sequential(cell, params, carry, xs, mask, options, reset)


def _check_takes_reset(cell, kind):
  try:
    parameters = inspect.signature(kind.run).parameters
  except (TypeError, ValueError):  # no signature to read: let the call decide
    return
  if "reset" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
    raise ValueError(
      f"jrnn.unroll: reset was given, but {cell.name} is a jrnn.SequenceLayer whose run(params, carry, xs, mask, "
      "options) takes no reset keyword; add `reset=None` to it and pass it to the driver for its inner cells."
    )


def _sequential(cell, params, carry, xs, mask, options, reset=None):
  """``lax.scan`` over one step at a time, with the projection and remat of ``options``."""
  kind = cell.kind
  if isinstance(kind, _cell.Stepwise):
    project, per_step = (lambda params, x: x), True
    advance = cell.step
  else:
    project, per_step = kind.project, _options.projection(options) == "per_step"

    def advance(params, c, p):
      c = kind.recur(params, c, p)
      return c, kind.readout(params, c, p)

  c0 = carry

  def body(c, inputs):
    p, m, r = inputs
    if r is not None:  # before the step, so a reset at a masked step still applies
      c = jax.tree_util.tree_map(lambda init, old: jnp.where(r, init, old), c0, c)
    if per_step:
      p = project(params, p)
    new_c, h = advance(params, c, p)
    if m is None:
      return new_c, h
    new_c = jax.tree_util.tree_map(lambda n, o: jnp.where(m, n, o), new_c, c)
    return new_c, jnp.where(m, h, jnp.zeros_like(h))

  def prepare(inputs):
    x, m, r = inputs
    return (x if per_step else project(params, x)), m, r

  return _scans.sequential(
    body, carry, (xs, mask, reset), reverse=options.reverse, unroll=options.unroll, remat=options.remat, prepare=prepare
  )
