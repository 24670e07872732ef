"""Losses over sequences, with optional masks.

Both losses average over the valid positions (and, for MSE, over the output
features), as the seeds write them:

.. math::

   \\mathcal{L}_{\\mathrm{MSE}} = \\frac{1}{T n} \\sum_{t=1}^{T} \\sum_{i=1}^{n} (y_{t,i} - \\hat y_{t,i})^2,
   \\qquad
   \\mathcal{L}_{\\mathrm{CE}} = -\\frac{1}{T} \\sum_{t=1}^{T} \\log \\mathrm{softmax}(z_t)_{k_t}

With a mask the sums run over positions where it is True and ``T`` becomes
their count (a fully masked input gives 0, not NaN).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax


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


def mse(pred: jax.typing.ArrayLike, target: jax.typing.ArrayLike,
        mask: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """Mean squared error, averaged over valid positions and output features.

  Args:
    pred: predictions ``[..., n]``.
    target: targets, the same shape as ``pred``.
    mask: optional boolean ``pred.shape[:-1]`` (e.g. ``[T]``).

  Returns:
    A scalar.
  """
  pred, target = jnp.asarray(pred), jnp.asarray(target)
  if pred.shape != target.shape:
    raise ValueError(f"jrnn.losses.mse: pred has shape {tuple(pred.shape)} but target has "
                     f"shape {tuple(target.shape)}; they must match.")
  if not (jnp.issubdtype(pred.dtype, jnp.floating) and jnp.issubdtype(target.dtype, jnp.floating)):
    raise TypeError(f"jrnn.losses.mse: pred and target must be floating, got {pred.dtype} and {target.dtype}.")
  if pred.ndim == 0:
    raise ValueError("jrnn.losses.mse: pred must have at least one (feature) axis, got a scalar.")
  per_position = jnp.mean(jnp.square(pred - target.astype(pred.dtype)), axis=-1)
  if mask is not None:
    mask = _check_mask("jrnn.losses.mse", mask, pred.shape[:-1])
  return _masked_mean(per_position, mask)


def softmax_cross_entropy(logits: jax.typing.ArrayLike, int_labels: jax.typing.ArrayLike,
                          mask: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """Cross-entropy of integer labels under ``softmax(logits)``, averaged over valid positions.

  Args:
    logits: unnormalised scores ``[..., num_classes]``.
    int_labels: integer class indices ``logits.shape[:-1]``.
    mask: optional boolean ``logits.shape[:-1]``.

  Returns:
    A scalar, in nats.
  """
  logits, int_labels = jnp.asarray(logits), jnp.asarray(int_labels)
  fn = "jrnn.losses.softmax_cross_entropy"
  if not jnp.issubdtype(int_labels.dtype, jnp.integer):
    raise TypeError(f"{fn}: int_labels must be integers (class indices), got dtype {int_labels.dtype}.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"{fn}: logits must be floating, got dtype {logits.dtype}.")
  if logits.ndim == 0 or int_labels.shape != logits.shape[:-1]:
    raise ValueError(f"{fn}: int_labels must have shape logits.shape[:-1] = {tuple(logits.shape[:-1])}, "
                     f"got {tuple(int_labels.shape)} (logits {tuple(logits.shape)}).")
  per_position = optax.softmax_cross_entropy_with_integer_labels(logits, int_labels)
  if mask is not None:
    mask = _check_mask(fn, mask, logits.shape[:-1])
  return _masked_mean(per_position, mask)
