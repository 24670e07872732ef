r"""The cell contract: a small core, plus one typed value that says how the cell runs.

A :class:`Cell` is a NamedTuple of pure functions, in the manner of optax's
``GradientTransformation(init, update)``:

* ``init(key, input_size) -> params``: a pytree of NamedTuples, weights shaped
  (in, out) and applied as ``x @ W``;
* ``initial_carry(params) -> carry``: zeros of the right shape and dtype;
* ``step(params, carry, x) -> (carry, h)``: one time step, ``x: [input_size]``,
  ``h: [hidden_size]``, so that ``functools.partial(step, params)`` is a
  ``lax.scan`` body as it stands;
* ``hidden_size`` and ``input_size(params)``, and a ``name`` for messages;
* ``kind``: how :func:`jrnn.unroll` may run it, one of

  ==========================  ==================================================
  :class:`Stepwise`           only through ``step``, one step after another
  :class:`Projected`          ``p_t = project(x_t)`` for all steps at once (one
                              big product), then ``c_t = recur(c_{t-1}, p_t)``,
                              ``h_t = readout(c_t, p_t)``
  :class:`AffineRecurrence`   a :class:`Projected` whose carry enters only
                              through ``q_t = recurrent(c_{t-1})``, affine in
                              the carry: ``vjp="fused"`` computes the weight
                              gradients as single products over all steps
  :class:`LinearRecurrence`   a :class:`Projected` with ``c_t = a_t ⊙ c_{t-1} +
                              b_t``: runs as ``lax.associative_scan`` too
  :class:`SequenceLayer`      a whole-sequence runner (``stack``,
                              ``bidirectional``): ``unroll`` calls it directly
  ==========================  ==================================================

Each kind promises an invariant, checked for every cell of the library by
``tests/test_contract.py`` over the registry :data:`jrnn.CELLS`:

.. math::

   \mathrm{step}(c, x) &= (c', \mathrm{readout}(c', p)), \quad
     c' = \mathrm{recur}(c, p), \; p = \mathrm{project}(x) \\
   \mathrm{recur}(c, p) &= \mathrm{update}(c, p, \mathrm{recurrent}(c))
     \quad (\text{AffineRecurrence}) \\
   \mathrm{recur}(c, p) &= a \odot c + b, \quad (a, b) = \mathrm{coefficients}(p)
     \quad (\text{LinearRecurrence})

:func:`make_cell` derives ``step`` from a kind, so the two cannot disagree.

**Wrappers** extend cells: a function that takes a cell (or several) and
returns a cell, as :func:`jrnn.stack`, :func:`jrnn.bidirectional` and
:func:`jrnn.linear_recurrent_block` do (Haiku's ``ResetCore`` and ``DeepRNN``
are the same idea). A wrapper keeps the inner cell's kind where it can, so the
wrapped cell keeps the inner cell's fast paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _checks

Params = Any
Carry = Any


class LogCoefficients(NamedTuple):
  r"""Coefficients of ``c_t = a_t ⊙ c_{t-1} + b_t`` given as ``log a`` and ``log b``.

  Returned by a :class:`LinearRecurrence`'s ``coefficients`` to ask for the
  log-space scan (Heinsen, 2023): ``c_t = A_t c_0 + exp(log A_t +
  logcumsumexp(log b - log A)_t)`` with ``log A_t = Σ_{k≤t} log a_k``,
  evaluated as an associative scan in log space (``logaddexp``) for accuracy.
  Needs ``a, b > 0``.
  """

  log_a: Any
  log_b: Any


class Stepwise(NamedTuple):
  """A cell that runs only through ``cell.step``: nothing in the step can be hoisted out of the scan."""


class Projected(NamedTuple):
  """A step split into a carry-independent input projection and a recurrence on it.

  Attributes:
    project: ``(params, xs) -> ps``, ``xs: [..., input_size]``: the part of the
      step that does not depend on the carry (``x W_x + b``), for any leading
      axes, so all ``T`` steps can be projected at once.
    recur: ``(params, carry, p) -> carry``: the recurrence on one projected row.
    readout: ``(params, carry, p) -> h``: the step's output from the new carry
      (and the projected input); must work with leading axes on both.
  """

  project: Callable[[Params, jax.Array], Any]
  recur: Callable[[Params, Carry, Any], Carry]
  readout: Callable[[Params, Carry, Any], jax.Array]


class AffineRecurrence(NamedTuple):
  """A :class:`Projected` step whose carry enters only through an affine map.

  ``recur(params, c, p) = update(c, p, recurrent(params, c))`` with
  ``recurrent`` affine in ``c`` (``h W_h``, plus GRU's ``b_hn``) holding every
  use of the params that ``project`` does not, and ``update`` and ``output``
  free of params. This is what the fused backward pass needs
  (``jrnn.unroll(..., vjp="fused")``, :mod:`jrnn._fused`).

  Attributes:
    project: as in :class:`Projected`.
    recurrent: ``(params, carry) -> q``.
    update: ``(carry, p, q) -> carry``.
    output: ``(carry) -> h`` (``h`` itself for Elman and GRU, ``carry.h`` for the LSTM).
  """

  project: Callable[[Params, jax.Array], Any]
  recurrent: Callable[[Params, Carry], jax.Array]
  update: Callable[[Carry, Any, jax.Array], Carry]
  output: Callable[[Carry], jax.Array]

  def recur(self, params: Params, carry: Carry, p: Any) -> Carry:
    return self.update(carry, p, self.recurrent(params, carry))

  def readout(self, params: Params, carry: Carry, p: Any) -> jax.Array:
    del params, p
    return self.output(carry)


class LinearRecurrence(NamedTuple):
  """A :class:`Projected` step that is linear in the carry: ``c_t = a_t ⊙ c_{t-1} + b_t``.

  ``a_t, b_t`` depend on ``x_t`` only, so :func:`jrnn.unroll` can also run the
  recurrence as ``lax.associative_scan`` (``scan="associative"``).

  Attributes:
    project: as in :class:`Projected`.
    coefficients: ``(params, ps) -> (a, b)``, pytrees shaped like the carry
      with the leading axes of ``ps`` (``a`` may broadcast over them), or
      :class:`LogCoefficients` for the log-space scan.
    readout: as in :class:`Projected` (``lambda params, c, p: c`` for cells
      whose output is the carry).
  """

  project: Callable[[Params, jax.Array], Any]
  coefficients: Callable[[Params, Any], Any]
  readout: Callable[[Params, Carry, Any], jax.Array]

  def recur(self, params: Params, carry: Carry, p: Any) -> Carry:
    coefficients = self.coefficients(params, p)
    a, b = coefficients
    if isinstance(coefficients, LogCoefficients):
      a, b = jax.tree_util.tree_map(jnp.exp, a), jax.tree_util.tree_map(jnp.exp, b)
    return jax.tree_util.tree_map(lambda a_, c, b_: a_ * c + b_, a, carry, b)


class SequenceLayer(NamedTuple):
  """A layer that runs a whole sequence at once (:func:`jrnn.stack`, :func:`jrnn.bidirectional`).

  Attributes:
    run: ``(params, carry, xs, mask, options) -> (carry, hs)`` on checked
      inputs (``xs: [T, input_size]``, ``mask: [T]`` bool or None) with a
      :class:`jrnn.Options`; it passes the options on to its inner cells
      through ``jrnn.unroll``'s driver. To support ``jrnn.unroll(...,
      reset=...)`` it also takes a keyword ``reset`` (``[T]`` bool, passed
      only when given) and passes it on to the driver as well.
    layers: the cells it is made of, in order (:func:`jrnn.stack`: its
      layers; :func:`jrnn.bidirectional`: forward, backward); empty for a
      layer that does not say. A kernel that runs a known composition at once
      (``kernel="cudnn"``, :func:`jrnn.unroll_batch`) reads it.
  """

  run: Callable[..., tuple[Carry, jax.Array]]
  layers: tuple[Any, ...] = ()


Kind = Stepwise | Projected | AffineRecurrence | LinearRecurrence | SequenceLayer
SPLIT_KINDS = (Projected, AffineRecurrence, LinearRecurrence)


class Cell(NamedTuple):
  """A recurrent cell: pure functions over a parameter pytree, and how it runs.

  Attributes:
    init: ``(key, input_size) -> params``.
    initial_carry: ``(params) -> carry`` (zeros, in the params' dtype).
    step: ``(params, carry, x) -> (carry, h)`` for one time step; ``None``
      only for a :class:`SequenceLayer` that needs the whole sequence
      (:func:`jrnn.bidirectional`).
    hidden_size: size of the output ``h`` of each step.
    input_size: ``(params) -> int``, the input feature size the params expect.
    kind: how the cell runs: :class:`Stepwise`, :class:`Projected`,
      :class:`AffineRecurrence`, :class:`LinearRecurrence` or
      :class:`SequenceLayer` (see :mod:`jrnn._cell`).
    name: a short name used in error messages.
  """

  init: Callable[..., Params]
  initial_carry: Callable[[Params], Carry]
  step: Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]] | None
  hidden_size: int
  input_size: Callable[[Params], int]
  kind: Kind = Stepwise()
  name: str = "cell"


def make_cell(
  kind: Kind,
  *,
  name: str,
  hidden_size: int,
  init: Callable[..., Params],
  initial_carry: Callable[[Params], Carry],
  input_size: Callable[[Params], int] | None = None,
) -> Cell:
  """A :class:`Cell` whose ``step`` is derived from a split ``kind``.

  .. math::

     p = \\mathrm{project}(x), \\quad c' = \\mathrm{recur}(c, p), \\quad
     \\mathrm{step}(c, x) = (c', \\mathrm{readout}(c', p))

  The step checks ``x`` (shape ``[input_size]``, floating) and casts it to the
  params' dtype. ``input_size`` defaults to ``params.wx.shape[0]``.

  Args:
    kind: a :class:`Projected`, :class:`AffineRecurrence` or
      :class:`LinearRecurrence`.
    name, hidden_size, init, initial_carry, input_size: the :class:`Cell` fields.

  Returns:
    The :class:`Cell`.

  Example:
    A cell written from scratch, ``h_t = tanh(x_t W + h_{t-1})`` with no
    recurrent weights:

    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.make_cell(
    ...     jrnn.Projected(project=lambda w, xs: xs @ w,
    ...                    recur=lambda w, h, p: jnp.tanh(p + h),
    ...                    readout=lambda w, h, p: h),
    ...     name="tiny", hidden_size=3, init=lambda key, i: jnp.ones((i, 3)),
    ...     initial_carry=lambda w: jnp.zeros(3), input_size=lambda w: w.shape[0])
    >>> carry, hs = jrnn.unroll(cell, cell.init(None, 2), jnp.ones((4, 2)))
    >>> hs.shape
    (4, 3)
  """
  if not isinstance(kind, SPLIT_KINDS):
    raise TypeError(
      f"jrnn.make_cell: kind must be a jrnn.Projected, AffineRecurrence or LinearRecurrence, "
      f"got {type(kind).__name__}. A Stepwise or SequenceLayer cell is built with jrnn.Cell "
      "and its own step."
    )
  if input_size is None:
    input_size = _input_weights_rows

  def step(params, carry, x):
    x = _checks.check_x(name, x, input_size(params), params_dtype(params))
    p = kind.project(params, x)
    carry = kind.recur(params, carry, p)
    return carry, kind.readout(params, carry, p)

  return Cell(
    init=init,
    initial_carry=initial_carry,
    step=step,
    hidden_size=hidden_size,
    input_size=input_size,
    kind=kind,
    name=name,
  )


params_dtype = _checks.params_dtype


def _input_weights_rows(params: Params) -> int:
  """The default ``input_size(params)``: the rows of ``params.wx``."""
  return params.wx.shape[0]


def trailing(v: jax.Array, x: jax.Array) -> jax.Array:
  """``v`` reshaped to broadcast against ``x`` over ``x``'s trailing axes (``v: [n]``, ``x: [..., n]``).

  Explicit, so that it also runs under ``jax_numpy_rank_promotion="raise"``.
  """
  return jnp.reshape(v, (1,) * (jnp.ndim(x) - jnp.ndim(v)) + jnp.shape(v))


def leading(m: jax.Array, x: jax.Array) -> jax.Array:
  """``m`` reshaped to broadcast against ``x`` over ``x``'s leading axes (``m: [T]``, ``x: [T, ...]``)."""
  return jnp.reshape(m, jnp.shape(m) + (1,) * (jnp.ndim(x) - jnp.ndim(m)))


def matmul(x: jax.Array, w: jax.Array, compute_dtype: Any = None) -> jax.Array:
  """``x @ w``; with a ``compute_dtype``, of ``x`` and ``w`` cast to it, accumulated in ``w``'s dtype.

  The mixed-precision product (Micikevicius et al. 2018): bfloat16 inputs, a
  float32 sum and result (``preferred_element_type``), as tensor cores run it.
  ``None`` (or ``w``'s own dtype) is the plain ``x @ w``.
  """
  if compute_dtype is None or jnp.dtype(compute_dtype) == w.dtype:
    return x @ w
  return jnp.matmul(x.astype(compute_dtype), w.astype(compute_dtype), preferred_element_type=w.dtype)


def affine(x: jax.Array, w: jax.Array, b: jax.Array, compute_dtype: Any = None) -> jax.Array:
  """``x @ w + b`` for ``x: [..., in]``, broadcasting ``b`` explicitly; the product as in :func:`matmul`."""
  y = matmul(x, w, compute_dtype)
  return y + trailing(b, y)
