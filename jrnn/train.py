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

import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrnn import _checks
from jrnn import sharding


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


class FitResult(NamedTuple):
  """What :func:`fit` returns: the final state and the history as numpy arrays.

  ``history`` holds ``step``, ``loss``, ``grad_norm``, ``skipped`` and ``time``
  (seconds since the loop began) for every step, and ``eval_step`` with one
  ``eval_<name>`` array per value the evaluation function returns.
  """

  params: Any
  opt_state: Any
  history: dict
  carry: Any = None


class NonFiniteLossError(FloatingPointError):
  """Training produced a non-finite loss or gradient.

  ``params``, ``opt_state`` and ``carry`` hold the last state before the bad
  step; ``step`` is the number of that step (0-based); ``loss`` and
  ``grad_norm`` are what it computed.
  """

  def __init__(self, message, *, step, loss, grad_norm, params, opt_state, carry=None):
    super().__init__(message)
    self.step, self.loss, self.grad_norm = step, loss, grad_norm
    self.params, self.opt_state, self.carry = params, opt_state, carry


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
  mesh: jax.sharding.Mesh | None = None,
) -> Callable[..., tuple]:
  """Builds one training step ``(params, opt_state, batch) -> (params, opt_state, metrics)``.

  Args:
    loss_fn: ``(params, batch) -> loss`` (a scalar), or ``-> (loss, aux)``
      with ``has_aux=True``.
    optimizer: any optax ``GradientTransformation``; its state is
      ``optimizer.init(params)`` (clipping and skipping keep no state).
    clip_norm: if given, gradients are rescaled to global norm at most
      ``clip_norm`` before the optimizer sees them.
    skip_nonfinite: if True, a step whose loss or gradient is not finite leaves
      params and optimizer state unchanged and reports ``skipped=True`` (the
      effect of ``optax.apply_if_finite``, without its extra state).
    has_aux: see ``loss_fn``; the step then returns
      ``(params, opt_state, metrics, aux)``.
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
  grad_fn = jax.value_and_grad(loss_fn if has_aux else lambda p, b: (loss_fn(p, b), None), has_aux=True)

  def step(params, opt_state, batch):
    (loss, aux), grads = grad_fn(params, batch)
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


def _check_positive(name, value, allow_zero=False):
  _checks.positive_int(value, name, "jrnn.train.fit", minimum=0 if allow_zero else 1)


def fit(
  step: Callable[..., tuple],
  params: Any,
  opt_state: Any,
  batch_fn: Callable[[int], Any],
  *,
  steps: int,
  start_step: int = 0,
  carry: Any = None,
  eval_fn: Callable[[Any], dict] | None = None,
  eval_every: int = 0,
  save_fn: Callable[[int, Any, Any, Any], None] | None = None,
  save_every: int = 0,
  max_skipped: int = 10,
  progress: bool = True,
  verbose: bool = True,
  desc: str = "train",
) -> FitResult:
  """Runs ``step`` from ``start_step`` up to ``steps``, with a progress bar.

  Args:
    step: from :func:`make_step` (jit it first; ``fit`` calls it as given).
    params, opt_state: the starting state.
    batch_fn: ``i -> batch`` for step ``i`` (0-based). Making the batch a pure
      function of ``i`` (e.g. of ``jax.random.fold_in(key, i)``) makes a
      resumed run see exactly the batches an uninterrupted one would.
    steps: the step number to stop at (the total, not the number of new steps).
    start_step: the step to start from (a restored checkpoint's step).
    carry: for stateful (truncated BPTT) training, the initial carry. The step
      is then called as ``step(params, opt_state, (batch, carry))``, must have
      been built with ``has_aux=True`` and return the next carry as its aux.
      A skipped step keeps the previous carry.
    eval_fn: ``params -> {name: float}``, run every ``eval_every`` steps and
      after the last step.
    save_fn: ``(i, params, opt_state, carry) -> None`` called after step ``i``
      completes (``i`` steps done) every ``save_every`` steps and at the end:
      the place for :func:`jrnn.checkpoint.save`.
    max_skipped: with a step that skips non-finite updates, raise after this
      many consecutive skips.
    progress: show a tqdm progress bar (on stderr) with the loss and steps/s.
    verbose: print a line with each evaluation's results.
    desc: the progress bar's label.

  Returns:
    A :class:`FitResult`.

  Raises:
    NonFiniteLossError: if a step's loss or gradient is not finite (and the
      step did not skip it), or after ``max_skipped`` consecutive skips. The
      error carries the last finite state.

  Example:
    Gradient descent on ``‖w − batch‖²``, the same batch at every step,
    evaluated every 25 steps:

    >>> import jax, jax.numpy as jnp, optax, jrnn
    >>> loss_fn = lambda params, batch: jnp.sum((params["w"] - batch) ** 2)
    >>> optimizer = optax.sgd(0.1)
    >>> step = jax.jit(jrnn.train.make_step(loss_fn, optimizer))
    >>> params = {"w": jnp.zeros(2)}
    >>> result = jrnn.train.fit(step, params, optimizer.init(params), lambda i: jnp.array([3.0, -1.0]),
    ...                         steps=50, eval_fn=lambda p: {"w0": p["w"][0]}, eval_every=25,
    ...                         progress=False, verbose=False)
    >>> result.history["loss"].shape, result.history["eval_step"].tolist()
    ((50,), [25, 50])
    >>> [round(float(w), 3) for w in result.params["w"]]
    [3.0, -1.0]
  """
  from tqdm import tqdm

  _check_positive("steps", steps)
  _check_positive("start_step", start_step, allow_zero=True)
  _check_positive("eval_every", eval_every, allow_zero=True)
  _check_positive("save_every", save_every, allow_zero=True)
  if start_step >= steps:
    raise ValueError(f"jrnn.train.fit: start_step ({start_step}) must be below steps ({steps}); nothing to do.")
  stateful = carry is not None
  rows = {"step": [], "loss": [], "grad_norm": [], "skipped": [], "time": []}
  evals: dict[str, list] = {"eval_step": []}

  def evaluate(fn, i, bar):
    values = {k: float(v) for k, v in fn(params).items()}
    evals["eval_step"].append(i)
    for k, v in values.items():
      evals.setdefault(f"eval_{k}", []).append(v)
    if verbose:
      bar.write(f"step {i}: " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
      sys.stdout.flush()  # so that a log file follows the run

  start = time.perf_counter()
  consecutive_skips = 0
  with tqdm(
    total=steps, initial=start_step, desc=desc, unit="step", disable=not progress, dynamic_ncols=True, leave=True
  ) as bar:
    for i in range(start_step, steps):
      batch = batch_fn(i)
      if stateful:
        new_params, new_opt_state, metrics, new_carry = step(params, opt_state, (batch, carry))
      else:
        (new_params, new_opt_state, metrics), new_carry = step(params, opt_state, batch), None
      loss, grad_norm, skipped = (np.asarray(m) for m in jax.device_get(tuple(metrics)))
      finite = bool(np.isfinite(loss) and np.isfinite(grad_norm))
      consecutive_skips = consecutive_skips + 1 if skipped else 0
      if (not finite and not skipped) or consecutive_skips > max_skipped:
        why = (
          f"{consecutive_skips} consecutive steps were skipped as non-finite"
          if skipped
          else "the update was not applied"
        )
        raise NonFiniteLossError(
          f"jrnn.train.fit: non-finite loss {float(loss)} (gradient norm {float(grad_norm)}) at step {i}; "
          f"{why}. Try a smaller learning rate, clip_norm, or skip_nonfinite=True. The error's .params "
          "hold the last finite state.",
          step=i,
          loss=float(loss),
          grad_norm=float(grad_norm),
          params=params,
          opt_state=opt_state,
          carry=carry,
        )
      params, opt_state = new_params, new_opt_state
      if stateful and not skipped:
        carry = new_carry
      rows["step"].append(i)
      rows["loss"].append(loss)
      rows["grad_norm"].append(grad_norm)
      rows["skipped"].append(bool(skipped))
      rows["time"].append(time.perf_counter() - start)
      bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
      bar.update(1)
      done = i + 1
      if eval_fn is not None and ((eval_every and done % eval_every == 0) or done == steps):
        evaluate(eval_fn, done, bar)
      if save_fn is not None and ((save_every and done % save_every == 0) or done == steps):
        save_fn(done, params, opt_state, carry)

  history = {
    "step": np.asarray(rows["step"], np.int64),
    "loss": np.asarray(rows["loss"], np.float64),
    "grad_norm": np.asarray(rows["grad_norm"], np.float64),
    "skipped": np.asarray(rows["skipped"], bool),
    "time": np.asarray(rows["time"], np.float64),
  }
  history.update({k: np.asarray(v, np.int64 if k == "eval_step" else np.float64) for k, v in evals.items()})
  return FitResult(params, opt_state, history, carry)
