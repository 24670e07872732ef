"""Dropout for recurrent networks, as pure functions of a key: on activations, and on recurrent weights.

Both act outside the scan, so they compose with every cell, wrapper, option
and kernel (the fused VJP, cuDNN) without the cell knowing: drop the inputs or
outputs of :func:`jrnn.unroll` with :func:`dropout`, and the weights it runs
with with :func:`weight_drop`, inside the loss, with a fresh key per step.
At evaluation, call neither (or pass ``deterministic=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jrnn import _checks


def _check_rate(rate: Any, fn_name: str) -> float:
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
    raise ValueError(f"{fn_name}: rate must be a number in [0, 1), got {rate!r}.")
  return float(rate)


def _check_key(key: Any, fn_name: str) -> None:
  if not isinstance(key, jax.Array) or not (
    jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape[-1:] == (2,))
  ):
    raise TypeError(f"{fn_name}: key must be a JAX random key (jax.random.key(0)), got {type(key).__name__}.")


def _keep(key, rate, x, shape):
  """``x ⊙ m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)`` of ``shape`` (broadcast against ``x``)."""
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def dropout(
  key: jax.Array,
  rate: float,
  x: jax.typing.ArrayLike,
  *,
  broadcast_axes: Sequence[int] = (),
  deterministic: bool = False,
) -> jax.Array:
  r"""Inverted dropout (Srivastava et al. 2014); with ``broadcast_axes``, variational (locked) dropout.

  .. math::

     \mathrm{dropout}(x)_i = \frac{m_i\, x_i}{1 - p}, \qquad m_i \sim \mathrm{Bernoulli}(1 - p)

  so ``E[dropout(x)] = x``. The mask ``m`` has ``x``'s shape with the axes in
  ``broadcast_axes`` set to 1: one mask value shared along them. Dropping a
  sequence ``[B, T, F]`` with ``broadcast_axes=(1,)`` (or ``(-2,)``) uses the
  same mask at every time step of a sequence, the variational dropout of Gal &
  Ghahramani (2016) on a layer's inputs or outputs (Merity et al. 2018's
  *locked* dropout); Zaremba et al. (2014) drop the non-recurrent connections
  with an independent mask per step (no ``broadcast_axes``).

  Args:
    key: a JAX random key; a new one for every training step.
    rate: the probability ``p`` of dropping an entry, in ``[0, 1)``.
    x: a floating-point array.
    broadcast_axes: axes of ``x`` along which one mask value is shared.
    deterministic: if True, return ``x`` unchanged (evaluation).

  Returns:
    An array of ``x``'s shape and dtype.

  Raises:
    ValueError: for a rate outside ``[0, 1)`` or an axis ``x`` does not have.
    TypeError: for a key that is not a JAX random key.

  References:
    Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, "Dropout: a simple
    way to prevent neural networks from overfitting", JMLR (2014).
    Zaremba, Sutskever & Vinyals, "Recurrent neural network regularization",
    arXiv:1409.2329 (2014).
    Gal & Ghahramani, "A theoretically grounded application of dropout in
    recurrent neural networks", NeurIPS (2016).
    Merity, Keskar & Socher, "Regularizing and optimizing LSTM language models",
    ICLR (2018).

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> xs = jnp.ones((2, 5, 3))                       # [B, T, F]
    >>> d = jrnn.dropout(jax.random.key(0), 0.5, xs, broadcast_axes=(1,))
    >>> bool((d == d[:, :1]).all()), sorted(set(d.ravel().tolist())) <= [0.0, 2.0]   # one mask per sequence
    (True, True)
  """
  fn_name = "jrnn.dropout"
  rate = _check_rate(rate, fn_name)
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.inexact):
    raise TypeError(f"{fn_name}: x must be floating point, got dtype {x.dtype}.")
  axes = []
  for a in broadcast_axes:
    if not (_checks.is_int_at_least(a, -x.ndim) and a < x.ndim):
      raise ValueError(f"{fn_name}: broadcast_axes must be axes of x (rank {x.ndim}), got {tuple(broadcast_axes)}.")
    axes.append(a % x.ndim)
  if deterministic or rate == 0.0:
    return x
  _check_key(key, fn_name)
  shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
  return _keep(key, rate, x, shape)


MODES = ("connection", "unit")


def weight_drop(
  key: jax.Array,
  rate: float,
  params: Any,
  *,
  fields: Sequence[str] = ("wh",),
  mode: str = "connection",
  deterministic: bool = False,
) -> Any:
  r"""DropConnect on a cell's weights (Wan et al. 2013): ``params`` with the named fields dropped.

  With ``mode="connection"`` every entry of each named weight matrix is kept
  with probability ``1 - p`` and scaled by ``1/(1 - p)``: the *weight drop* of
  Merity et al.'s AWD-LSTM (2018) on the recurrent weights ``W_h``. The
  mask is sampled once and used at every time step, so the recurrence stays a
  plain scan (and keeps every kernel: the fused VJP, cuDNN).

  With ``mode="unit"`` one mask value covers each *row* of the matrix, which
  drops units of the state that feeds it:

  .. math::

     (h_{t-1} \odot m) W_h = h_{t-1} (\mathrm{diag}(m) W_h)

  the same mask at every step: Gal & Ghahramani's (2016) variational dropout
  of the recurrent connections, for every gate at once, shared by the
  sequences it is applied to (``jax.vmap`` over per-sequence keys gives each
  sequence its own).

  Every field named in ``fields`` anywhere in ``params`` (a cell's params
  NamedTuple, or the tuples of :func:`jrnn.stack` and
  :func:`jrnn.bidirectional`) gets its own mask.

  Args:
    key: a JAX random key; a new one for every training step.
    rate: the probability ``p`` of dropping, in ``[0, 1)``.
    params: a cell's params.
    fields: the names of the params fields to drop (default the recurrent
      weights ``wh``).
    mode: ``"connection"`` (every entry) or ``"unit"`` (whole rows).
    deterministic: if True, return ``params`` unchanged (evaluation).

  Returns:
    Params of the same structure.

  Raises:
    ValueError: for a rate outside ``[0, 1)``, an unknown ``mode``, or
      ``fields`` that name no field of ``params`` (the message lists those
      it has).
    TypeError: for a key that is not a JAX random key.

  References:
    Wan, Zeiler, Zhang, LeCun & Fergus, "Regularization of neural networks
    using DropConnect", ICML (2013).
    Merity, Keskar & Socher, "Regularizing and optimizing LSTM language models",
    ICLR (2018).
    Gal & Ghahramani, "A theoretically grounded application of dropout in
    recurrent neural networks", NeurIPS (2016).

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.lstm(8)
    >>> params = cell.init(jax.random.key(0), 4)
    >>> dropped = jrnn.weight_drop(jax.random.key(1), 0.5, params, mode="unit")
    >>> rows_gone = (dropped.wh == 0).all(axis=1)
    >>> bool(jnp.allclose(dropped.wh[~rows_gone], 2 * params.wh[~rows_gone])), bool((dropped.wx == params.wx).all())
    (True, True)
  """
  fn_name = "jrnn.weight_drop"
  rate = _check_rate(rate, fn_name)
  if mode not in MODES:
    raise ValueError(f"{fn_name}: mode must be one of {MODES}, got {mode!r}.")
  fields = (fields,) if isinstance(fields, str) else tuple(fields)
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  names = {getattr(entry, "name", None) for path in paths for entry in path}
  missing = [f for f in fields if f not in names]
  if missing:
    found = sorted(n for n in names if isinstance(n, str))
    raise ValueError(f"{fn_name}: fields {missing} are not fields of params; its fields are {found}.")
  if deterministic or rate == 0.0:
    return params
  _check_key(key, fn_name)
  chosen = [i for i, path in enumerate(paths) if getattr(path[-1], "name", None) in fields]
  keys = dict(zip(chosen, jax.random.split(key, len(chosen))))
  leaves, tree = jax.tree_util.tree_flatten(params)
  out = []
  for i, w in enumerate(leaves):
    if i in keys:
      shape = (w.shape[0],) + (1,) * (w.ndim - 1) if mode == "unit" else w.shape
      w = _keep(keys[i], rate, w, shape)
    out.append(w)
  return tree.unflatten(out)
