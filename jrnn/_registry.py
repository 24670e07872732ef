"""The registry of every cell and cell wrapper in jrnn.

``tests/test_contract.py`` runs over it and checks the invariants each cell's
kind promises, for every cell bare and inside every wrapper. A new cell is one
file plus one line here; so is a new wrapper.
"""

from __future__ import annotations

from collections.abc import Callable

from jrnn import _bidirectional
from jrnn import _block
from jrnn import _cell
from jrnn import _elman
from jrnn import _gru
from jrnn import _layer_norm
from jrnn import _lru
from jrnn import _lstm
from jrnn import _lstmp
from jrnn import _min_gru
from jrnn import _min_lstm
from jrnn import _stack

# name -> factory(hidden_size, *, dtype) -> Cell, with the factory's defaults.
CELLS: dict[str, Callable[..., _cell.Cell]] = {
  "elman": _elman.elman,
  "gru": _gru.gru,
  "lstm": _lstm.lstm,
  "min_gru": _min_gru.min_gru,
  "min_lstm": _min_lstm.min_lstm,
  "lru": _lru.lru,
  # an LSTMP whose outputs (P = H // 2) are narrower than its cell state
  "lstmp": lambda hidden_size, **kw: _lstmp.lstmp(hidden_size, max(1, hidden_size // 2), **kw),
  "layer_norm_lstm": _layer_norm.layer_norm_lstm,
  "layer_norm_gru": _layer_norm.layer_norm_gru,
}

# name -> wrapper(cell, *, dtype) -> Cell: each takes a cell and returns a cell.
WRAPPERS: dict[str, Callable[..., _cell.Cell]] = {
  "stack": lambda cell, *, dtype: _stack.stack([cell, cell]),
  "bidirectional": lambda cell, *, dtype: _bidirectional.bidirectional(cell),
  "linear_recurrent_block": lambda cell, *, dtype: _block.linear_recurrent_block(cell, dtype=dtype),
}
