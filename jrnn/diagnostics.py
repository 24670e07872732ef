"""Seeing the vanishing gradient: how much the state at step t still matters.

Two curves over t = 1 … T, both computed by autodiff through the ``lax.scan``
(nothing is derived by hand here):

* :func:`loss_grad_norms`: ``‖∂L/∂sₜ‖``, the total derivative of a loss on
  the outputs with respect to the state after step t (through the output at t
  and every later step);
* :func:`state_jacobians` / :func:`jacobian_norms`: ``∂s_T/∂sₜ``, the product
  of the per-step Jacobians ``∂sₜ₊₁/∂sₜ``, whose norm bounds how much of an
  error at the last step reaches step t (Bengio et al., 1994; Pascanu et al.,
  2013).

The state ``sₜ`` is the cell's whole carry, flattened with
:func:`jax.flatten_util.ravel_pytree`: ``hₜ`` for :func:`jrnn.elman` and
:func:`jrnn.gru`; the concatenation ``[hₜ; cₜ]`` (size 2H) for
:func:`jrnn.lstm`, because ``hₜ`` alone does not determine the future (the
cell state ``cₜ`` carries the long-range path); the layers' carries in order
for :func:`jrnn.stack`. Row ``i`` of every result is about the state after step
``i + 1``, the same row as ``hs[i]`` from :func:`jrnn.unroll`.

The Jacobians need only a cell that can be stepped (not
:func:`jrnn.bidirectional`). The loss gradient also needs the output as a
function of the state, ``hₜ = readout(sₜ, pₜ)``, which a split cell declares
(its kind's ``readout``: :class:`jrnn.Projected`,
:class:`jrnn.AffineRecurrence`, :class:`jrnn.LinearRecurrence`); for other
cells (a stack) it raises ValueError rather than guess.

:func:`plot_norms` draws the curves of several cells on one log-scale figure,
and :func:`standard_cells` gives the comparison the seeds describe: Elman tanh,
IRNN (ReLU, identity init), GRU and LSTM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _elman
from jrnn import _gru
from jrnn import _lstm
from jrnn._state_gradients import NORMS as _NORMS
from jrnn._state_gradients import jacobian_norms as jacobian_norms
from jrnn._state_gradients import loss_grad_norms as loss_grad_norms
from jrnn._state_gradients import state_jacobians as state_jacobians

__all__ = (
  "jacobian_norms",
  "loss_grad_norms",
  "plot_norms",
  "standard_cells",
  "state_jacobians",
)

_KINDS = ("jacobian", "loss_grad")


def standard_cells(
  key: jax.Array, input_size: int, hidden_size: int, *, dtype=jnp.float32
) -> dict[str, tuple[_cell.Cell, Any]]:
  """The four cells the seeds compare, at their default inits, as ``{name: (cell, params)}``.

  Elman tanh (orthogonal ``Ws``), IRNN (Elman ReLU with ``Ws = I``; Le et al.
  2015), GRU, and LSTM (forget bias 1).
  """
  cells = {
    "Elman tanh": _elman.elman(hidden_size, dtype=dtype),
    "IRNN (ReLU, identity)": _elman.elman(hidden_size, activation="relu", init="identity", dtype=dtype),
    "GRU": _gru.gru(hidden_size, dtype=dtype),
    "LSTM": _lstm.lstm(hidden_size, dtype=dtype),
  }
  keys = jax.random.split(key, len(cells))
  return {name: (cell, cell.init(k, input_size)) for (name, cell), k in zip(cells.items(), keys)}


def plot_norms(
  cells: Mapping[str, tuple[_cell.Cell, Any]],
  xs: jax.typing.ArrayLike,
  *,
  kind: str = "jacobian",
  loss_fn: Callable[[jax.Array], jax.Array] | None = None,
  norm: str = "spectral",
  path: str | None = None,
  ax: Any = None,
  title: str | None = None,
):
  """Draws :func:`jacobian_norms` or :func:`loss_grad_norms` against t for several cells.

  One line per cell, all on the same inputs ``xs``, log-scale y axis, t on the
  x axis (the signal enters at t = T on the right and fades going left).
  Imports matplotlib only when called (it is not a dependency of jrnn).

  Args:
    cells: ``{label: (cell, params)}``, e.g. :func:`standard_cells`.
    xs: inputs ``[T, input_size]`` shared by every cell.
    kind: ``"jacobian"`` for ``‖∂s_T/∂sₜ‖`` or ``"loss_grad"`` for
      ``‖∂L/∂sₜ‖`` (needs ``loss_fn``, which must then fit every cell's
      ``hidden_size``; default: ``L = Σ h_T``, a loss on the last output).
    norm: for ``kind="jacobian"``, ``"spectral"`` or ``"frobenius"``.
    path: if given, the figure is saved there (PNG by its extension).
    ax: a matplotlib Axes to draw on; a new figure when ``None``.
    title: the axes title; a description of ``kind`` when ``None``.

  In float32 the Elman and GRU curves reach ~1e-30 within a hundred or so steps
  and then underflow to 0, which a log axis does not draw; use float64
  params (``jax_enable_x64``) to see the whole curve on long sequences.

  Returns:
    ``(figure, {label: norms [T]})``.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cells = jrnn.diagnostics.standard_cells(jax.random.key(0), 8, 32)
    >>> xs = jax.random.normal(jax.random.key(1), (30, 8))
    >>> fig, curves = jrnn.diagnostics.plot_norms(cells, xs)   # path="vanishing.png" saves it
    >>> sorted(curves), curves["LSTM"].shape
    (['Elman tanh', 'GRU', 'IRNN (ReLU, identity)', 'LSTM'], (30,))
  """
  fn = "jrnn.diagnostics.plot_norms"
  if kind not in _KINDS:
    raise ValueError(f"{fn}: kind must be one of {_KINDS}, got {kind!r}.")
  if not cells:
    raise ValueError(f"{fn}: cells is empty; pass {{label: (cell, params)}}, e.g. standard_cells(...).")
  if loss_fn is None:

    def last_output_sum(hs):
      return jnp.sum(hs[-1])

    loss_fn = last_output_sum

  if kind == "jacobian":
    if norm not in _NORMS:
      raise ValueError(f"{fn}: norm must be one of {_NORMS}, got {norm!r}.")
    compute = jax.jit(lambda cell, params, xs: jacobian_norms(cell, params, xs, norm=norm), static_argnums=0)
  else:
    compute = jax.jit(lambda cell, params, xs: loss_grad_norms(cell, params, xs, loss_fn), static_argnums=0)
  curves = {label: jax.device_get(compute(cell, params, xs)) for label, (cell, params) in cells.items()}

  import matplotlib.pyplot as plt  # lazily: matplotlib is optional

  if ax is None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
  else:
    fig = ax.figure
  T = next(iter(curves.values())).shape[0]
  ts = range(1, T + 1)
  for label, values in curves.items():
    ax.plot(ts, values, label=label, linewidth=1.6)
  ax.set_yscale("log")
  ax.set_xlabel("t")
  if kind == "jacobian":
    ax.set_ylabel(rf"$\|\partial s_T / \partial s_t\|$ ({norm})")
    default_title = f"How much of step T reaches back to step t (T = {T})"
  else:
    ax.set_ylabel(r"$\|\partial L / \partial s_t\|$")
    default_title = f"Gradient of the loss with respect to each state (T = {T})"
  ax.set_title(default_title if title is None else title)
  ax.grid(True, which="major", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=110)
  return fig, curves
