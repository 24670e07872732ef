r"""``kernel="cpu"``: the time loop of elman, gru and lstm layers as one compiled call per layer and pass.

On a CPU, XLA pays a fixed cost per operation inside a ``while`` loop, and a
training step's loop body has dozens of them: at small hidden sizes that
overhead, not arithmetic, sets the time (``benchmarks/NOTES.md``). This
kernel runs the whole recurrence of one layer, forward or backward, as one
XLA custom call (:func:`jax.ffi.ffi_call` into ``jrnn/csrc/recurrence.cc``),
the schedule of cuDNN's and oneDNN's fused RNNs (Appleyard et al. 2016). A
step is split as in :mod:`jrnn._fused`:

.. math::

   p_t = x_t W_x + b, \qquad q_t = h_{t-1} W_h \,(+\, b_{hn}), \qquad
   (c_t, h_t) = \mathrm{update}(c_{t-1}, p_t, q_t)

The forward call walks ``t = 1 … T`` (``T … 1`` with ``reverse``); per
step it computes ``p_t`` and ``q_t`` for the whole batch and the gate
arithmetic in one pass over ``[B, G·H]`` (G = 1, 3, 4 for Elman, GRU, LSTM;
gates in the order of :func:`jrnn.gru` (r, z, n) and :func:`jrnn.lstm`
(i, f, g, o)). Under differentiation it stores the activated gates,
``\tanh c_t``, ``c_{t-1}`` (LSTM), ``q_n`` (GRU) and the carry ``h_{t-1}``
of every step. In float32 the activations are branch-free polynomial forms
of ``exp`` and ``tanh`` (within a few ulps), compiled for AVX-512, AVX2 and
the baseline x86-64 and picked by the CPU at load time, so that the gate
pass vectorizes as XLA's own elementwise code does; float64 uses the C
library's.

**The per-step products (float32 on AVX-512).** ``W_x``, ``W_h`` and ``b``
are packed once per call (a transpose in XLA, :func:`jrnn._cpu_layer.pack`) into panels of
32 columns, each a contiguous ``[K, 32]`` block, and the kernel's own GEMM
multiplies ``[B, K]`` rows by a panel in 8 × 32 register tiles (two AVX-512
registers per row, the bias as the tiles' start): 210 GFLOP/s on one core at
``K = 256``, where OpenBLAS, which repacks its operand on every call, reached
85. ``p_t = x_t W_x + b`` is computed step by step too, so no ``[B, T, G·H]``
projection is ever written: first-touch page faults on those fresh buffers
cost more than the kernel itself (``benchmarks/NOTES.md``). The hidden units
are split in ranges of whole panels between the calling thread and
``THREADS - 1`` workers of the kernel's own team (from 128 units per
thread); each thread computes its units' columns of every gate block and
their update, the carry is double-buffered, and the threads meet at one
spinning barrier per step (two per backward step). Workers sleep between
calls; a call that finds the team busy (another call running concurrently)
runs alone. float64, and CPUs without AVX-512, use OpenBLAS on one thread
with ``p`` as one GEMM in XLA before the call.

The backward call walks the steps the other way and emits ``\bar p_t``;
its equations, the weight gradients in XLA and the ``jax.custom_vjp`` are
in :mod:`jrnn._cpu_layer`.

Padding is right padding: row ``b`` has ``lengths[b]`` real steps; a step
``t ≥ lengths[b]`` leaves the carry unchanged and outputs zeros, as jrnn's
masked steps do, so its gradient passes the carry's through. A mask that is
right padding (each row some True steps then False ones; a row of no True
step is a length of 0) becomes ``lengths = mask.sum(1)``.

**The build.** ``setup.py`` compiles ``jrnn/csrc/recurrence.cc`` into
``jrnn/_recurrence*.so`` at install (``pip install .`` or ``-e .``), against
the XLA FFI headers of ``jaxlib`` and the OpenBLAS of the
``scipy-openblas32`` wheel (its symbols carry the prefix ``scipy_``), both
build requirements. The extension is optional: where it does not build (no
C++ compiler) jrnn installs without it and :func:`cpu_kernel_available` is
False. The library is a plain shared object loaded with :mod:`ctypes` (the
handlers go to :func:`jax.ffi.register_ffi_target` as capsules), after
``import scipy_openblas32`` has loaded ``libscipy_openblas.so`` globally, so
the extension's link to it resolves without an rpath. OpenBLAS runs on
``BLAS_THREADS`` threads (1: on two cores a second BLAS thread fought XLA's
own pool and lost, ``benchmarks/NOTES.md``); the packed GEMM on ``THREADS``.

References:
  Appleyard, Kocisky & Blunsom, "Optimizing performance of recurrent neural
  networks on GPUs", arXiv:1604.01946 (2016).
  oneDNN, "RNN" primitive (``dnnl::lstm_forward``, ``gru_forward`` with
  ``lbr_gru``): the fused CPU RNN PyTorch uses, for comparison.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.machinery
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import _bidirectional
from jrnn import _cell
from jrnn import _cpu_layer
from jrnn import _elman
from jrnn import _gru
from jrnn import _lstm

ELMAN, GRU, LSTM = _cpu_layer.ELMAN, _cpu_layer.GRU, _cpu_layer.LSTM
_CELLS = {
  "jrnn.elman": (ELMAN, _elman.ElmanParams),
  "jrnn.gru": (GRU, _gru.GRUParams),
  "jrnn.lstm": (LSTM, _lstm.LSTMParams),
}

# OpenBLAS threads for the per-step GEMMs of float64 and of CPUs without AVX-512 (benchmarks/NOTES.md: 1 on the
# two-core machine measured).
BLAS_THREADS = 1
# Threads of a float32 call on AVX-512 (the packed GEMM): the calling thread and THREADS - 1 of the kernel's own
# workers, each running a range of the hidden units (benchmarks/NOTES.md: measured on two cores).
THREADS = min(2, os.cpu_count() or 1)

_library: list[ctypes.CDLL] = []  # the loaded extension, kept alive


@functools.cache
def _load() -> str | None:
  """Loads the extension and registers its handlers once: None, or why it cannot (a sentence)."""
  ffi = getattr(jax, "ffi", None)
  if ffi is None or not hasattr(ffi, "ffi_call"):
    return f"JAX {jax.__version__} has no jax.ffi"
  here = pathlib.Path(__file__).parent
  found = [here / f"_recurrence{s}" for s in importlib.machinery.EXTENSION_SUFFIXES]
  path = next((p for p in found if p.exists()), None)
  if path is None:
    return "the extension jrnn/_recurrence was not built when jrnn was installed (it needs a C++ compiler)"
  try:
    importlib.import_module("scipy_openblas32")  # loads libscipy_openblas.so globally, which the extension links to
    lib = ctypes.CDLL(str(path))
  except (ImportError, OSError) as error:
    return f"the extension {path.name} did not load: {error}"
  ffi.register_ffi_target(_cpu_layer.FORWARD, ffi.pycapsule(lib.JrnnRecurrenceForward), platform="cpu")
  ffi.register_ffi_target(_cpu_layer.BACKWARD, ffi.pycapsule(lib.JrnnRecurrenceBackward), platform="cpu")
  lib.JrnnSetBlasThreads(BLAS_THREADS)
  lib.JrnnSetThreads(THREADS)
  _library.append(lib)
  return None


def available() -> bool:
  r"""Whether jrnn's fused CPU recurrence kernel was built at install and loads here.

  ``kernel="cpu"`` (:func:`jrnn.unroll_batch`) needs it, and a CPU as JAX's
  default backend. It runs the time loop of :func:`jrnn.elman` (tanh),
  :func:`jrnn.gru` and :func:`jrnn.lstm` layers as one compiled call per
  layer and pass, forward and backward, with the split

  .. math::

     p_t = x_t W_x + b, \qquad q_t = h_{t-1} W_h, \qquad (c_t, h_t) = \mathrm{update}(c_{t-1}, p_t, q_t)

  of :mod:`jrnn._cpu_kernel` (the weight gradients are single GEMMs in XLA;
  the kernel computes ``p_t``, ``q_t`` and the update step by step, in
  float32 on AVX-512 with its own packed GEMM on two threads), the schedule
  of Appleyard et al. (2016). ``kernel="auto"`` takes it on a CPU wherever it
  applies. It is built when jrnn is installed from source with a C++
  compiler present; without one, jrnn runs on the XLA scan and this is
  False.

  Returns:
    True if the extension loaded and its handlers are registered with XLA.

  References:
    Appleyard, Kocisky & Blunsom, "Optimizing performance of recurrent neural
    networks on GPUs", arXiv:1604.01946 (2016).

  Example:
    >>> import jrnn
    >>> isinstance(jrnn.cpu_kernel_available(), bool)
    True
  """
  return _load() is None


def why_unavailable() -> str | None:
  """Why the extension is not loaded (a sentence), or None when it is."""
  return _load()


def _is_tanh_elman(cell) -> bool:
  """Whether an elman cell's activation is tanh (read from its update's closure, the ``phi`` of ``jrnn.elman``)."""
  update = cell.kind.update
  names: tuple[str, ...] = getattr(getattr(update, "__code__", None), "co_freevars", ())
  cells: tuple[Any, ...] = getattr(update, "__closure__", None) or ()
  closure = {name: c.cell_contents for name, c in zip(names, cells)}
  return closure.get("phi") is jnp.tanh


def _support(cell, params) -> str | None:
  """None if the kernel runs ``cell`` with ``params`` (stacks, bidirectional layers: each layer), else why not."""
  if cell.name in _CELLS and isinstance(cell.kind, _cell.AffineRecurrence):
    code, params_type = _CELLS[cell.name]
    if not isinstance(params, params_type):
      return f"{cell.name} with params of type {type(params).__name__}, not {params_type.__name__}"
    if code == ELMAN and not _is_tanh_elman(cell):
      return "the CPU kernel runs jrnn.elman with activation='tanh' only"
    return None
  if isinstance(cell.kind, _cell.SequenceLayer) and cell.name == "jrnn.stack" and cell.kind.layers:
    for i, (c, p) in enumerate(zip(cell.kind.layers, params)):
      why = _support(c, p)
      if why is not None:
        return f"layer {i} of the stack: {why}"
    return None
  if isinstance(cell.kind, _cell.SequenceLayer) and cell.name == "jrnn.bidirectional":
    for direction, c in zip(_bidirectional.BidirectionalParams._fields, cell.kind.layers):
      why = _support(c, getattr(params, direction))
      if why is not None:
        return f"the {direction} direction of the bidirectional layer: {why}"
    return None
  return (
    "the CPU kernel runs jrnn.elman (tanh), jrnn.gru and jrnn.lstm, and jrnn.stack and jrnn.bidirectional "
    f"compositions of them, not {cell.name}"
  )


def unsupported(cell, params, xs, mask, reset, options) -> str | None:
  """Why the CPU kernel cannot run this call (a sentence), or None if it can (a traced mask's values aside)."""
  why = _load()
  if why is not None:
    return f"kernel='cpu' needs jrnn's compiled CPU kernel, which is not available: {why}"
  if jax.default_backend() != "cpu":
    return f"kernel='cpu' runs on a CPU; JAX's default backend is {jax.default_backend()!r}"
  why = _support(cell, params)
  if why is not None:
    return why
  dtypes = {jnp.result_type(x) for x in [xs, *jax.tree_util.tree_leaves(params)]}
  if len(dtypes) != 1 or not dtypes <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)}:
    return f"the CPU kernel takes float32 or float64 params and inputs of one dtype, got {sorted(map(str, dtypes))}"
  for what, ok in (
    ("a reset", reset is None),
    (f"remat={options.remat!r}", options.remat is None),
    (f"scan={options.scan!r}", options.scan != "associative"),
  ):
    if not ok:
      return f"{what} runs on the XLA scan only"
  if options.precision is not None and jax.lax.Precision(options.precision) == jax.lax.Precision.DEFAULT:
    return f"precision={options.precision!r} (one bfloat16 pass) is not implemented by the CPU kernel"
  m = _concrete(mask)
  if m is not None and not right_padded_rows(m).all():
    return "the mask must be right padding (each row some True steps, then False ones)"
  return None


def _concrete(x):
  """``x`` as a NumPy array, or None if it is None or traced."""
  try:
    return None if x is None else np.asarray(x)
  except jax.errors.TracerArrayConversionError:
    return None


def right_padded_rows(mask):
  """Per row of ``mask [B, T]``: True steps then False ones (none True is a length of 0); NumPy or JAX."""
  lengths = mask.sum(axis=1)
  steps = (jnp if isinstance(mask, jax.Array) else np).arange(mask.shape[1])
  return (mask == (steps[None, :] < lengths[:, None])).all(axis=1)


def batch(cell, params, carry, xs, mask, options, xla_run, *, required: bool) -> tuple[Any, jax.Array]:
  """``unroll_batch`` on the CPU kernel; ``xla_run()`` is the XLA path for masks it cannot take.

  A traced ``mask`` is checked on the device, as :func:`jrnn._cudnn.batch`
  does: with ``required`` (``kernel="cpu"``) the rows that are not right
  padding come back as NaN; else (``"auto"``) a ``lax.cond`` runs the XLA
  path for the whole batch when any row is not.
  """
  if mask is None or _concrete(mask) is not None:
    return run(cell, params, carry, xs, mask, options.reverse, options.precision)
  if required:
    good = right_padded_rows(mask)
    carry, hs = run(cell, params, carry, xs, mask, options.reverse, options.precision)

    def poison(x):
      return jnp.where(good.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.nan)

    return jax.tree_util.tree_map(poison, carry), poison(hs)
  kernel = lambda: run(cell, params, carry, xs, mask, options.reverse, options.precision)
  return jax.lax.cond(right_padded_rows(mask).all(), kernel, xla_run)


def run(cell, params, carry, xs, mask, reverse, precision=None) -> tuple[Any, jax.Array]:
  """The checked call on the kernel: ``xs [B, T, I]``, ``mask [B, T]`` right padding or None."""
  B, T, _ = xs.shape
  lengths = jnp.full((B,), T, jnp.int32) if mask is None else mask.sum(axis=1, dtype=jnp.int32)
  return _run(cell, params, carry, xs, lengths, reverse, precision)


def _run(cell, params, carry, xs, lengths, reverse, precision):
  if cell.name in _CELLS:
    layer = _cpu_layer.layer(_CELLS[cell.name][0], bool(reverse), precision, packed())
    return layer(params, carry, xs, lengths)
  if cell.name == "jrnn.stack":
    finals = []
    for c, p, c0 in zip(cell.kind.layers, params, carry):
      final, xs = _run(c, p, c0, xs, lengths, reverse, precision)
      finals.append(final)
    return tuple(finals), xs
  forward, backward = cell.kind.layers
  cf, hf = _run(forward, params.forward, carry.forward, xs, lengths, reverse, precision)
  cb, hb = _run(backward, params.backward, carry.backward, xs, lengths, not reverse, precision)
  return _bidirectional.BidirectionalCarry(cf, cb), jnp.concatenate([hf, hb], axis=-1)


def packed() -> bool:
  """Whether float32 calls run the kernel's own packed GEMM (AVX-512) on THREADS threads, not OpenBLAS on one."""
  return _load() is None and bool(_library[0].JrnnPackedSupported())
