"""The computations behind :mod:`jrnn.diagnostics`: state Jacobians and loss gradients by autodiff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jrnn import _cell
from jrnn import _checks
from jrnn import _options
from jrnn import _scans

NORMS = ("spectral", "frobenius")


def _checked(cell, params, xs, carry, fn, options, needs_readout=False):
  """Checks the inputs and options; returns ``(xs, carry, options)``."""
  options = _options.make(fn, ("unroll", "remat", "precision"), **options)
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

  with _options.matmul_precision(options.precision):
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
    options: ``unroll``, ``remat`` and ``precision`` (of the cell's products
      and of ``loss_fn``'s), as in :func:`jrnn.unroll` (the other
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
    with _options.matmul_precision(opts.precision):
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
    options: ``unroll``, ``remat`` and ``precision``, as in
      :func:`loss_grad_norms`.

  Returns:
    ``[T, D, D]``: entry ``[i, a, b] = ∂(s_T)_a / ∂(s_{i+1})_b``.

  To compile it, mark the cell static: ``jax.jit(state_jacobians,
  static_argnums=0)``.
  """
  fn = "jrnn.diagnostics.state_jacobians"
  xs, carry, opts = _checked(cell, params, xs, carry, fn, options)
  if any(jnp.iscomplexobj(c) for c in jax.tree_util.tree_leaves(carry)):
    raise ValueError(
      f"{fn}: {cell.name}'s carry is complex; the state Jacobian is defined here for real carries only "
      "(loss_grad_norms works for complex carries)."
    )
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
  if norm not in NORMS:
    raise ValueError(f"jrnn.diagnostics.jacobian_norms: norm must be one of {NORMS}, got {norm!r}.")
  jac = state_jacobians(cell, params, xs, carry, **options)
  if norm == "spectral":
    return jnp.linalg.svd(jac, compute_uv=False)[:, 0]
  return jnp.sqrt(jnp.sum(jnp.square(jac), axis=(1, 2)))
