"""A Flax NNX front: any jrnn cell as an ``nnx.Module``.

``import jrnn`` does not import Flax; ``jrnn.nnx`` is loaded (and Flax with it)
on first use.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jrnn import _cell
from jrnn import _checks
from jrnn import _options
from jrnn import _unroll

__all__ = ("RNN",)


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


class RNN(nnx.Module):
  """A jrnn cell run over time, as a Flax NNX module.

  .. math::

     (c_t, h_t) = \\mathrm{cell}(c_{t-1}, x_t), \\quad t = 1 \\ldots T

  (``t = T … 1`` with ``reverse=True``). The module holds the cell's params
  as :class:`flax.nnx.Param` variables, in the same pytree of NamedTuples that
  ``cell.init`` returns (``ElmanParams``, ``GRUParams``, ``LSTMParams``, tuples
  for :func:`jrnn.stack`, ``BidirectionalParams`` ...), and its ``__call__`` is
  :func:`jrnn.unroll` on them, so it computes exactly what the pure API does:

  * ``RNN(cell, in_features, rngs=rngs)`` holds ``cell.init(rngs.params(),
    in_features)``;
  * ``module(xs, carry, mask=m, reverse=r)`` on one sequence ``xs: [T, I]`` is
    ``jrnn.unroll(cell, module.params, xs, carry, mask=m, reverse=r)``; on a
    batch ``xs: [B, T, I]`` (masks ``[B, T]``, carries with a leading ``B``) it
    is that call under :func:`jax.vmap`;
  * ``module.params`` gives the params back as plain arrays, and
    ``RNN.from_params(cell, params)`` wraps existing ones.

  ``nnx.Optimizer(model, tx, wrt=nnx.Param)``, ``nnx.value_and_grad`` and
  ``nnx.jit`` then see the cell's weights like those of any ``nnx.Linear``; the
  NNX state paths are the NamedTuple field names (``cell_params/wx``, or
  ``cell_params/0/wh`` for the first layer of a stack).

  Args:
    cell: a :class:`jrnn.Cell` (``jrnn.elman``, ``gru``, ``lstm``, ``stack``,
      ``bidirectional`` ...); the params' dtype is the one given to its factory.
    in_features: the input feature size ``I`` (optional with ``params``).
    rngs: the ``nnx.Rngs``; the params are ``cell.init(rngs.params(),
      in_features)``.
    params: existing params to wrap instead (give ``rngs`` or ``params``); see
      :meth:`from_params`.
    return_carry: whether ``__call__`` returns ``(carry, hs)`` rather than
      ``hs`` alone (can be overridden per call).
    options: how the sequence runs, any of :class:`jrnn.Options`' fields
      (``reverse``, ``unroll``, ``scan``, ``projection``, ``remat``,
      ``vjp``, ``precision``), passed to :func:`jrnn.unroll` or
      :func:`jrnn.unroll_batch` on every call (``reverse`` can be overridden
      per call).

  Attributes:
    cell: the :class:`jrnn.Cell`.
    cell_params: the params, a pytree of ``nnx.Param``.
    in_features: ``I``.
    out_features: ``cell.hidden_size``.

  Example::

    from flax import nnx
    import optax

    class Tagger(nnx.Module):
      def __init__(self, rngs):
        self.rnn = jrnn.nnx.RNN(jrnn.gru(32), 8, rngs=rngs)
        self.head = nnx.Linear(32, 5, rngs=rngs)

      def __call__(self, xs, mask):           # xs: [B, T, 8], mask: [B, T]
        return self.head(self.rnn(xs, mask=mask))

    model = Tagger(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, xs, mask, ys):
      def loss_fn(model):
        return jnp.mean((model(xs, mask) - ys) ** 2)
      loss, grads = nnx.value_and_grad(loss_fn)(model)
      optimizer.update(model, grads)
      return loss

    params = model.rnn.params            # jrnn.GRUParams of plain arrays
    carry, hs = jrnn.unroll(model.rnn.cell, params, xs[0])   # same hs as model.rnn(xs[0])

  References:
    Flax NNX basics: https://flax.readthedocs.io/en/latest/nnx_basics.html;
    ``nnx.Optimizer``:
    https://flax.readthedocs.io/en/latest/api_reference/flax.nnx/training/optimizer.html.
  """

  def __init__(
    self,
    cell: _cell.Cell,
    in_features: int | None = None,
    *,
    rngs: nnx.Rngs | None = None,
    params: Any = None,
    return_carry: bool = False,
    **options: Any,
  ):
    name = "jrnn.nnx.RNN"
    if not isinstance(cell, _cell.Cell):
      raise TypeError(f"{name}: cell must be a jrnn.Cell (e.g. jrnn.gru(32)), got {type(cell).__name__}.")
    if (rngs is None) == (params is None):
      raise ValueError(f"{name}: give exactly one of rngs (to initialise the params) and params (to wrap them).")
    if rngs is not None:
      if in_features is None:
        raise ValueError(f"{name}: in_features is needed to initialise the params from rngs.")
      params = cell.init(rngs.params(), _checks.positive_int(in_features, "in_features", name))
    elif in_features is not None and in_features != cell.input_size(params):
      raise ValueError(
        f"{name}: in_features={in_features!r} but the params given expect input_size={cell.input_size(params)}."
      )
    self.options = _options.make(name, **options)
    self.cell = cell
    self.cell_params = nnx.data(jax.tree.map(nnx.Param, params))
    self.in_features = int(cell.input_size(params))
    self.out_features = cell.hidden_size
    self.return_carry = bool(return_carry)

  @classmethod
  def from_params(cls, cell: _cell.Cell, params: Any, *, return_carry: bool = False, **options: Any) -> RNN:
    """Wraps existing params (from ``cell.init``, training or :mod:`jrnn.interop`).

    Same as ``RNN(cell, params=params)``. Each array is held, not copied, in an
    ``nnx.Param``; ``RNN.from_params(cell, p).params`` has the structure and
    values of ``p``.
    """
    return cls(cell, params=params, return_carry=return_carry, **options)

  @property
  def params(self) -> Any:
    """The cell's params as a pytree of plain arrays, as ``cell.init`` returns them."""
    return jax.tree.map(lambda v: v[...], self.cell_params, is_leaf=_is_variable)

  def initial_carry(self, batch_size: int | None = None) -> Any:
    """``cell.initial_carry(params)``, with a leading ``batch_size`` axis if given."""
    carry = self.cell.initial_carry(self.params)
    if batch_size is None:
      return carry
    return jax.tree.map(lambda c: jnp.broadcast_to(c, (batch_size,) + c.shape), carry)

  def __call__(
    self,
    xs: jax.typing.ArrayLike,
    carry: Any = None,
    *,
    mask: jax.typing.ArrayLike | None = None,
    reset: jax.typing.ArrayLike | None = None,
    reverse: bool | None = None,
    return_carry: bool | None = None,
  ):
    """Runs the cell over ``xs``.

    Args:
      xs: one sequence ``[T, in_features]`` or a batch ``[B, T, in_features]``.
      carry: the initial carry (a leading ``B`` on every leaf for a batch);
        ``None`` for zeros.
      mask: optional boolean ``[T]`` (or ``[B, T]``); masked steps keep the
        carry and output zeros, as in :func:`jrnn.unroll`.
      reset: optional boolean ``[T]`` (or ``[B, T]``); the carry is reset to
        the initial one before the steps where it is True, as in
        :func:`jrnn.unroll` (episode or document boundaries).
      reverse: scan from the last step to the first (``hs`` keep their
        order); ``None`` for the module's ``reverse`` option.
      return_carry: overrides the module's ``return_carry`` for this call.

    Returns:
      ``hs`` ``[T, out_features]`` (or ``[B, T, out_features]``), or
      ``(carry, hs)`` when ``return_carry``.
    """
    return_carry = self.return_carry if return_carry is None else return_carry
    options = self.options._asdict()
    if reverse is not None:
      options["reverse"] = bool(reverse)
    xs = jnp.asarray(xs)
    if xs.ndim == 2:
      out_carry, hs = _unroll.unroll(self.cell, self.params, xs, carry, mask=mask, reset=reset, **options)
    elif xs.ndim == 3:
      out_carry, hs = _unroll.unroll_batch(self.cell, self.params, xs, carry, mask=mask, reset=reset, **options)
    else:
      raise ValueError(
        f"jrnn.nnx.RNN: xs must have shape [T, {self.in_features}] or [B, T, {self.in_features}], "
        f"got shape {tuple(xs.shape)} (rank {xs.ndim})."
      )
    return (out_carry, hs) if return_carry else hs
