"""The ``Cell`` type shared by every recurrent cell in jrnn.

A cell is a NamedTuple of pure functions, in the manner of optax's
``GradientTransformation(init, update)``:

* ``init(key, input_size) -> params``: a pytree of NamedTuples, weights shaped
  (in, out) and applied as ``x @ W``.
* ``initial_carry(params) -> carry``: zeros of the right shape and dtype.
* ``step(params, carry, x) -> (carry, h)``: one time step, ``x: [input_size]``,
  ``h: [hidden_size]``. ``functools.partial(step, params)`` is a ``lax.scan``
  body as it stands.

For speed the step is also split in two, so that :func:`jrnn.unroll` can hoist
the part that does not depend on the carry out of the scan:

* ``project(params, xs) -> ps``: the input projection ``xs @ Wx + b`` for all
  steps at once (one large matrix product, ``xs: [..., input_size]``);
* ``recur(params, carry, p) -> (carry, h)``: the recurrence given one projected
  input row.

so that ``step(params, carry, x) == recur(params, carry, project(params, x))``.

Composite cells (:func:`jrnn.stack`, :func:`jrnn.bidirectional`) instead supply
``sequence``, a whole-sequence runner that :func:`jrnn.unroll` calls directly.

Cells whose recurrence is linear in the carry (:func:`jrnn.min_gru`,
:func:`jrnn.min_lstm`, :func:`jrnn.lru`) also supply ``linear``, the
coefficients of ``c_t = a_t ⊙ c_{t-1} + b_t`` for all steps at once, so that
:func:`jrnn.unroll` can run them with ``jax.lax.associative_scan``, and, where
the output is not the carry itself, ``readout``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Params = Any
Carry = Any


class Cell(NamedTuple):
  """A recurrent cell: pure functions over a parameter pytree.

  Attributes:
    init: ``(key, input_size) -> params``.
    initial_carry: ``(params) -> carry`` (zeros, in the params' dtype).
    step: ``(params, carry, x) -> (carry, h)`` for one time step; ``None`` for
      layers that cannot be stepped one element at a time (bidirectional).
    hidden_size: size of the output ``h`` of each step.
    input_size: ``(params) -> int``, the input feature size the params expect.
    project: ``(params, xs) -> ps``, the carry-independent input projection,
      applied to all time steps at once before the scan.
    recur: ``(params, carry, p) -> (carry, h)``, the recurrence on a projected
      input row.
    sequence: optional whole-sequence runner
      ``(params, carry, xs, mask, options) -> (carry, hs)`` used by composite
      layers, ``options`` a ``jrnn._unroll.Options`` (``reverse``, ``unroll``,
      ``scan``, ``projection``, ``remat``, ``vjp``); when given,
      :func:`jrnn.unroll` delegates to it.
    name: a short name used in error messages.
    linear: optional ``(params, xs) -> (a, b)`` for a cell whose recurrence is
      linear in the carry, ``c_t = a_t ⊙ c_{t-1} + b_t`` elementwise, with
      ``a_t, b_t`` depending on ``x_t`` only: ``a`` and ``b`` are pytrees shaped
      like the carry with a leading ``[T]`` axis (``a`` may also broadcast over
      it, e.g. ``[1, N]``). It may instead return :class:`LogCoefficients`
      (``log a``, ``log b``, for ``a, b > 0``), which :func:`jrnn.unroll` runs as
      a log-space scan. ``recur`` must compute the same recurrence one step at a
      time, so that either algorithm gives the same result.
    readout: optional ``(params, cs, xs) -> hs`` turning the carries of all
      steps ``cs: [T, ...]`` into outputs ``[T, hidden_size]``, for linear cells
      whose output is not the carry (the LRU); ``None`` means ``hs = cs``.
    recurrent: optional ``(params, carry) -> q``, the recurrent product of a
      step, affine in the carry (``h W_h``, plus GRU's ``b_hn``), holding every
      use of the params that ``project`` does not.
    update: optional ``(carry, p, q) -> (carry, h)``, the parameter-free rest
      of the step, so that ``recur(params, c, p) == update(c, p,
      recurrent(params, c))``. With both, ``jrnn.unroll(..., vjp="fused")``
      computes the weight gradients as single matrix products (cuDNN's split).
  """

  init: Callable[..., Params]
  initial_carry: Callable[[Params], Carry]
  step: Optional[Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]]]
  hidden_size: int
  input_size: Callable[[Params], int]
  project: Optional[Callable[[Params, jax.Array], jax.Array]] = None
  recur: Optional[Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]]] = None
  sequence: Optional[Callable[..., tuple[Carry, jax.Array]]] = None
  name: str = "cell"
  linear: Optional[Callable[[Params, jax.Array], tuple[Any, Any]]] = None
  readout: Optional[Callable[[Params, Carry, jax.Array], jax.Array]] = None
  recurrent: Optional[Callable[[Params, Carry], jax.Array]] = None
  update: Optional[Callable[[Carry, jax.Array, jax.Array], tuple[Carry, jax.Array]]] = None


class LogCoefficients(NamedTuple):
  """Coefficients of ``c_t = a_t ⊙ c_{t-1} + b_t`` given as ``log a`` and ``log b``.

  Returned by a cell's ``linear`` to ask :func:`jrnn.unroll` for the log-space
  scan (Heinsen, 2023): ``c_t = A_t c_0 + exp(log A_t + logcumsumexp(log b -
  log A)_t)`` with ``log A_t = Σ_{k≤t} log a_k``, evaluated as an associative
  scan in log space (``logaddexp``) for accuracy. Needs ``a, b > 0``.
  """

  log_a: Any
  log_b: Any


def params_dtype(params: Params) -> jnp.dtype:
  """The floating dtype of a parameter pytree (that of its first leaf)."""
  leaves = jax.tree_util.tree_leaves(params)
  if not leaves:
    raise ValueError("params is an empty pytree; call cell.init(key, input_size) first.")
  return jnp.result_type(leaves[0])


def check_hidden_size(hidden_size: Any, name: str) -> int:
  if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
    raise ValueError(f"{name}: hidden_size must be a positive int, got {hidden_size!r}.")
  return hidden_size


def check_input_size(input_size: Any, name: str) -> int:
  if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
    raise ValueError(f"{name}.init: input_size must be a positive int, got {input_size!r}.")
  return input_size


def check_x(cell_name: str, x: Any, input_size: int, dtype: jnp.dtype, what: str = "x") -> jax.Array:
  """Checks one input row ``x: [input_size]`` and casts it to the params' dtype."""
  x = jnp.asarray(x)
  if x.ndim != 1 or x.shape[0] != input_size:
    raise ValueError(
        f"{cell_name}.step: {what} must have shape ({input_size},) [input_size], got shape "
        f"{tuple(x.shape)}. For a batch, wrap the call in jax.vmap; for a sequence use jrnn.unroll.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"{cell_name}.step: {what} must be a floating array, got dtype {x.dtype}. "
        "One-hot encode integer tokens first (jax.nn.one_hot).")
  return x.astype(dtype)


def projected_cell(*, name, hidden_size, init, initial_carry, project, recur=None, input_size=None,
                   **fields) -> Cell:
  """A :class:`Cell` whose step is ``recur(params, carry, project(params, x))``.

  Builds the public ``step`` (which checks ``x`` and casts it to the params'
  dtype) from the hoistable ``project`` and the ``recur`` that
  :func:`jrnn.unroll` scans. ``input_size`` defaults to ``params.wx.shape[0]``;
  ``fields`` are the optional :class:`Cell` fields (``linear``, ``readout``,
  ``recurrent``, ``update``). Without ``recur``, it is built from
  ``fields["recurrent"]`` and ``fields["update"]``.
  """
  if recur is None:
    recurrent, update = fields["recurrent"], fields["update"]

    def recur(params, carry, p):
      return update(carry, p, recurrent(params, carry))

  if input_size is None:
    def input_size(params):
      return params.wx.shape[0]

  def step(params, carry, x):
    x = check_x(name, x, input_size(params), params_dtype(params))
    return recur(params, carry, project(params, x))

  return Cell(init=init, initial_carry=initial_carry, step=step, hidden_size=hidden_size,
              input_size=input_size, project=project, recur=recur, name=name, **fields)


def affine(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """``x @ w + b`` for ``x: [..., in]``, broadcasting ``b`` explicitly.

  Explicit so that it also runs under ``jax_numpy_rank_promotion="raise"``.
  """
  y = x @ w
  return y + jnp.reshape(b, (1,) * (y.ndim - 1) + b.shape)
