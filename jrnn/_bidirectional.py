"""Bidirectional recurrent layers (Schuster & Paliwal, 1997)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _unroll


class BidirectionalParams(NamedTuple):
  """Params of :func:`bidirectional`: one set per direction."""

  forward: Any
  backward: Any


class BidirectionalCarry(NamedTuple):
  """Carry of :func:`bidirectional`: the final carry of each direction."""

  forward: Any
  backward: Any


def bidirectional(forward: _cell.Cell, backward: _cell.Cell | None = None) -> _cell.Cell:
  """Runs one cell forward and one backward in time and concatenates their outputs.

  .. math::

     \\overrightarrow{h}_t = \\mathrm{fwd}(\\overrightarrow{h}_{t-1}, x_t), \\quad
     \\overleftarrow{h}_t = \\mathrm{bwd}(\\overleftarrow{h}_{t+1}, x_t), \\quad
     h_t = [\\overrightarrow{h}_t ; \\overleftarrow{h}_t]

  Masking-correct: with a mask, the backward direction skips masked steps, so
  on a right-padded sequence it starts at the last real element (and holes
  anywhere are skipped in both directions). ``carry.backward`` is then the
  backward state after the first real element.

  With ``jrnn.unroll(..., reset=r)`` the sequence is cut into segments that
  start where ``r`` is True (end there, with ``reverse=True``): the forward
  direction resets at the first step of each segment, the backward one at
  its last, so the result equals running each segment through the layer on
  its own (``carry.forward`` from the last segment, ``carry.backward`` from
  the first).

  The result is a cell wrapper of kind :class:`jrnn.SequenceLayer` with no
  ``step`` (``None``: the backward direction needs the whole sequence): run it
  with :func:`jrnn.unroll`, or put it in :func:`jrnn.stack`. The options of
  ``jrnn.unroll`` are passed to both directions (``reverse`` flipped for the
  backward one).

  Args:
    forward: the forward cell.
    backward: the backward cell; defaults to the same architecture as
      ``forward`` (with its own params).

  Returns:
    A :class:`jrnn.Cell` with :class:`BidirectionalParams`,
    :class:`BidirectionalCarry` and ``hidden_size = fwd.hidden_size +
    bwd.hidden_size``.

  References:
    Schuster & Paliwal, "Bidirectional recurrent neural networks", IEEE Trans.
    Signal Processing (1997).
  """
  backward = forward if backward is None else backward
  for arg, c in (("forward", forward), ("backward", backward)):
    if not isinstance(c, _cell.Cell):
      raise TypeError(f"jrnn.bidirectional: {arg} must be a jrnn.Cell, got {type(c).__name__}.")
  name = "jrnn.bidirectional"

  def init(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    kf, kb = jax.random.split(key)
    return BidirectionalParams(forward.init(kf, input_size), backward.init(kb, input_size))

  def initial_carry(params):
    return BidirectionalCarry(forward.initial_carry(params.forward), backward.initial_carry(params.backward))

  def run(params, carry, xs, mask, options, reset=None):
    cf, hf = _unroll.run(forward, params.forward, carry.forward, xs, mask, options, reset)
    cb, hb = _unroll.run(
      backward,
      params.backward,
      carry.backward,
      xs,
      mask,
      options._replace(reverse=not options.reverse),
      _other_end(reset, options.reverse),
    )
    return BidirectionalCarry(cf, cb), jnp.concatenate([hf, hb], axis=-1)

  return _cell.Cell(
    init=init,
    initial_carry=initial_carry,
    step=None,
    hidden_size=forward.hidden_size + backward.hidden_size,
    input_size=lambda params: forward.input_size(params.forward),
    kind=_cell.SequenceLayer(run, layers=(forward, backward)),
    name=name,
  )


def _other_end(reset, reverse):
  """The resets of the direction opposite to ``reverse``: each segment's other end.

  A segment that starts at ``t`` (``reset[t]``, forward) ends at ``t - 1``, so
  the backward direction resets at ``t - 1``: ``reset`` shifted one step
  back; with ``reverse`` the other way.
  """
  if reset is None:
    return None
  none = jnp.zeros((1,), reset.dtype)
  return jnp.concatenate([none, reset[:-1]]) if reverse else jnp.concatenate([reset[1:], none])
