r"""Training: one optimizer step (:func:`make_step`) and the loop around it (:func:`fit`).

A step is backpropagation through time, then an optax update:

.. math::

   g = \nabla_\theta \mathcal{L}(\theta; \mathrm{batch}), \qquad
   g \leftarrow g \cdot \min\left(1, \frac{c}{\lVert g \rVert_2}\right), \qquad
   (u, s) = \mathrm{optimizer.update}(g, s, \theta), \qquad \theta \leftarrow \theta + u

``jax.value_and_grad`` differentiates through the ``lax.scan`` of
:func:`jrnn.unroll`, which is BPTT; the clipping by global norm ``c``
(Pascanu et al., 2013) is optional. Any ``optax.GradientTransformation`` is
accepted (``optax.sgd``, ``optax.adam``, chains, schedules).

Truncated BPTT over a long stream (stateful training) passes the final carry
of one window as the initial carry of the next, without gradients flowing
between windows (Williams & Peng, 1990): give :func:`make_step` a loss that
returns ``(loss, carry)`` with ``has_aux=True`` and :func:`fit` an initial
``carry``.

References:
  Werbos, "Backpropagation through time: what it does and how to do it",
  Proc. IEEE (1990).
  Williams & Peng, "An efficient gradient-based algorithm for on-line training
  of recurrent network trajectories", Neural Computation (1990).
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
  networks", ICML (2013).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jrnn import sharding
from jrnn._fit import FitResult as FitResult
from jrnn._fit import NonFiniteLossError as NonFiniteLossError
from jrnn._fit import fit as fit

__all__ = (
  "FitResult",
  "NonFiniteLossError",
  "StepMetrics",
  "fit",
  "make_step",
)


class StepMetrics(NamedTuple):
  """What one step reports.

  Attributes:
    loss: the loss before the update.
    grad_norm: the global L2 norm of the gradient, before clipping.
    skipped: True where the update was not applied (non-finite loss or
      gradient with ``skip_nonfinite=True``).
  """

  loss: jax.Array
  grad_norm: jax.Array
  skipped: jax.Array


def _global_norm(tree):
  # optax.global_norm is deprecated and optax.tree.norm is newer than our optax floor.
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def make_step(
  loss_fn: Callable[..., Any],
  optimizer: optax.GradientTransformation,
  *,
  clip_norm: float | None = None,
  skip_nonfinite: bool = False,
  has_aux: bool = False,
  has_rng: bool = False,
  mesh: jax.sharding.Mesh | None = None,
) -> Callable[..., tuple]:
  """Builds one training step ``(params, opt_state, batch) -> (params, opt_state, metrics)``.

  Args:
    loss_fn: ``(params, batch) -> loss`` (a scalar), or ``-> (loss, aux)``
      with ``has_aux=True``; ``(params, batch, key) -> ...`` with ``has_rng=True``.
    optimizer: any optax ``GradientTransformation``; its state is
      ``optimizer.init(params)`` (clipping and skipping keep no state).
    clip_norm: if given, gradients are rescaled to global norm at most
      ``clip_norm`` before the optimizer sees them.
    skip_nonfinite: if True, a step whose loss or gradient is not finite leaves
      params and optimizer state unchanged and reports ``skipped=True`` (the
      effect of ``optax.apply_if_finite``, without its extra state).
    has_aux: see ``loss_fn``; the step then returns
      ``(params, opt_state, metrics, aux)``.
    has_rng: the loss draws random numbers (dropout, :func:`jrnn.weight_drop`,
      zoneout): the step is then ``step(params, opt_state, batch, key)`` and
      hands ``key`` to ``loss_fn``. :func:`fit` with ``key=`` passes
      ``jax.random.fold_in(key, i)`` at step ``i``: a fresh key per step, a
      pure function of the run's key and ``i``, so a resumed run draws the
      same masks as an uninterrupted one.
    mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis (e.g.
      :func:`jrnn.sharding.data_mesh`) to train data-parallel: the step is then
      returned jitted, splits the batch over the data axis and keeps params and
      optimizer state replicated (:func:`jrnn.sharding.data_parallel`). Write
      ``loss_fn`` for the global batch (a mean over it); the result equals the
      single-device step's on the same batch up to float32 summation order.

  Returns:
    A pure, jittable step function (jitted already when ``mesh`` is given);
    ``metrics`` is a :class:`StepMetrics`.

  Example:
    One Adam step of an Elman network labelling each step of a sequence:

    >>> import jax, jax.numpy as jnp, optax, jrnn
    >>> cell, head = jrnn.elman(8), jrnn.linear(3)
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> params = (cell.init(k1, 2), head.init(k2, 8))
    >>> batch = (jnp.ones((5, 2)), jnp.array([0, 1, 2, 1, 0]))  # xs [T, 2], labels [T]
    >>> def loss_fn(params, batch):
    ...   xs, labels = batch
    ...   _, logits = jrnn.many_to_many(cell, params[0], head, params[1], xs)
    ...   return jrnn.losses.softmax_cross_entropy(logits, labels)
    >>> optimizer = optax.adam(1e-2)
    >>> step = jax.jit(jrnn.train.make_step(loss_fn, optimizer, clip_norm=1.0))
    >>> new_params, opt_state, metrics = step(params, optimizer.init(params), batch)
    >>> metrics.loss.shape, bool(loss_fn(new_params, batch) < metrics.loss)
    ((), True)
  """
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(
      "jrnn.train.make_step: optimizer must be an optax.GradientTransformation "
      f"(e.g. optax.adam(1e-3)), got {type(optimizer).__name__}."
    )
  if not callable(loss_fn):
    raise TypeError(f"jrnn.train.make_step: loss_fn must be callable, got {type(loss_fn).__name__}.")
  if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and clip_norm > 0):
    raise ValueError(f"jrnn.train.make_step: clip_norm must be a positive number or None, got {clip_norm!r}.")
  clip = None if clip_norm is None else optax.clip_by_global_norm(float(clip_norm))

  def value(params, batch, key):
    out = loss_fn(params, batch, key) if has_rng else loss_fn(params, batch)
    return out if has_aux else (out, None)

  grad_fn = jax.value_and_grad(value, has_aux=True)

  def step(params, opt_state, batch, *key):
    if len(key) != int(has_rng):
      raise TypeError(
        "jrnn.train.make_step: the step takes (params, opt_state, batch, key) with has_rng=True and "
        f"(params, opt_state, batch) without; has_rng={has_rng}, got {3 + len(key)} arguments."
      )
    (loss, aux), grads = grad_fn(params, batch, key[0] if has_rng else None)
    grad_norm = _global_norm(grads)
    if clip is not None:
      grads, _ = clip.update(grads, clip.init(params))
    # optax's own code (e.g. Adam's bias correction, float ** int32 count) is not
    # written for jax_numpy_dtype_promotion="strict"; let it promote as it expects.
    with jax.numpy_dtype_promotion("standard"):
      updates, new_opt_state = optimizer.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, updates)
    if skip_nonfinite:
      ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
      keep = lambda new, old: jnp.where(ok, new, old)
      new_params = jax.tree_util.tree_map(keep, new_params, params)
      new_opt_state = jax.tree_util.tree_map(keep, new_opt_state, opt_state)
      skipped = jnp.logical_not(ok)
    else:
      skipped = jnp.zeros((), bool)
    metrics = StepMetrics(loss, grad_norm, skipped)
    if has_aux:
      return new_params, new_opt_state, metrics, aux
    return new_params, new_opt_state, metrics

  if mesh is not None:
    return sharding.data_parallel(step, mesh)
  return step
