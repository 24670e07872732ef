r"""Weights to and from PyTorch's ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM``.

``import jrnn`` never imports torch: every function here imports it when called.

How PyTorch's parameters map to jrnn's
--------------------------------------

PyTorch stores weights shaped (out, in) and computes ``x W_ih^T + b_ih``;
jrnn stores them (in, out) and computes ``x W_x + b``. So

* ``wx = weight_ih^T``  (``[input_size, G * hidden_size]``),
* ``wh = weight_hh^T``  (``[hidden_size, G * hidden_size]``),

with ``G`` = 1 (RNN), 3 (GRU) or 4 (LSTM) gate blocks side by side, in the same
order in both libraries: **r, z, n** for the GRU and **i, f, g, o** for the
LSTM (jrnn follows PyTorch; there is no reordering and no hidden forget-gate
constant).

PyTorch has two biases, ``b_ih`` and ``b_hh``, where the maths needs one: jrnn
keeps their sum.

* RNN (``nonlinearity`` tanh or relu), ``jrnn.elman(activation=...)``:

  .. math::

     h_t = \phi(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})
         = \phi(x_t W_x + h_{t-1} W_h + b), \qquad b = b_{ih} + b_{hh}

* LSTM, ``jrnn.lstm``: ``b = b_ih + b_hh`` (all four blocks i, f, g, o):

  .. math::

     [i_t, f_t, g_t, o_t] = x_t W_x + h_{t-1} W_h + b, \quad
     c_t = \sigma(f_t) c_{t-1} + \sigma(i_t) \tanh(g_t), \quad
     h_t = \sigma(o_t) \tanh(c_t)

* LSTM with ``proj_size = P > 0``, ``jrnn.lstmp(H, P)``: as the LSTM, with
  ``wh = weight_hh^T`` now ``[P, 4H]`` and the projection ``wr =
  weight_hr^T`` (``[H, P]``), ``h_t = (\sigma(o_t) \tanh(c_t)) W_r``; ``h_t``
  (the outputs and ``h_n``) has ``P`` features, ``c_t`` (``c_n``) ``H``.

* GRU, ``jrnn.gru``: the n gate's recurrent bias ``b_hn`` sits inside the reset
  product, so it cannot be merged:

  .. math::

     r_t &= \sigma(x_t W_{xr} + h_{t-1} W_{hr} + b_{ir} + b_{hr}) \\
     z_t &= \sigma(x_t W_{xz} + h_{t-1} W_{hz} + b_{iz} + b_{hz}) \\
     n_t &= \tanh(x_t W_{xn} + b_{in} + r_t \odot (h_{t-1} W_{hn} + b_{hn})) \\
     h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

  ``b = [b_ir + b_hr, b_iz + b_hz, b_in]`` and ``bhn = b_hn``.

Going back (:func:`to_torch`), the merged bias goes into ``b_ih`` and ``b_hh``
is zero, except the GRU's n block of ``b_hh``, which receives ``bhn``:

* RNN, LSTM: ``b_ih = b``, ``b_hh = 0``;
* GRU: ``b_ih = b``, ``b_hh = [0, 0, bhn]``.

Layers and directions
---------------------

A module with ``num_layers = L`` and ``D`` directions (``bidirectional=True``
gives ``D = 2``) maps to the cell :func:`cell_from_torch` returns:

=====================  =================================================
L = 1, D = 1           ``base`` (``jrnn.elman`` / ``gru`` / ``lstm`` / ``lstmp``)
L = 1, D = 2           ``jrnn.bidirectional(base)``
L > 1                  ``jrnn.stack([layer] * L)``, ``layer`` as above
=====================  =================================================

and its params are the base's NamedTuple, a :class:`jrnn.BidirectionalParams`,
or a tuple of L of those. The carries have the same structure; PyTorch's
``h_n`` (and ``c_n``) ``[L * D, batch, H]`` holds them in the order
``layer * D + direction`` (:func:`carry_from_torch`, :func:`carry_to_torch`).
jrnn's backward direction ends, like PyTorch's, at ``t = 0``.
``torch.nn.RNNCell``, ``GRUCell`` and ``LSTMCell`` map to the base cell.

Round trips
-----------

* ``from_torch(to_torch(params, m))`` equals ``params`` exactly (bit for bit).
* ``to_torch(from_torch(m), m2)`` gives ``m2`` exactly ``m``'s weights, and
  ``bias_ih`` = ``m``'s ``b_ih + b_hh`` (rounded once to the module's dtype;
  the GRU's ``b_in`` and ``b_hn`` are copied exactly), ``bias_hh`` = 0 (GRU:
  ``[0, 0, b_hn]``). It computes the same function as ``m`` up to that one
  rounding, and ``from_torch(m2) == from_torch(m)`` exactly.

What is not converted
---------------------

* ``dropout`` (between layers, only in training mode) has no jrnn counterpart:
  the weights convert, and jrnn computes what the module computes in
  ``eval()`` mode.
* ``batch_first`` only changes the layout of the inputs: jrnn runs one sequence
  ``[T, features]`` and batches with ``jax.vmap``.

Example:
  A two-layer bidirectional LSTM run by jrnn over a batch gives torch's outputs
  and final states:

  >>> import jax, jax.numpy as jnp, numpy as np, torch, jrnn
  >>> m = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True)
  >>> cell, params = jrnn.interop.cell_from_torch(m), jrnn.interop.from_torch(m)
  >>> xs = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)  # [B, T, 8]
  >>> carry, hs = jax.vmap(lambda x: jrnn.unroll(cell, params, x))(jnp.asarray(xs))
  >>> hs.shape
  (3, 5, 32)
  >>> h_n, c_n = jrnn.interop.carry_to_torch(carry, m)  # torch's layout [L * D, B, H]
  >>> tuple(h_n.shape)
  (4, 3, 16)
  >>> out, (h_ref, c_ref) = m(torch.from_numpy(xs).transpose(0, 1))  # torch runs [T, B, 8]
  >>> bool(np.allclose(hs, out.detach().numpy().transpose(1, 0, 2), atol=1e-5))
  True
  >>> bool(torch.allclose(h_n, h_ref, atol=1e-5) and torch.allclose(c_n, c_ref, atol=1e-5))
  True
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import _bidirectional
from jrnn import _elman
from jrnn import _gru
from jrnn import _lstm
from jrnn import _lstmp
from jrnn import _stack

__all__ = ("carry_from_torch", "carry_to_torch", "cell_from_torch", "from_torch", "to_torch")


class _Spec(NamedTuple):
  """What jrnn needs to know about a torch module."""

  kind: str  # "tanh", "relu" (Elman), "gru" or "lstm"
  input_size: int
  hidden_size: int
  num_layers: int
  num_directions: int
  bias: bool
  is_cell: bool  # torch.nn.RNNCell / GRUCell / LSTMCell
  dtype: Any  # numpy dtype of the module's parameters
  proj_size: int = 0  # nn.LSTM's proj_size: > 0 for jrnn.lstmp


_GATES = {"tanh": 1, "relu": 1, "gru": 3, "lstm": 4}
_PARAMS_TYPE = {"tanh": _elman.ElmanParams, "relu": _elman.ElmanParams, "gru": _gru.GRUParams, "lstm": _lstm.LSTMParams}
_MODES = {"RNN_TANH": "tanh", "RNN_RELU": "relu", "GRU": "gru", "LSTM": "lstm"}


def _spec(module, fn_name) -> _Spec:
  import torch

  if isinstance(module, torch.nn.RNNBase):
    if not isinstance(module, (torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM)) or module.mode not in _MODES:
      raise TypeError(
        f"{fn_name}: unsupported torch module {type(module).__name__} (mode {module.mode!r}); "
        "expected torch.nn.RNN, GRU or LSTM."
      )
    kind = _MODES[module.mode]
    num_layers, num_directions, is_cell = module.num_layers, 2 if module.bidirectional else 1, False
  elif isinstance(module, (torch.nn.RNNCell, torch.nn.GRUCell, torch.nn.LSTMCell)):
    if isinstance(module, torch.nn.RNNCell):
      if module.nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{fn_name}: unsupported RNNCell nonlinearity {module.nonlinearity!r}.")
      kind = module.nonlinearity
    else:
      kind = "gru" if isinstance(module, torch.nn.GRUCell) else "lstm"
    num_layers, num_directions, is_cell = 1, 1, True
  else:
    raise TypeError(
      f"{fn_name}: module must be a torch.nn.RNN, GRU or LSTM (or RNNCell, GRUCell, LSTMCell), got "
      f"{type(module).__name__}."
    )
  dtype = next(module.parameters()).dtype
  if not dtype.is_floating_point:
    raise TypeError(f"{fn_name}: the module's parameters must be floating point, got {dtype}.")
  np_dtype = jnp.dtype(str(dtype).removeprefix("torch."))
  return _Spec(
    kind=kind,
    input_size=module.input_size,
    hidden_size=module.hidden_size,
    num_layers=num_layers,
    num_directions=num_directions,
    bias=bool(module.bias),
    is_cell=is_cell,
    dtype=np_dtype,
    proj_size=int(getattr(module, "proj_size", 0)),
  )


def _names(spec: _Spec, layer: int, direction: int) -> tuple[str, str, str, str]:
  """PyTorch's attribute names of (weight_ih, weight_hh, bias_ih, bias_hh) for one unit."""
  if spec.is_cell:
    return "weight_ih", "weight_hh", "bias_ih", "bias_hh"
  sfx = f"_l{layer}" + ("_reverse" if direction else "")
  return f"weight_ih{sfx}", f"weight_hh{sfx}", f"bias_ih{sfx}", f"bias_hh{sfx}"


def _out_size(spec: _Spec) -> int:
  """The size of ``h``: ``proj_size`` for an LSTM with projections, else ``hidden_size``."""
  return spec.proj_size or spec.hidden_size


def _hr_name(spec: _Spec, layer: int, direction: int) -> str:
  """PyTorch's name of the projection ``weight_hr`` of one unit (LSTM with ``proj_size > 0``)."""
  return f"weight_hr_l{layer}" + ("_reverse" if direction else "")


def _units(spec: _Spec):
  """(layer, direction) pairs in PyTorch's order: index ``layer * D + direction``."""
  return [(l, d) for l in range(spec.num_layers) for d in range(spec.num_directions)]


def _to_numpy(t) -> np.ndarray:
  """A torch tensor as a numpy array of the same dtype (bfloat16 included)."""
  import torch

  t = t.detach().cpu()
  if t.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly.
    return t.float().numpy().astype(jnp.bfloat16)
  return t.numpy()


def _to_tensor(x, like):
  """A (jax or numpy) array as a tensor with ``like``'s dtype and device."""
  import torch

  x = np.asarray(x)
  # Through float32/float64 (exact for float16 and bfloat16); np.array copies, so
  # torch gets a writable array.
  x = np.array(x, dtype=np.float64 if x.dtype == np.float64 else np.float32)
  return torch.from_numpy(x).to(device=like.device, dtype=like.dtype)


def _check_x64(spec: _Spec, fn_name: str):
  if spec.dtype == np.float64 and jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
    raise ValueError(
      f"{fn_name}: the module is float64 but JAX's float64 support is off, so the weights would be "
      "truncated to float32. Enable it with jax.config.update('jax_enable_x64', True), or convert a "
      "float32 module (module.float())."
    )


def _base_cell(spec: _Spec):
  dtype = spec.dtype
  if spec.kind in ("tanh", "relu"):
    return _elman.elman(spec.hidden_size, activation=spec.kind, dtype=dtype)
  if spec.kind == "gru":
    return _gru.gru(spec.hidden_size, dtype=dtype)
  if spec.proj_size:
    return _lstmp.lstmp(spec.hidden_size, spec.proj_size, dtype=dtype)
  return _lstm.lstm(spec.hidden_size, dtype=dtype)


def cell_from_torch(module):
  """The jrnn cell that computes what a torch recurrent module computes.

  ``nn.RNN(nonlinearity=φ)`` gives ``jrnn.elman(H, activation=φ)``,
  ``nn.GRU`` ``jrnn.gru(H)``, ``nn.LSTM`` ``jrnn.lstm(H)`` (``jrnn.lstmp(H, P)`` with
  ``proj_size = P > 0``); ``bidirectional=True``
  wraps it in :func:`jrnn.bidirectional` and ``num_layers = L > 1`` stacks ``L``
  such layers with :func:`jrnn.stack`. ``torch.nn.RNNCell``, ``GRUCell`` and
  ``LSTMCell`` give the base cell. The cell's params are :func:`from_torch`'s.

  Args:
    module: a ``torch.nn.RNN``, ``GRU``, ``LSTM``, ``RNNCell``, ``GRUCell`` or
      ``LSTMCell``.

  Returns:
    A :class:`jrnn.Cell`; its ``dtype`` (used only by ``cell.init``) is the
    module's.

  Raises:
    TypeError: for another module type.
  """
  spec = _spec(module, "jrnn.interop.cell_from_torch")
  layer = _base_cell(spec)
  if spec.num_directions == 2:
    layer = _bidirectional.bidirectional(layer)
  if spec.num_layers > 1:
    return _stack.stack([layer] * spec.num_layers)
  return layer


def _assemble(spec: _Spec, units: list, pair_type):
  """Per-unit pytrees in PyTorch's order -> the jrnn structure (see the module docstring)."""
  D = spec.num_directions
  layers = [units[l * D] if D == 1 else pair_type(units[l * D], units[l * D + 1]) for l in range(spec.num_layers)]
  return layers[0] if spec.num_layers == 1 else tuple(layers)


def _disassemble(spec: _Spec, tree, pair_type, what: str, fn_name: str) -> list:
  """The jrnn structure -> per-unit pytrees in PyTorch's order, with structure checks."""
  L, D = spec.num_layers, spec.num_directions
  expected = "a tuple of " + str(L) + " layers, each " if L > 1 else ""
  expected += f"a {pair_type.__name__}(forward, backward)" if D == 2 else "the cell's own"
  if L > 1:
    if not isinstance(tree, (tuple, list)) or hasattr(tree, "_fields") or len(tree) != L:
      raise ValueError(
        f"{fn_name}: the module has num_layers={L}, so {what} must be {expected} {what} "
        f"(what jrnn.stack takes), got {type(tree).__name__}"
        f"{' of length ' + str(len(tree)) if isinstance(tree, (tuple, list)) else ''}."
      )
    layers, paths = list(tree), [f"{what}[{l}]" for l in range(L)]
  else:
    layers, paths = [tree], [what]
  units = []
  for layer, path in zip(layers, paths):
    if D == 2:
      if not isinstance(layer, pair_type):
        raise ValueError(
          f"{fn_name}: the module is bidirectional, so {path} must be a {pair_type.__name__}"
          f"(forward, backward), got {type(layer).__name__}."
        )
      units += [(layer.forward, f"{path}.forward"), (layer.backward, f"{path}.backward")]
    else:
      units.append((layer, path))
  return units


def from_torch(module):
  """The jrnn params of a torch ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM``.

  Per layer and direction (see the module docstring for the equations):

  * ``wx = weight_ih^T``, ``wh = weight_hh^T`` (PyTorch is (out, in), jrnn
    (in, out)); gate blocks keep their order, r, z, n (GRU) and i, f, g, o
    (LSTM), in both libraries;
  * RNN and LSTM: ``b = bias_ih + bias_hh``;
  * GRU: ``b = [b_ir + b_hr, b_iz + b_hz, b_in]`` and ``bhn = b_hn``;
  * LSTM with ``proj_size > 0``: also ``wr = weight_hr^T``.

  ``bias=False`` gives zero biases. The arrays keep the module's dtype
  (float64 needs ``jax_enable_x64``). Run them with the cell from
  :func:`cell_from_torch`.

  Args:
    module: a ``torch.nn.RNN`` (tanh or relu), ``GRU`` or ``LSTM`` (any
      ``num_layers``, ``bidirectional``, ``batch_first``), or an ``RNNCell``,
      ``GRUCell`` or ``LSTMCell``.

  Returns:
    :class:`jrnn.ElmanParams`, :class:`jrnn.GRUParams` or
    :class:`jrnn.LSTMParams` (:class:`jrnn.LSTMPParams` with ``proj_size > 0``) for one layer and one direction; a
    :class:`jrnn.BidirectionalParams` of two of those for a bidirectional layer;
    a tuple of ``num_layers`` of either for a deeper module.

  Raises:
    TypeError: for another module type.
    ValueError: for a float64 module while JAX's float64 support is off.

  Example:
    >>> import jax.numpy as jnp, torch, jrnn
    >>> m = torch.nn.GRU(4, 8, num_layers=2)
    >>> cell, params = jrnn.interop.cell_from_torch(m), jrnn.interop.from_torch(m)
    >>> len(params), params[0].wx.shape, params[1].wx.shape  # two layers; wx = weight_ih^T
    (2, (4, 24), (8, 24))
    >>> carry, hs = jrnn.unroll(cell, params, jnp.ones((5, 4)))
    >>> hs.shape
    (5, 8)
  """
  fn_name = "jrnn.interop.from_torch"
  spec = _spec(module, fn_name)
  _check_x64(spec, fn_name)
  H, G = spec.hidden_size, _GATES[spec.kind]
  units = []
  for layer, direction in _units(spec):
    n_ih, n_hh, n_bih, n_bhh = _names(spec, layer, direction)
    w_ih = _to_numpy(getattr(module, n_ih))
    w_hh = _to_numpy(getattr(module, n_hh))
    if spec.bias:
      b_ih = _to_numpy(getattr(module, n_bih))
      b_hh = _to_numpy(getattr(module, n_bhh))
    else:
      b_ih = b_hh = np.zeros((G * H,), w_ih.dtype)
    wx, wh = jnp.asarray(w_ih.T), jnp.asarray(w_hh.T)
    if spec.kind == "gru":
      b = np.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])
      units.append(_gru.GRUParams(wx, wh, jnp.asarray(b), jnp.asarray(b_hh[2 * H :])))
    elif spec.proj_size:
      w_hr = _to_numpy(getattr(module, _hr_name(spec, layer, direction)))
      units.append(_lstmp.LSTMPParams(wx, wh, jnp.asarray(b_ih + b_hh), jnp.asarray(w_hr.T)))
    else:
      units.append(_PARAMS_TYPE[spec.kind](wx, wh, jnp.asarray(b_ih + b_hh)))
  return _assemble(spec, units, _bidirectional.BidirectionalParams)


def to_torch(params, module):
  """Writes jrnn params into an existing torch module, in place, and returns it.

  The inverse of :func:`from_torch`: ``weight_ih = wx^T``, ``weight_hh = wh^T``
  (and ``weight_hr = wr^T`` for an LSTM with ``proj_size > 0``), and since jrnn holds one bias where PyTorch holds two:

  * RNN, LSTM: ``bias_ih = b``, ``bias_hh = 0``;
  * GRU: ``bias_ih = b`` (r, z, n blocks), ``bias_hh = [0, 0, bhn]``.

  So ``from_torch(to_torch(params, m)) == params`` exactly. Values are cast to
  the module's dtype and device. The module's type, sizes, ``num_layers`` and
  ``bidirectional`` must match the params' structure and shapes; nothing is
  written unless they do.

  Args:
    params: params of the cell :func:`cell_from_torch` gives for ``module``.
    module: the ``torch.nn.RNN``, ``GRU``, ``LSTM`` (or cell) to write into.

  Returns:
    ``module``, its parameters overwritten (under ``torch.no_grad()``).

  Raises:
    ValueError: if the params do not fit the module, or hold a non-zero bias
      for a module built with ``bias=False``.
  """
  import torch

  fn_name = "jrnn.interop.to_torch"
  spec = _spec(module, fn_name)
  H, G = spec.hidden_size, _GATES[spec.kind]
  ptype = _lstmp.LSTMPParams if spec.proj_size else _PARAMS_TYPE[spec.kind]
  R = _out_size(spec)
  units = _disassemble(spec, params, _bidirectional.BidirectionalParams, "params", fn_name)
  writes = []
  for (layer, direction), (p, path) in zip(_units(spec), units):
    if not isinstance(p, ptype):
      raise ValueError(
        f"{fn_name}: {path} must be a {ptype.__name__} for this {spec.kind} module, got {type(p).__name__}."
      )
    in_size = spec.input_size if layer == 0 else R * spec.num_directions
    shapes = {"wx": (in_size, G * H), "wh": (R, G * H), "b": (G * H,), "bhn": (H,), "wr": (H, R)}
    for field in p._fields:
      got = tuple(np.shape(getattr(p, field)))
      if got != shapes[field]:
        raise ValueError(
          f"{fn_name}: {path}.{field} has shape {got}, but the module (input_size={spec.input_size}, "
          f"hidden_size={H}, proj_size={spec.proj_size}, layer {layer}) needs {shapes[field]}."
        )
    n_ih, n_hh, n_bih, n_bhh = _names(spec, layer, direction)
    writes += [(n_ih, np.asarray(p.wx).T), (n_hh, np.asarray(p.wh).T)]
    if isinstance(p, _lstmp.LSTMPParams):
      writes.append((_hr_name(spec, layer, direction), np.asarray(p.wr).T))
    b = np.asarray(p.b)
    b_hh = np.zeros_like(b)
    if isinstance(p, _gru.GRUParams):
      b_hh[2 * H :] = np.asarray(p.bhn)
    if spec.bias:
      writes += [(n_bih, b), (n_bhh, b_hh)]
    elif np.any(b != 0) or np.any(b_hh != 0):
      raise ValueError(f"{fn_name}: the module has bias=False but {path} has non-zero biases, which it cannot hold.")
  with torch.no_grad():
    for name, value in writes:
      target = getattr(module, name)
      target.copy_(_to_tensor(value, target))
  return module


def carry_from_torch(module, hx):
  """PyTorch's initial state ``hx`` as the jrnn carry of :func:`cell_from_torch`'s cell.

  Args:
    module: the torch module (only its configuration is read).
    hx: ``h_0`` (RNN, GRU) or ``(h_0, c_0)`` (LSTM), each
      ``[num_layers * num_directions, *batch, H]`` (``[*batch, H]`` for the
      ``*Cell`` modules; ``h_0`` has ``P`` features for an LSTM with
      ``proj_size = P > 0``); torch tensors or arrays.

  Returns:
    The carry, leaves ``[*batch, H]`` in the module's dtype; for a batch, vmap
    :func:`jrnn.unroll` over it with ``in_axes=0``.
  """
  fn_name = "jrnn.interop.carry_from_torch"
  spec = _spec(module, fn_name)
  _check_x64(spec, fn_name)
  if spec.kind == "lstm":
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
      raise ValueError(f"{fn_name}: for an LSTM, hx must be the pair (h_0, c_0), got {type(hx).__name__}.")
    parts = hx
  else:
    parts = (hx,)
  arrays = []
  for a, size in zip(parts, (_out_size(spec), spec.hidden_size)):
    a = _to_numpy(a) if hasattr(a, "detach") else np.asarray(a)
    a = jnp.asarray(a, spec.dtype)
    n = spec.num_layers * spec.num_directions
    if spec.is_cell:
      a = a[None]
    if a.ndim < 2 or a.shape[0] != n or a.shape[-1] != size:
      raise ValueError(
        f"{fn_name}: hx has shape {tuple(a.shape)}, expected [{n}, *batch, {size}] "
        f"(num_layers * num_directions, batch, {'proj_size' if size != spec.hidden_size else 'hidden_size'})."
      )
    arrays.append(a)
  if spec.kind == "lstm":
    carry_type = _lstmp.LSTMPCarry if spec.proj_size else _lstm.LSTMCarry
    units = [carry_type(arrays[0][i], arrays[1][i]) for i in range(len(_units(spec)))]
  else:
    units = [arrays[0][i] for i in range(len(_units(spec)))]
  return _assemble(spec, units, _bidirectional.BidirectionalCarry)


def carry_to_torch(carry, module):
  """A jrnn carry in PyTorch's layout: what the module returns as its final state.

  Args:
    carry: a carry of :func:`cell_from_torch`'s cell (e.g. the first output of
      :func:`jrnn.unroll`, vmapped over a batch), leaves ``[*batch, H]`` (``h``
      ``[*batch, P]`` for an LSTM with ``proj_size = P > 0``).
    module: the torch module (its configuration, dtype and device are used).

  Returns:
    ``h_n`` (RNN, GRU) or ``(h_n, c_n)`` (LSTM), torch tensors
    ``[num_layers * num_directions, *batch, H]``, row ``layer * D +
    direction``; ``[*batch, H]`` for the ``*Cell`` modules.
  """
  fn_name = "jrnn.interop.carry_to_torch"
  spec = _spec(module, fn_name)
  units = _disassemble(spec, carry, _bidirectional.BidirectionalCarry, "carry", fn_name)
  like = next(module.parameters())
  if spec.kind == "lstm":
    carry_type = _lstmp.LSTMPCarry if spec.proj_size else _lstm.LSTMCarry
    for u, path in units:
      if not isinstance(u, carry_type):
        raise ValueError(f"{fn_name}: {path} must be a jrnn.{carry_type.__name__}(h, c), got {type(u).__name__}.")
    fields = [[u.h for u, _ in units], [u.c for u, _ in units]]
  else:
    fields = [[u for u, _ in units]]
  out = []
  for leaves, size in zip(fields, (_out_size(spec), spec.hidden_size)):
    shapes = {tuple(np.shape(x)) for x in leaves}
    if len(shapes) != 1 or next(iter(shapes))[-1:] != (size,):
      raise ValueError(f"{fn_name}: carry leaves must all have shape [*batch, {size}], got {sorted(shapes)}.")
    stacked = np.stack([np.asarray(x) for x in leaves])
    out.append(_to_tensor(stacked[0] if spec.is_cell else stacked, like))
  return out[0] if len(out) == 1 else tuple(out)
