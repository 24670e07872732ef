"""How a sequence is run: the public :class:`Options` value and the per-backend defaults.

Every function that runs a sequence (:func:`jrnn.unroll`,
:func:`jrnn.unroll_batch`, the modes, :class:`jrnn.nnx.RNN`, the diagnostics)
takes these options as keyword arguments and passes them on unchanged, so a
wrapped cell (:func:`jrnn.stack`, :func:`jrnn.bidirectional`) receives them too.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, NamedTuple

import jax

from jrnn import _checks

SCANS = ("sequential", "associative", "auto")
PROJECTIONS = ("hoisted", "per_step", "auto")
REMATS = (None, "step", "sqrt")
VJPS = ("autodiff", "fused")
KERNELS = ("auto", "xla", "cudnn", "cpu")
# The names jax.default_matmul_precision takes for the three levels of jax.lax.Precision, in pairs:
# DEFAULT, HIGH, HIGHEST (jax.lax.Precision's docstring).
PRECISIONS = ("default", "bfloat16", "high", "tensorfloat32", "highest", "float32")

# projection="auto" per backend (jax.default_backend()); other backends: "hoisted".
# CPU and GPU measured (benchmarks/NOTES.md: hoisted was 0.73-0.96x of per-step on an H100); TPU
# follows cuDNN's schedule, not yet measured.
AUTO_PROJECTION = {"cpu": "per_step", "gpu": "hoisted", "tpu": "hoisted"}

# scan="auto" uses the associative scan for linear cells from this length on, per
# backend; None: never. CPU and GPU measured (benchmarks/NOTES.md): on an H100 it was faster at
# every length measured, 16 the shortest; TPU not yet.
AUTO_MIN_LENGTH = {"cpu": None, "gpu": 16, "tpu": 256}

# kernel="auto" takes the kernel named here (jrnn._cudnn on "gpu", jrnn._cpu_kernel on "cpu") on its backend,
# where it applies. GPU: none: on an H100, JAX's cuDNN LSTM was slower than the XLA scan in every forward
# row and in 7 of 12 training rows of the sweep (benchmarks/NOTES.md). CPU: jrnn's CPU kernel: on the 2-core
# machine it was faster than the XLA scan in 26 of 27 training rows and 25 of 27 forward rows of the sweep
# (H 64/256/1024, T 16/128/1024; geometric means 0.76x and 0.77x; benchmarks/NOTES.md).
AUTO_KERNEL: dict[str, str] = {"cpu": "cpu"}

_XLA_ONLY = contextvars.ContextVar("jrnn_auto_kernel_is_xla", default=False)


def auto_is_xla() -> bool:
  """Whether ``kernel="auto"`` runs the XLA scan here (inside :func:`xla_only`)."""
  return _XLA_ONLY.get()


@contextlib.contextmanager
def xla_only():
  """Traces inside take the XLA scan for ``kernel="auto"``: no custom calls (:mod:`jrnn.export` serializes)."""
  token = _XLA_ONLY.set(True)
  try:
    yield
  finally:
    _XLA_ONLY.reset(token)


# unroll="auto": steps per lax.scan iteration, per backend; other backends: 1. CPU: unrolling was
# slower (benchmarks/NOTES.md); GPU (an H100): 8 steps made the training step 1.3-2.5x faster.
AUTO_UNROLL = {"cpu": 1, "gpu": 8}


class Options(NamedTuple):
  """How a cell is run over a sequence: fields that change speed, memory or rounding, not the math.

  Attributes:
    reverse: scan from the last step to the first (``hs`` keep their order).
    unroll: how many steps ``lax.scan`` unrolls per loop iteration, or
      ``"auto"``: ``AUTO_UNROLL[backend]`` (1 on CPU, 8 on GPU; measured in
      ``benchmarks/NOTES.md``). :func:`jrnn.Options` values that went through
      a function hold the resolved int.
    scan: ``"sequential"`` (``lax.scan``), ``"associative"``
      (``lax.associative_scan``, for a :class:`jrnn.LinearRecurrence` cell) or
      ``"auto"`` (associative from ``AUTO_MIN_LENGTH[backend]`` steps on, for
      linear cells only).
    projection: ``"hoisted"`` (the input projection of all steps as one product
      before the scan), ``"per_step"`` (inside the scan body) or ``"auto"``
      (``AUTO_PROJECTION[backend]``).
    remat: ``None``, ``"step"`` (checkpoint every step), ``"sqrt"`` (chunks of
      ``round(√T)`` steps) or a positive int chunk length.
    vjp: ``"autodiff"`` (``jax.grad`` through the scan) or ``"fused"`` (the
      hand-written backward pass of :mod:`jrnn._fused`, for a
      :class:`jrnn.AffineRecurrence` cell).
    precision: the precision of every matrix product of the cell (and of the
      head, in the modes), as :func:`jax.default_matmul_precision` sets it for
      the trace: ``None`` (JAX's default, or whatever the surrounding
      ``jax.default_matmul_precision`` context or ``jax_default_matmul_precision``
      config says), a :class:`jax.lax.Precision`, or one of ``"default"`` (=
      ``"bfloat16"``), ``"high"`` (= ``"tensorfloat32"``), ``"highest"`` (=
      ``"float32"``). It matters for float32 on TPU, where the default is one
      bfloat16 pass, and on GPUs with TensorFloat-32; CPUs ignore it
      (``docs/accelerators.md``).
    kernel: what runs the recurrence: ``"xla"`` (the ``lax.scan`` of the
      other options), ``"cudnn"`` (NVIDIA cuDNN's fused LSTM through
      :func:`jax.experimental.rnn.lstm`, on a GPU, for :func:`jrnn.lstm`
      and stacks and bidirectional layers of it, in
      :func:`jrnn.unroll_batch`), ``"cpu"`` (jrnn's compiled CPU kernel,
      :mod:`jrnn._cpu_kernel`, for :func:`jrnn.elman`, :func:`jrnn.gru`,
      :func:`jrnn.lstm` and stacks and bidirectional layers of them) or
      ``"auto"`` (the backend's kernel where it applies and was measured
      faster, ``AUTO_KERNEL``, else XLA). See :func:`jrnn.unroll_batch`.

  ``reverse`` is a direction, the only field that changes what is computed;
  ``precision`` changes how products of float32 are rounded on an
  accelerator (and ``kernel``, which runs them, too); the others change
  speed and memory only. :func:`jrnn.unroll`
  documents each in full.

  Example:
    >>> import jrnn
    >>> jrnn.Options(remat="sqrt", precision="highest")
    Options(reverse=False, unroll='auto', scan='auto', projection='auto', remat='sqrt', vjp='autodiff',
            precision='highest', kernel='auto')
  """

  reverse: bool = False
  unroll: int | str = "auto"
  scan: str = "auto"
  projection: str = "auto"
  remat: Any = None
  vjp: str = "autodiff"
  precision: Any = None
  kernel: str = "auto"


def make(fn_name: str, allowed: tuple[str, ...] = Options._fields, **options: Any) -> Options:
  """An :class:`Options` from keyword arguments, checked; ``allowed`` limits the fields.

  Raises TypeError for a keyword that is not an option (or not one ``fn_name``
  takes), ValueError for a value outside the documented ones.
  """
  unknown = [k for k in options if k not in allowed]
  if unknown:
    raise TypeError(
      f"{fn_name}: unexpected option(s) {', '.join(map(repr, unknown))}; "
      f"the options here are {', '.join(allowed)} (see jrnn.Options)."
    )
  return check(Options(**options), fn_name)


def check(options: Options, fn_name: str) -> Options:
  """``options`` with ``reverse`` a bool and ``unroll`` an int; ValueError for a value outside the documented ones."""
  unroll = options.unroll
  if unroll == "auto":
    unroll = AUTO_UNROLL.get(jax.default_backend(), 1)
  elif not _checks.is_positive_int(unroll):
    raise ValueError(f"{fn_name}: unroll must be 'auto' or a positive int, got {unroll!r}.")
  options = options._replace(unroll=unroll)
  for field, allowed in (("scan", SCANS), ("projection", PROJECTIONS), ("vjp", VJPS), ("kernel", KERNELS)):
    if getattr(options, field) not in allowed:
      raise ValueError(f"{fn_name}: {field} must be one of {allowed}, got {getattr(options, field)!r}.")
  remat = options.remat
  if not (_checks.is_positive_int(remat) or (remat is None or (isinstance(remat, str) and remat in REMATS))):
    raise ValueError(f"{fn_name}: remat must be None, 'step', 'sqrt' or a positive int chunk length, got {remat!r}.")
  if options.vjp == "fused" and remat is not None:
    raise ValueError(
      f"{fn_name}: vjp='fused' stores its own residuals and cannot be combined with "
      f"remat={remat!r}; use vjp='autodiff' with remat."
    )
  check_precision(options.precision, fn_name)
  return options._replace(reverse=bool(options.reverse))


def check_precision(precision: Any, fn_name: str) -> Any:
  """``precision`` if it is None, a ``jax.lax.Precision`` or in :data:`PRECISIONS`; else TypeError or ValueError."""
  if precision is None or isinstance(precision, jax.lax.Precision):
    return precision
  expected = f"None, a jax.lax.Precision or one of {PRECISIONS}"
  if not isinstance(precision, str):
    raise TypeError(f"{fn_name}: precision must be {expected}, got {precision!r} of type {type(precision).__name__}.")
  if precision not in PRECISIONS:
    raise ValueError(f"{fn_name}: precision must be {expected}, got {precision!r}.")
  return precision


def matmul_precision(precision: Any) -> contextlib.AbstractContextManager:
  """The context that traces every matrix product at ``precision`` (a checked value); ``None``: no change.

  ``jax.default_matmul_precision`` sets the ``precision`` of every
  ``dot_general`` traced inside it that does not name its own, and JAX's
  transposes keep it, so ``jax.grad``'s products match the forward's. A
  function that JAX traces later, outside the caller's ``with`` (a
  ``jax.custom_vjp``'s fwd and bwd), must enter it again (:mod:`jrnn._fused`).
  """
  if precision is None:
    return contextlib.nullcontext()
  if isinstance(precision, jax.lax.Precision):
    precision = precision.name.lower()
  return jax.default_matmul_precision(precision)


def projection(options: Options) -> str:
  """``"hoisted"`` or ``"per_step"``: what ``options.projection`` means on the default backend."""
  if options.projection == "auto":
    return AUTO_PROJECTION.get(jax.default_backend(), "hoisted")
  return options.projection


def associative(options: Options, length: int) -> bool:
  """Whether ``scan="auto"``/``"associative"`` picks the parallel scan for a linear cell of ``length`` steps."""
  if options.scan != "auto":
    return options.scan == "associative"
  threshold = AUTO_MIN_LENGTH.get(jax.default_backend())
  return threshold is not None and length >= threshold
