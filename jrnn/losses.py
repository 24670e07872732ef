r"""Losses over sequences, with optional masks.

Both losses average over the valid positions (and, for MSE, over the output
features), as the seeds write them:

.. math::

   \mathcal{L}_{\mathrm{MSE}} = \frac{1}{T n} \sum_{t=1}^{T} \sum_{i=1}^{n} (y_{t,i} - \hat y_{t,i})^2,
   \qquad
   \mathcal{L}_{\mathrm{CE}} = -\frac{1}{T} \sum_{t=1}^{T} \log \mathrm{softmax}(z_t)_{k_t}

With a mask the sums run over positions where it is True and ``T`` becomes
their count (a fully masked input gives 0, not NaN).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.core import Tracer

__all__ = (
  "mse",
  "softmax_cross_entropy",
)


def _check_mask(fn, mask, batch_shape):
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_:
    raise TypeError(f"{fn}: mask must be boolean, got dtype {mask.dtype}; use mask.astype(bool).")
  if mask.shape != tuple(batch_shape):
    raise ValueError(f"{fn}: mask must have shape {tuple(batch_shape)}, got {tuple(mask.shape)}.")
  return mask


def _masked_mean(values, mask):
  """Mean of ``values`` over positions where ``mask`` is True (0 when none are)."""
  if mask is None:
    return jnp.mean(values)
  total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
  count = jnp.sum(mask).astype(values.dtype)
  return total / jnp.maximum(count, 1)


def mse(
  pred: jax.typing.ArrayLike, target: jax.typing.ArrayLike, mask: jax.typing.ArrayLike | None = None
) -> jax.Array:
  """Mean squared error, averaged over valid positions and output features.

  Args:
    pred: predictions ``[..., n]``.
    target: targets, the same shape as ``pred``.
    mask: optional boolean ``pred.shape[:-1]`` (e.g. ``[T]``).

  Returns:
    A scalar.

  Example:
    Errors of 1 and 3 in two features give (1 + 9) / 2 = 5 per position; the
    masked second position does not count:

    >>> import jax.numpy as jnp
    >>> import jrnn
    >>> pred = jnp.array([[1.0, 3.0], [100.0, 100.0]])
    >>> float(jrnn.losses.mse(pred, jnp.zeros((2, 2)), jnp.array([True, False])))
    5.0
  """
  pred, target = jnp.asarray(pred), jnp.asarray(target)
  if pred.shape != target.shape:
    raise ValueError(
      f"jrnn.losses.mse: pred has shape {tuple(pred.shape)} but target has "
      f"shape {tuple(target.shape)}; they must match."
    )
  if not (jnp.issubdtype(pred.dtype, jnp.floating) and jnp.issubdtype(target.dtype, jnp.floating)):
    raise TypeError(f"jrnn.losses.mse: pred and target must be floating, got {pred.dtype} and {target.dtype}.")
  if pred.ndim == 0:
    raise ValueError("jrnn.losses.mse: pred must have at least one (feature) axis, got a scalar.")
  per_position = jnp.mean(jnp.square(pred - target.astype(pred.dtype)), axis=-1)
  if mask is not None:
    mask = _check_mask("jrnn.losses.mse", mask, pred.shape[:-1])
  return _masked_mean(per_position, mask)


def _check_labels_in_range(fn, int_labels, num_classes, mask):
  """Raises if a concrete label at a valid position lies outside ``[0, num_classes)``.

  Does nothing when the labels (or the mask) are tracers, as under ``jit``,
  ``vmap`` or ``grad`` with respect to them: their values are not known then.
  """
  if isinstance(int_labels, Tracer) or isinstance(mask, Tracer):
    return
  labels = np.asarray(int_labels)
  bad = (labels < 0) | (labels >= num_classes)
  if mask is not None:
    bad &= np.asarray(mask)
  if not bad.any():
    return
  where = np.argwhere(bad)
  values = np.unique(labels[bad])
  shown = ", ".join(str(v) for v in values[:5]) + (", ..." if values.size > 5 else "")
  raise ValueError(
    f"{fn}: int_labels must lie in [0, num_classes) = [0, {num_classes}) at every "
    f"{'unmasked ' if mask is not None else ''}position, got {shown} at {len(where)} position(s), "
    f"the first at index {tuple(int(i) for i in where[0])}."
  )


def softmax_cross_entropy(
  logits: jax.typing.ArrayLike, int_labels: jax.typing.ArrayLike, mask: jax.typing.ArrayLike | None = None
) -> jax.Array:
  r"""Cross-entropy of integer labels under ``softmax(logits)``, averaged over valid positions.

  .. math::

     \ell_t = \log \sum_{j} e^{z_{t,j}} - z_{t,k_t}, \qquad
     \mathcal{L} = \frac{1}{|M|} \sum_{t \in M} \ell_t

  with ``M`` the positions where ``mask`` is True (all of them without a mask).

  Labels must lie in ``[0, num_classes)`` at every valid position; a masked
  position may hold anything (e.g. a padding id of -1). When the labels are
  concrete (an eager call, or ``jax.grad`` with respect to the logits only), an
  out-of-range label at a valid position raises a ValueError naming it. Under
  ``jax.jit`` (or ``vmap``) the labels are abstract and cannot be checked: the
  loss is then NaN if any valid position holds an out-of-range label, so the
  mistake shows (and :func:`jrnn.train.fit` stops on it) instead of giving a
  wrong number. (``optax.softmax_cross_entropy_with_integer_labels`` alone,
  with jax 0.10, reads a label ``-C <= k < 0`` as class ``C + k``, as NumPy
  indexing does, and gives a finite, wrong loss; other out-of-range labels give
  NaN.)

  Args:
    logits: unnormalised scores ``[..., num_classes]``, floating.
    int_labels: integer class indices ``logits.shape[:-1]``.
    mask: optional boolean ``logits.shape[:-1]``.

  Returns:
    A scalar, in nats.

  Raises:
    ValueError: for mismatched shapes, or a concrete out-of-range label at a
      valid position.
    TypeError: for non-integer labels, non-floating logits or a non-boolean mask.

  Example:
    Uniform logits over four classes cost ``log 4`` nats whatever the labels;
    the padding label -1 is masked out:

    >>> import jax.numpy as jnp
    >>> import jrnn
    >>> logits = jnp.zeros((3, 4))
    >>> labels = jnp.array([0, 3, -1])
    >>> mask = jnp.array([True, True, False])
    >>> loss = jrnn.losses.softmax_cross_entropy(logits, labels, mask)
    >>> round(float(loss), 6), round(float(jnp.log(4.0)), 6)
    (1.386294, 1.386294)
    >>> jrnn.losses.softmax_cross_entropy(logits, jnp.array([0, 3, 4]))
    Traceback (most recent call last):
      ...
    ValueError: jrnn.losses.softmax_cross_entropy: int_labels must lie in [0, num_classes) = [0, 4) ...
    got 4 at 1 position(s), the first at index (2,).
  """
  logits, int_labels = jnp.asarray(logits), jnp.asarray(int_labels)
  fn = "jrnn.losses.softmax_cross_entropy"
  if not jnp.issubdtype(int_labels.dtype, jnp.integer):
    raise TypeError(f"{fn}: int_labels must be integers (class indices), got dtype {int_labels.dtype}.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"{fn}: logits must be floating, got dtype {logits.dtype}.")
  if logits.ndim == 0 or int_labels.shape != logits.shape[:-1]:
    raise ValueError(
      f"{fn}: int_labels must have shape logits.shape[:-1] = {tuple(logits.shape[:-1])}, "
      f"got {tuple(int_labels.shape)} (logits {tuple(logits.shape)})."
    )
  if mask is not None:
    mask = _check_mask(fn, mask, logits.shape[:-1])
  num_classes = logits.shape[-1]
  _check_labels_in_range(fn, int_labels, num_classes, mask)
  per_position = optax.softmax_cross_entropy_with_integer_labels(logits, int_labels)
  # Under jit the check above cannot run: make every out-of-range label NaN (optax
  # wraps -C <= k < 0 around to class C + k), so that it cannot pass unnoticed.
  in_range = (int_labels >= 0) & (int_labels < num_classes)
  per_position = jnp.where(in_range, per_position, jnp.asarray(jnp.nan, per_position.dtype))
  return _masked_mean(per_position, mask)
