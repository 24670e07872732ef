"""Ship a trained model: :mod:`jax.export` to serialized StableHLO, which runs without jrnn.

A model's forward pass or decode loop is a pure function of arrays once its
params are fixed; :func:`export` lowers it, params baked in as constants,
to StableHLO with a **symbolic batch dimension**, :func:`save` writes the
serialized bytes, and anyone with JAX alone loads and calls them::

  # where jrnn is (after training)
  exported = jrnn.export.export(lambda src, mask: decode(params, src, mask), src, mask)
  jrnn.export.save(exported, "decode.jax")

  # anywhere with jax (no jrnn)
  from jax import export
  with open("decode.jax", "rb") as f:
    decode = export.deserialize(bytearray(f.read()))
  tokens = decode.call(src, mask)        # any batch size

**Pytrees.** A module that another process loads cannot name jrnn's
classes, so the results are returned as plain containers: a NamedTuple
(:class:`jrnn.LSTMCarry`, :class:`jrnn.BeamResult`, ...) becomes a tuple of
its fields in order; tuples, lists and dicts stay. The arguments must be
arrays or plain containers of arrays.

**Shapes.** Every array argument's leading dimension becomes the one
symbolic dimension ``b`` (``batch="b"``; the arguments must agree on it);
every other dimension is fixed at the example's size. The outputs' leading
dimensions are ``b`` wherever the function maps rows to rows. A call with
another trailing shape or dtype is refused by the loaded module's shape
checks. ``exported.in_avals`` and ``out_avals`` list the shapes, e.g.
``ShapedArray(int32[b,29])``. With ``batch=None`` every shape is fixed.

The exported function runs on the platforms it was lowered for (default:
the current backend; ``platforms=("cpu", "cuda")`` lowers for both, on any
machine). :func:`jax.export.export` refuses custom calls outside JAX's list
of targets with stable serialization, cuDNN's RNN and jrnn's CPU kernel
among them: ``kernel="auto"`` runs the XLA scan while :func:`export`
traces, and a model that names ``kernel="cudnn"`` or ``"cpu"`` must name
``kernel="xla"`` instead.

References:
  JAX, "Exporting and serializing staged-out computations"
  (https://docs.jax.dev/en/latest/export/export.html); the StableHLO
  compatibility guarantees (https://openxla.org/stablehlo/compatibility).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax import export as jax_export

from jrnn import _options

__all__ = ("export", "load", "save", "shapes")


def shapes(*args: Any, batch: str | None = "b") -> tuple[Any, ...]:
  """``args`` (pytrees of arrays) as :class:`jax.ShapeDtypeStruct` s, each leading dimension symbolic.

  Args:
    *args: example arguments (arrays, or anything with ``shape`` and ``dtype``).
    batch: the name of the symbolic batch dimension, or None for fixed shapes.

  Raises:
    ValueError: for a scalar leaf when ``batch`` is given (it has no batch
      dimension to make symbolic).
  """
  if batch is None:
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), args)
  (b,) = jax_export.symbolic_shape(batch)

  def spec(a):
    shape = tuple(np.shape(a))
    if not shape:
      raise ValueError(
        f"jrnn.export: every argument needs a leading batch dimension with batch={batch!r}, got a scalar; "
        "close over it instead, or pass batch=None."
      )
    return jax.ShapeDtypeStruct((b, *shape[1:]), a.dtype)

  return jax.tree_util.tree_map(spec, args)


def export(
  fn: Callable[..., Any], *args: Any, batch: str | None = "b", platforms: Sequence[str] | None = None
) -> jax_export.Exported:
  """``fn`` lowered to StableHLO for arguments shaped like ``args``, with a symbolic batch dimension.

  ``fn`` closes over what is fixed (the params, a beam width); its arguments
  are the per-call inputs, batch first. Example:

  >>> import jax, jax.numpy as jnp, jrnn
  >>> cell = jrnn.gru(8)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> forward = lambda xs: jrnn.unroll_batch(cell, params, xs)[1]
  >>> exported = jrnn.export.export(forward, jnp.ones((2, 5, 3)))
  >>> exported.in_avals
  (ShapedArray(float32[b,5,3]),)
  >>> xs = jax.random.normal(jax.random.key(1), (4, 5, 3))  # another batch size
  >>> bool(jnp.allclose(exported.call(xs), forward(xs), atol=1e-6))
  True

  Args:
    fn: the function to export (not jitted; it is jitted here).
    *args: example arguments, which fix every shape but the batch's.
    batch: the symbolic batch dimension's name; None fixes the batch size too.
    platforms: the platforms to lower for (default: the current backend's).

  Returns:
    A :class:`jax.export.Exported`: ``.call(*args)`` runs it, ``.serialize()``
    gives its bytes (:func:`save` writes them).
  """
  if not callable(fn):
    raise TypeError(f"jrnn.export: fn must be callable, got {type(fn).__name__}.")
  # kernel="auto" takes the XLA scan here: jrnn's CPU kernel is a custom call. JAX's trace caches do not know
  # that switch, so they are cleared on the way in (a jitted function traced earlier would bring the kernel)
  # and on the way out (the scan's traces made here would otherwise serve later calls).
  with _options.xla_only():
    jax.clear_caches()
    try:
      return jax_export.export(jax.jit(lambda *a: _plain(fn(*a))), platforms=platforms)(*shapes(*args, batch=batch))
    finally:
      jax.clear_caches()


def _plain(tree: Any) -> Any:
  """``tree`` with every NamedTuple replaced by a tuple of its fields (what a process without jrnn can rebuild)."""
  if isinstance(tree, tuple):
    return tuple(_plain(v) for v in tree)  # a NamedTuple too: its fields, in order
  if isinstance(tree, list):
    return [_plain(v) for v in tree]
  if isinstance(tree, dict):
    return {k: _plain(v) for k, v in tree.items()}
  return tree


def save(exported: jax_export.Exported, path: str | os.PathLike) -> None:
  """Writes ``exported.serialize()`` to ``path`` atomically (a temporary file in the same folder, then a rename).

  A crash leaves either the old file or the new one, never half of one.
  """
  if not isinstance(exported, jax_export.Exported):
    raise TypeError(f"jrnn.export.save: exported must be a jax.export.Exported, got {type(exported).__name__}.")
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".jax")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(exported.serialize())
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load(path: str | os.PathLike) -> jax_export.Exported:
  """The :class:`jax.export.Exported` that :func:`save` wrote (:func:`jax.export.deserialize` of its bytes)."""
  with open(os.fspath(path), "rb") as f:
    return jax_export.deserialize(bytearray(f.read()))
