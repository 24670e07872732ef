"""Stacked (deep) recurrent layers."""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jrnn import _cell
from jrnn import _checks
from jrnn import _unroll


def stack(cells: Sequence[_cell.Cell]) -> _cell.Cell:
  """Stacks cells so each layer's outputs are the next layer's inputs.

  .. math::

     h^{(1)}_t = \\mathrm{cell}_1(h^{(1)}_{t-1}, x_t), \\qquad
     h^{(l)}_t = \\mathrm{cell}_l(h^{(l)}_{t-1}, h^{(l-1)}_t)

  The params and the carry are tuples with one entry per layer. The result is
  itself a :class:`jrnn.Cell`: ``step`` runs every layer for one time step
  (so it works for generation), while :func:`jrnn.unroll` runs it layer by
  layer over the whole sequence, so each layer's input projection is one matrix
  product (as cuDNN does). Masks and ``reverse`` apply to every layer, which
  gives the same result as stepping through time; so does ``reset``, each
  layer going back to its own initial carry. ``jrnn.unroll``'s options
  (``scan``, ``projection``, ``remat``, ``vjp``, ``precision`` ...) are passed
  to every layer (``"auto"`` decides per layer). Layers may be
  :func:`jrnn.bidirectional` (then the stack cannot be stepped, only unrolled),
  as in PyTorch's ``nn.LSTM(num_layers=L, bidirectional=True)``.

  Args:
    cells: the layers, first (input side) to last.

  Returns:
    A :class:`jrnn.Cell` with params ``tuple(layer_params)`` and carry
    ``tuple(layer_carry)``; its ``hidden_size`` is the last layer's.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.stack([jrnn.lstm(16), jrnn.gru(8)])
    >>> params = cell.init(jax.random.key(0), 4)
    >>> xs = jnp.ones((10, 4))
    >>> (c1, c2), hs = jrnn.unroll(cell, params, xs)
    >>> h1 = jrnn.unroll(jrnn.lstm(16), params[0], xs)[1]           # layer 1 ...
    >>> hs.shape, bool(jnp.allclose(hs, jrnn.unroll(jrnn.gru(8), params[1], h1)[1]))   # ... feeds layer 2
    ((10, 8), True)
  """
  cells = tuple(cells)
  if not cells:
    raise ValueError("jrnn.stack: cells must hold at least one jrnn.Cell, got an empty sequence.")
  for i, c in enumerate(cells):
    if not isinstance(c, _cell.Cell):
      raise TypeError(f"jrnn.stack: cells[{i}] must be a jrnn.Cell, got {type(c).__name__}.")
  name = "jrnn.stack"

  def init(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    keys = jax.random.split(key, len(cells))
    params = []
    for c, k in zip(cells, keys):
      params.append(c.init(k, input_size))
      input_size = c.hidden_size
    return tuple(params)

  def initial_carry(params):
    return tuple(c.initial_carry(p) for c, p in zip(cells, params))

  def run(params, carry, xs, mask, options, reset=None):
    carries = []
    for c, p, h0 in zip(cells, params, carry):
      h_last, xs = _unroll.run(c, p, h0, xs, mask, options, reset)
      carries.append(h_last)
    return tuple(carries), xs

  def step(params, carry, x):
    new = []
    for c, p, h0 in zip(cells, params, carry):
      assert c.step is not None  # the stack has a step only when every layer has one
      h_last, x = c.step(p, h0, x)
      new.append(h_last)
    return tuple(new), x

  steppable = all(c.step is not None for c in cells)

  return _cell.Cell(
    init=init,
    initial_carry=initial_carry,
    step=step if steppable else None,
    hidden_size=cells[-1].hidden_size,
    input_size=lambda params: cells[0].input_size(params[0]),
    kind=_cell.SequenceLayer(run, layers=cells),
    name=name,
  )
