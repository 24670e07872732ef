"""How a sequence is run: the public :class:`Options` value and the per-backend defaults.

Every function that runs a sequence (:func:`jrnn.unroll`,
:func:`jrnn.unroll_batch`, the modes, :class:`jrnn.nnx.RNN`, the diagnostics)
takes these options as keyword arguments and passes them on unchanged, so a
wrapped cell (:func:`jrnn.stack`, :func:`jrnn.bidirectional`) receives them too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from jrnn import _checks

SCANS = ("sequential", "associative", "auto")
PROJECTIONS = ("hoisted", "per_step", "auto")
REMATS = (None, "step", "sqrt")
VJPS = ("autodiff", "fused")

# projection="auto" per backend (jax.default_backend()); other backends: "hoisted".
# CPU measured (benchmarks/NOTES.md); GPU/TPU follow cuDNN and are not yet measured in jrnn.
AUTO_PROJECTION = {"cpu": "per_step", "gpu": "hoisted", "tpu": "hoisted"}

# scan="auto" uses the associative scan for linear cells from this length on, per
# backend; None: never. CPU measured (benchmarks/NOTES.md); GPU/TPU not yet.
AUTO_MIN_LENGTH = {"cpu": None, "gpu": 256, "tpu": 256}


class Options(NamedTuple):
  """How a cell is run over a sequence; every field changes speed or memory, never the result.

  Attributes:
    reverse: scan from the last step to the first (``hs`` keep their order).
    unroll: how many steps ``lax.scan`` unrolls per loop iteration.
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

  ``reverse`` is a direction, the only field that changes what is computed;
  the others are how. :func:`jrnn.unroll` documents each in full.

  Example:
    >>> import jrnn
    >>> jrnn.Options(remat="sqrt")
    Options(reverse=False, unroll=1, scan='auto', projection='auto', remat='sqrt', vjp='autodiff')
  """

  reverse: bool = False
  unroll: int = 1
  scan: str = "auto"
  projection: str = "auto"
  remat: Any = None
  vjp: str = "autodiff"


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
  """``options`` with ``reverse`` as a bool; ValueError for a value outside its documented ones."""
  _checks.positive_int(options.unroll, "unroll", fn_name)
  for field, allowed in (("scan", SCANS), ("projection", PROJECTIONS), ("vjp", VJPS)):
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
  return options._replace(reverse=bool(options.reverse))


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
