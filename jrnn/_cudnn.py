"""``kernel="cudnn"``: the LSTM layers of :func:`jrnn.unroll_batch` as NVIDIA cuDNN's fused RNN.

cuDNN runs a whole LSTM layer (every layer of a stack, both directions) as
one library call per pass: the input products of all steps as one GEMM, the
recurrence with the gate arithmetic fused, and in the backward pass the weight
gradients as GEMMs over all steps (Appleyard et al. 2016). JAX exposes it as
:func:`jax.experimental.rnn.lstm`, a ``jax.custom_vjp`` whose forward and
backward passes are cuDNN's ``cudnnRNNForward`` and ``cudnnRNNBackwardData/
Weights``.

What maps onto it: :func:`jrnn.lstm`, and :func:`jrnn.stack` /
:func:`jrnn.bidirectional` compositions of it, float32, run with no
``reset``, ``remat`` or ``vjp="fused"``, and a mask that is right padding
(each row ``True`` then ``False``, at least one ``True``: cuDNN takes
sequence lengths, and fails on a length of 0, jax-ml/jax#17966). jrnn's
layout maps onto cuDNN's without loss:

.. math::

   W_{ih} = W_x^\\top, \\quad W_{hh} = W_h^\\top, \\quad b_{ih} = b, \\quad b_{hh} = 0

in the gate order i, f, g, o of both. cuDNN's padded steps give zero outputs
and carry the state of the last real step, as jrnn's masked steps do; its
reverse direction starts at each row's last real step, as
:func:`jrnn.bidirectional`'s does. ``reverse=True`` reverses each row's real
steps before and after the call.

``lstm_call`` is the function called in place of
:func:`jax.experimental.rnn.lstm`; the tests replace it by
:func:`reference_lstm` (the same signature, :func:`jax.experimental.rnn.lstm_ref`
on the unpacked weights) to run this module on a CPU.

References:
  Appleyard, Kocisky & Blunsom, "Optimizing performance of recurrent neural
  networks on GPUs", arXiv:1604.01946 (2016).
  NVIDIA cuDNN, ``cudnnRNNForward`` (the LSTM mode, ``CUDNN_LSTM``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import rnn

from jrnn import _bidirectional
from jrnn import _cell
from jrnn import _cpu_kernel
from jrnn import _lstm
from jrnn import _options

lstm_call: Callable[..., tuple[jax.Array, jax.Array, jax.Array]] = rnn.lstm  # pyright: ignore[reportAssignmentType]


class Layer(NamedTuple):
  """One layer of a plan: its hidden size, direction count (1 or 2) and params per direction."""

  hidden: int
  directions: int
  params: tuple


def available() -> bool:
  """Whether cuDNN's fused LSTM can run here: JAX's default backend is a GPU with cuDNN's RNN kernels.

  ``kernel="auto"`` (:func:`jrnn.unroll_batch`) uses it only where this is True.

  Example:
    >>> import jax, jrnn
    >>> jrnn.cudnn_available() == (jax.default_backend() == "gpu")
    True
  """
  return jax.default_backend() == "gpu" and getattr(rnn, "gpu_rnn", None) is not None


def plan(cell: _cell.Cell, params: Any) -> tuple[Layer, ...] | str:
  """The cuDNN layers that run ``cell`` with ``params``, or why there are none (a sentence)."""
  if isinstance(cell.kind, _cell.SequenceLayer) and cell.name == "jrnn.stack" and cell.kind.layers:
    layers = []
    for i, (c, p) in enumerate(zip(cell.kind.layers, params)):
      layer = _layer(c, p)
      if isinstance(layer, str):
        return f"layer {i} of the stack: {layer}"
      layers.append(layer)
    return tuple(layers)
  layer = _layer(cell, params)
  return layer if isinstance(layer, str) else (layer,)


def _layer(cell, params):
  if _is_lstm(cell, params):
    return Layer(cell.hidden_size, 1, (params,))
  if cell.name == "jrnn.bidirectional" and isinstance(cell.kind, _cell.SequenceLayer):
    (fwd, bwd), p = cell.kind.layers, params
    if _is_lstm(fwd, p.forward) and _is_lstm(bwd, p.backward) and fwd.hidden_size == bwd.hidden_size:
      return Layer(fwd.hidden_size, 2, (p.forward, p.backward))
    return "a bidirectional layer runs on cuDNN only with jrnn.lstm of one hidden size in both directions"
  return f"cuDNN runs jrnn.lstm and stacks and bidirectional layers of it, not {cell.name}"


def _is_lstm(cell, params):
  return cell.name == "jrnn.lstm" and isinstance(params, _lstm.LSTMParams)


def unsupported(cell, params, xs, mask, reset, options) -> str | None:
  """Why cuDNN cannot run this call (a sentence), or None if it can (the mask's values aside)."""
  if not available():
    return f"kernel='cudnn' needs a GPU with cuDNN; JAX's default backend is {jax.default_backend()!r}"
  layers = plan(cell, params)
  if isinstance(layers, str):
    return layers
  leaves = [xs, *jax.tree_util.tree_leaves([layer.params for layer in layers])]
  if any(jnp.result_type(x) != jnp.float32 for x in leaves):
    return "cuDNN's LSTM in JAX takes float32 params and inputs only"
  for what, ok in (
    ("a reset", reset is None),
    (f"remat={options.remat!r}", options.remat is None),
    (f"vjp={options.vjp!r}", options.vjp == "autodiff"),
  ):
    if not ok:
      return f"{what} runs on the XLA scan only"
  if _precision(options.precision) == jax.lax.Precision.DEFAULT:
    return f"precision={options.precision!r} (one bfloat16 pass) is not implemented for cuDNN's LSTM in JAX"
  m = _concrete(mask)
  if m is not None and not _is_right_padding(m):
    return "the mask must be right padding (each row True then False, at least one True)"
  return None


def _concrete(x):
  """``x`` as a NumPy array, or None if it is None or traced (its values are known only on the device)."""
  try:
    return None if x is None else np.asarray(x)
  except jax.errors.TracerArrayConversionError:
    return None


def _precision(precision):
  """``precision`` (None, a checked name or a ``jax.lax.Precision``) as a ``jax.lax.Precision`` or None."""
  if precision is None or isinstance(precision, jax.lax.Precision):
    return precision
  return jax.lax.Precision(precision)


def _right_padded_rows(mask):
  """Per row of ``mask [B, T]``: some True steps then False ones, at least one True (NumPy or JAX)."""
  lengths = mask.sum(axis=1)
  steps = (jnp if isinstance(mask, jax.Array) else np).arange(mask.shape[1])
  return (mask == (steps[None, :] < lengths[:, None])).all(axis=1) & (lengths > 0)


def _is_right_padding(mask):
  """Whether every row of ``mask`` is right padding (:func:`_right_padded_rows`)."""
  return _right_padded_rows(mask).all()


def batch(cell, params, carry, xs, mask, options, xla_run, *, required: bool) -> tuple[Any, jax.Array]:
  """``unroll_batch`` on cuDNN; ``xla_run()`` is the XLA path for masks cuDNN cannot take.

  A traced ``mask`` is checked on the device: with ``required`` (``kernel="cudnn"``),
  rows that are not right padding come back as NaN; else (``"auto"``) a
  ``lax.cond`` runs the XLA path for the whole batch when any row is not.
  """
  if mask is None or _concrete(mask) is not None:
    return _run(cell, params, carry, xs, mask, options)
  if required:
    good = _right_padded_rows(mask)
    safe = mask | ~good[:, None]  # a full row for the bad ones, so that cuDNN never sees a length of 0
    carry, hs = _run(cell, params, carry, xs, safe, options)

    def poison(x):
      return jnp.where(good.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.nan)

    return jax.tree_util.tree_map(poison, carry), poison(hs)
  return jax.lax.cond(_is_right_padding(mask), lambda: _run(cell, params, carry, xs, mask, options), xla_run)


def _run(cell, params, carry, xs, mask, options):
  layers = plan(cell, params)
  assert not isinstance(layers, str)
  B, T, _ = xs.shape
  lengths = jnp.full((B,), T, jnp.int32) if mask is None else mask.sum(axis=1, dtype=jnp.int32)
  precision = _precision(options.precision)
  carries = carry if cell.name == "jrnn.stack" else (carry,)
  if options.reverse:
    xs = _flip(xs, lengths)
  finals = []
  for layer, c in zip(layers, carries):
    xs, final = _call_layer(layer, c, xs, lengths, precision)
    finals.append(final)
  hs = _flip(xs, lengths) if options.reverse else xs
  return (tuple(finals) if cell.name == "jrnn.stack" else finals[0]), hs


def _call_layer(layer, carry, xs, lengths, precision):
  """One cuDNN call for one layer: ``(ys [B, T, D·H], final carry)`` in jrnn's carry types."""
  per_direction = (carry,) if layer.directions == 1 else (carry.forward, carry.backward)
  h0 = jnp.stack([c.h for c in per_direction])
  c0 = jnp.stack([c.c for c in per_direction])
  weights = pack(layer.params)
  ys, hn, cn = lstm_call(
    xs,
    h0,
    c0,
    weights,
    seq_lengths=lengths,
    input_size=xs.shape[-1],
    hidden_size=layer.hidden,
    num_layers=1,
    dropout=0.0,
    bidirectional=layer.directions == 2,
    precision=precision,
  )
  finals = [_lstm.LSTMCarry(hn[d], cn[d]) for d in range(layer.directions)]
  final = finals[0] if layer.directions == 1 else _bidirectional.BidirectionalCarry(*finals)
  return ys, final


def pack(params: tuple) -> jax.Array:
  """cuDNN's flat weight vector for one layer, from :class:`jrnn.LSTMParams` per direction.

  The layout of :func:`jax.experimental.rnn.unpack_lstm_weights`: every
  direction's ``W_ih [4H, I]`` then ``W_hh [4H, H]``, then every direction's
  ``b_ih`` then ``b_hh [4H]``; here ``W_ih = wx.T``, ``W_hh = wh.T``,
  ``b_ih = b`` and ``b_hh = 0`` (jrnn keeps one bias, their sum).
  """
  matrices = [m for p in params for m in (p.wx.T.ravel(), p.wh.T.ravel())]
  biases = [v for p in params for v in (p.b, jnp.zeros_like(p.b))]
  return jnp.concatenate(matrices + biases)


def _flip(xs, lengths):
  """Each row's first ``lengths[b]`` steps in reverse order, the padding after them left in place."""
  steps = jnp.arange(xs.shape[1])[None, :]
  index = jnp.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
  return jnp.take_along_axis(xs, index[:, :, None], axis=1)


def reference_lstm(
  x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional, precision=None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """:func:`jax.experimental.rnn.lstm`'s signature, computed by :func:`jax.experimental.rnn.lstm_ref` in XLA."""
  del precision
  unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
  return rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional)


def which_kernel(
  cell: _cell.Cell, params: Any, xs: jax.typing.ArrayLike, *, mask: Any = None, reset: Any = None, **options: Any
) -> str:
  """What runs ``jrnn.unroll_batch(cell, params, xs, mask=mask, reset=reset, **options)``: a kernel's name.

  ``kernel="auto"`` (see :func:`jrnn.unroll_batch`) takes the backend's
  fused kernel (cuDNN's LSTM on a GPU, jrnn's compiled kernel on a CPU)
  where the cell, dtype, options and mask allow it on a backend where it
  was measured faster (``jrnn._options.AUTO_KERNEL``), the XLA scan
  otherwise. A traced ``mask`` (inside ``jit``) is judged on the device at
  run time; this names the kernel for it when everything else allows it.

  Args:
    cell, params, xs, mask, reset: as for :func:`jrnn.unroll_batch` (``xs``
      and ``mask`` may be ``jax.ShapeDtypeStruct``-like arrays).
    **options: the fields of :class:`jrnn.Options`.

  Returns:
    ``"cudnn"``, ``"cpu"`` or ``"xla"``.

  Raises:
    ValueError: with ``kernel="cudnn"`` or ``"cpu"`` where that kernel
      cannot run the call (the sentence :func:`jrnn.unroll_batch` would raise).

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.stack([jrnn.lstm(8), jrnn.bidirectional(jrnn.lstm(8))])
    >>> params = cell.init(jax.random.key(0), 4)
    >>> jrnn.which_kernel(cell, params, jnp.ones((2, 5, 4)), kernel="xla")
    'xla'
    >>> xs = jnp.ones((2, 5, 4))
    >>> jrnn.which_kernel(cell, params, xs, kernel="cpu") if jrnn.cpu_kernel_available() else "cpu"
    'cpu'
  """
  fn_name = "jrnn.which_kernel"
  return choose(cell, params, jnp.asarray(xs), mask, reset, _options.make(fn_name, **options), fn_name)


def choose(cell, params, xs, mask, reset, options, fn_name) -> str:
  """``"cudnn"``, ``"cpu"`` or ``"xla"`` for ``options.kernel``; ValueError for a named kernel that cannot run."""
  if options.kernel == "xla":
    return "xla"
  why_not = {"cudnn": unsupported, "cpu": _cpu_kernel.unsupported}
  if options.kernel in why_not:
    why = why_not[options.kernel](cell, params, xs, mask, reset, options)
    if why is not None:
      raise ValueError(f"{fn_name}: {why}; use kernel='auto' or 'xla' (the XLA scan).")
    return options.kernel
  preferred = None if _options.auto_is_xla() else _options.AUTO_KERNEL.get(jax.default_backend())
  if (
    preferred in why_not
    and _scan_defaults(options)
    and why_not[preferred](cell, params, xs, mask, reset, options) is None
  ):
    return preferred
  return "xla"


def _scan_defaults(options) -> bool:
  """Whether the options a kernel ignores (unroll, projection, vjp) are left at their defaults.

  ``"auto"`` honours an option of the XLA scan that the caller set: it runs the scan with it.
  """
  return (
    options.unroll == _options.AUTO_UNROLL.get(jax.default_backend(), 1)
    and options.projection == "auto"
    and options.vjp == "autodiff"
  )
