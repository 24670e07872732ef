"""The training loop, :func:`jrnn.train.fit`: steps, evaluation, checkpoints, and no silent NaN."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from jrnn import _checks


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
  key: jax.Array | None = None,
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
    key: for a step built with ``make_step(..., has_rng=True)`` (dropout and
      the other random regularisers): step ``i`` is called with the extra
      argument ``jax.random.fold_in(key, i)``. Each step draws fresh masks;
      they depend only on ``key`` and ``i``, so the run is deterministic for
      its key and a run resumed at ``start_step`` is bit-identical to an
      uninterrupted one.
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
  if key is not None and not (
    isinstance(key, jax.Array)
    and (jax.numpy.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == np.uint32 and key.shape == (2,)))
  ):
    raise TypeError(
      "jrnn.train.fit: key must be a PRNG key (jax.random.key(seed)) or None, "
      f"got {type(key).__name__} {getattr(key, 'dtype', '')} {getattr(key, 'shape', '')}."
    )
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
      rng = () if key is None else (jax.random.fold_in(key, i),)
      if stateful:
        new_params, new_opt_state, metrics, new_carry = step(params, opt_state, (batch, carry), *rng)
      else:
        (new_params, new_opt_state, metrics), new_carry = step(params, opt_state, batch, *rng), None
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
