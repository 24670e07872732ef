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
from jax.flatten_util import ravel_pytree

from jrnn import _cell
from jrnn import _checks
from jrnn import _elman
from jrnn import _gru
from jrnn import _lstm
from jrnn import _options
from jrnn import _scans

_NORMS = ("spectral", "frobenius")
_KINDS = ("jacobian", "loss_grad")


def _checked(cell, params, xs, carry, fn, options, needs_readout=False):
  """Checks the inputs and options; returns ``(xs, carry, options)``."""
  options = _options.make(fn, ("unroll", "remat"), **options)
  if not isinstance(cell, _cell.Cell):
    raise TypeError(f"{fn}: cell must be a jrnn.Cell (e.g. jrnn.lstm(16)), got {type(cell).__name__}.")
  if cell.step is None:
    raise ValueError(
      f"{fn}: {cell.name} has no step (bidirectional layers cannot be stepped); "
      "the state Jacobians need a cell that runs forward one step at a time."
    )
  if needs_readout and not isinstance(cell.kind, _cell.SPLIT_KINDS):
    raise ValueError(
      f"{fn}: {cell.name} is a {type(cell.kind).__name__}, whose output is not a function of its state; "
      "the loss gradient with respect to the state needs a split cell (jrnn.Projected, AffineRecurrence "
      "or LinearRecurrence: elman, gru, lstm, min_gru, min_lstm, lru, linear_recurrent_block)."
    )
  xs, carry, _ = _checks.check_sequence(cell, params, xs, carry, None, fn)
  return xs, carry, options


def _perturbed_run(cell, params, xs, carry, eps, options):
  """Runs the cell with ``eps[t]`` added to the carry after step t; returns (carry, hs).

  ``eps`` has the carry's structure with a leading ``[T]`` axis. For a split
  cell the output at step t is the kind's ``readout`` of the perturbed carry,
  so ``∂/∂eps[t]`` at ``eps = 0`` is the total derivative with respect to the
  state ``sₜ``; other cells (a stack) return the step's own outputs.
  """
  kind = cell.kind

  def body(c, x_e):
    x, e = x_e
    if isinstance(kind, _cell.SPLIT_KINDS):
      p = kind.project(params, x)
      c = jax.tree_util.tree_map(jnp.add, kind.recur(params, c, p), e)
      return c, kind.readout(params, c, p)
    c, h = cell.step(params, c, x)
    return jax.tree_util.tree_map(jnp.add, c, e), h

  return _scans.sequential(body, carry, (xs, eps), unroll=options.unroll, remat=options.remat)


def _zeros_over_time(carry, T):
  return jax.tree_util.tree_map(lambda a: jnp.zeros((T,) + a.shape, a.dtype), carry)


def _flat_over_time(tree, T):
  """A pytree with leading ``[T]`` leaves -> ``[T, D]``, leaves concatenated in ravel_pytree's order."""
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.concatenate([jnp.reshape(a, (T, -1)) for a in leaves], axis=1)


def loss_grad_norms(
  cell: _cell.Cell,
  params: Any,
  xs: jax.typing.ArrayLike,
  loss_fn: Callable[[jax.Array], jax.Array],
  carry: Any = None,
  **options: Any,
) -> jax.Array:
  """``‖∂L/∂sₜ‖₂`` for t = 1 … T, by autodiff with a zero perturbation of each state.

  .. math::

     L = \\mathrm{loss\\_fn}(h_1, \\ldots, h_T), \\qquad
     g_t = \\left\\| \\frac{\\partial L}{\\partial s_t} \\right\\|_2
         = \\left\\| \\frac{\\partial}{\\partial \\epsilon_t}
           L\\big|_{s_t \\leftarrow s_t + \\epsilon_t} \\right\\|_2 \\Big|_{\\epsilon = 0}

  A perturbation ``εₜ`` (zeros) is added to the carry after every step and one
  ``jax.grad`` gives all ``∂L/∂εₜ = ∂L/∂sₜ`` at once: the total derivative,
  through the output at step t and through every later step. For a loss on
  the last output only (many-to-one), ``gₜ`` shows how the error signal fades
  going back in time. ``sₜ`` is the whole carry (``[hₜ; cₜ]`` for an LSTM, see
  the module docstring); the norm is the Euclidean norm of its gradient.

  Args:
    cell: a :class:`jrnn.Cell` with a ``step`` (elman, gru, lstm, stack).
    params: the cell's params.
    xs: inputs ``[T, input_size]``.
    loss_fn: ``hs [T, hidden_size] -> scalar``, a loss on the outputs
      (e.g. ``lambda hs: jrnn.losses.mse(head.apply(hp, hs), ys)``).
    carry: initial carry (``None`` for zeros).
    options: ``unroll`` and ``remat``, as in :func:`jrnn.unroll` (the other
      :class:`jrnn.Options` do not apply to this forward-only stepped run).

  Returns:
    ``[T]``: row ``i`` is ``‖∂L/∂s_{i+1}‖``.

  To compile it, mark the cell static: ``jax.jit(loss_grad_norms,
  static_argnums=(0, 3))``.

  Example:
    The gradient of a loss on the last output reaches back less the further it goes:

    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.elman(16)
    >>> params = cell.init(jax.random.key(0), 4)
    >>> g = jrnn.diagnostics.loss_grad_norms(cell, params, jnp.ones((50, 4)), lambda hs: jnp.sum(hs[-1]))
    >>> g.shape, bool(g[0] < 1e-3 * g[-1])
    ((50,), True)
  """
  fn = "jrnn.diagnostics.loss_grad_norms"
  if not callable(loss_fn):
    raise TypeError(f"{fn}: loss_fn must be a callable hs [T, hidden_size] -> scalar, got {type(loss_fn).__name__}.")
  xs, carry, opts = _checked(cell, params, xs, carry, fn, options, needs_readout=True)
  T = xs.shape[0]

  def total(eps):
    _, hs = _perturbed_run(cell, params, xs, carry, eps, opts)
    loss = jnp.asarray(loss_fn(hs))
    if loss.shape != ():
      raise ValueError(f"{fn}: loss_fn must return a scalar, got shape {tuple(loss.shape)}.")
    return loss

  grads = jax.grad(total)(_zeros_over_time(carry, T))
  return jnp.sqrt(jnp.sum(jnp.square(jnp.abs(_flat_over_time(grads, T))), axis=1))  # |.|: complex carries


def state_jacobians(
  cell: _cell.Cell, params: Any, xs: jax.typing.ArrayLike, carry: Any = None, **options: Any
) -> jax.Array:
  """The Jacobians ``∂s_T/∂sₜ`` for t = 1 … T, with ``jax.jacrev`` through the scan.

  .. math::

     \\frac{\\partial s_T}{\\partial s_t}
       = \\prod_{\\tau = T}^{t+1} \\frac{\\partial s_\\tau}{\\partial s_{\\tau-1}}
       \\quad (\\text{the identity for } t = T)

  computed as the reverse-mode Jacobian of the final state with respect to
  zero perturbations of every intermediate state (``D`` backward passes, not
  ``T``). ``s`` is the flattened carry (``D = H``; ``2H`` for an LSTM, ``h``
  first, then ``c``).

  Args:
    cell, params, xs, carry: as for :func:`jrnn.unroll`.
    options: ``unroll`` and ``remat``, as in :func:`loss_grad_norms`.

  Returns:
    ``[T, D, D]``: entry ``[i, a, b] = ∂(s_T)_a / ∂(s_{i+1})_b``.

  To compile it, mark the cell static: ``jax.jit(state_jacobians,
  static_argnums=0)``.
  """
  xs, carry, opts = _checked(cell, params, xs, carry, "jrnn.diagnostics.state_jacobians", options)
  T = xs.shape[0]

  def final_state(eps):
    c, _ = _perturbed_run(cell, params, xs, carry, eps, opts)
    return ravel_pytree(c)[0]

  jac = jax.jacrev(final_state)(_zeros_over_time(carry, T))  # leaves [D, T, ...]
  D = ravel_pytree(carry)[0].shape[0]
  leaves = jax.tree_util.tree_leaves(jac)
  flat = jnp.concatenate([jnp.reshape(a, (D, T, -1)) for a in leaves], axis=2)  # [D, T, D]
  return jnp.transpose(flat, (1, 0, 2))


def jacobian_norms(
  cell: _cell.Cell, params: Any, xs: jax.typing.ArrayLike, carry: Any = None, *, norm: str = "spectral", **options: Any
) -> jax.Array:
  """``‖∂s_T/∂sₜ‖`` for t = 1 … T (see :func:`state_jacobians`).

  Args:
    cell, params, xs, carry, options: as for :func:`state_jacobians`.
    norm: ``"spectral"`` (the largest singular value: the most any direction
      of an error at step T can keep going back to step t; the quantity in
      Pascanu et al.'s bound) or ``"frobenius"``.

  Returns:
    ``[T]``: row ``i`` is ``‖∂s_T/∂s_{i+1}‖``; the last row is the norm of the
    identity (1, or ``√D`` for Frobenius).

  References:
    Bengio, Simard & Frasconi, "Learning long-term dependencies with gradient
    descent is difficult", IEEE Trans. Neural Networks 5(2) (1994).
    Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
    networks", ICML (2013).
  """
  if norm not in _NORMS:
    raise ValueError(f"jrnn.diagnostics.jacobian_norms: norm must be one of {_NORMS}, got {norm!r}.")
  jac = state_jacobians(cell, params, xs, carry, **options)
  if norm == "spectral":
    return jnp.linalg.svd(jac, compute_uv=False)[:, 0]
  return jnp.sqrt(jnp.sum(jnp.square(jac), axis=(1, 2)))


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
