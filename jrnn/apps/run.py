"""One training run of an experiment, shared by ``jrnn train`` and ``make demo``.

* :func:`setup_run`: a resolved config -> the experiment, a fresh
  :class:`jrnn.checkpoint.TrainState` and the jitted
  :func:`jrnn.train.make_step` step; with a mesh, data-parallel over it (one
  process or several, each feeding its own rows).
* :func:`checkpoint_metadata`: what the run's checkpoints carry beside the
  arrays (``jrnn generate`` and ``jrnn train --resume`` read it).
* :func:`report`: the final metric beside the task's baselines, as text.
* :func:`write_outputs`: ``history.json`` and ``loss.png`` in a directory.
"""

from __future__ import annotations

import json
import os

import jax
import optax
from jax.sharding import Mesh

from jrnn import checkpoint
from jrnn import distributed
from jrnn import sharding
from jrnn import train
from jrnn.apps import experiments


def optimizer(config: dict) -> optax.GradientTransformation:
  """``optax.adam`` or ``optax.sgd`` at ``config["lr"]``, as ``config["optimizer"]`` says."""
  return (optax.adam if config["optimizer"] == "adam" else optax.sgd)(config["lr"])


def setup_run(config: dict, *, mesh: Mesh | None = None):
  """Experiment, fresh TrainState and jitted step for a resolved config (:func:`experiments.resolve`).

  Args:
    config: the resolved config.
    mesh: train data-parallel over this mesh (:func:`jrnn.sharding.data_mesh`;
      in a multi-process run it spans every process's devices). Each process
      then builds only its rows of every batch (:func:`jrnn.distributed.process_rows`),
      params and optimizer state are replicated on the mesh and the carry of
      stateful training is split over it. Default: one device, ``jax.jit``.

  Returns:
    ``(exp, state, step)``: the :class:`experiments.Experiment`, a
    ``TrainState(0, params, opt_state, data_key, carry)`` and
    ``jax.jit(jrnn.train.make_step(exp.loss_fn, optimizer(config), ...))``
    (with a mesh, ``make_step(..., mesh=mesh)``; ``has_rng=True`` where
    ``exp.key`` is set: pass ``key=exp.key`` to :func:`jrnn.train.fit`).
  """
  k_init, k_data = jax.random.split(jax.random.key(config["seed"]))
  rows = None if mesh is None else distributed.process_rows(config["batch"])
  exp = experiments.build(config, k_data, rows=rows)
  params = exp.init(k_init)
  opt = optimizer(config)
  stateful = exp.initial_carry is not None
  carry = jax.jit(exp.initial_carry)(params) if exp.initial_carry is not None else None
  opt_state = jax.jit(opt.init)(params)  # jit: one compilation
  clip, has_rng = config["clip_norm"], exp.key is not None
  if mesh is None:
    step = jax.jit(train.make_step(exp.loss_fn, opt, clip_norm=clip, has_aux=stateful, has_rng=has_rng))
  else:  # the same seed on every process: identical params, now one replicated global array
    params, opt_state = sharding.replicate((params, opt_state), mesh)
    carry = None if carry is None else sharding.shard_batch(carry, mesh)  # this process's rows -> global
    step = train.make_step(exp.loss_fn, opt, clip_norm=clip, has_aux=stateful, has_rng=has_rng, mesh=mesh)
  return exp, checkpoint.TrainState(0, params, opt_state, k_data, carry), step


def checkpoint_metadata(exp: experiments.Experiment, config: dict) -> dict:
  """The ``metadata`` a run's checkpoints carry beside the arrays (see :func:`jrnn.checkpoint.save`).

  The resolved config rebuilds the run (:func:`setup_run`); the experiment's
  own metadata holds, for chars, the vocabulary that ``jrnn generate`` samples
  over.
  """
  return {"config": config, **(exp.metadata or {})}


def report(exp: experiments.Experiment, metrics: dict) -> str:
  """The final metric beside the baselines, as a few lines of text."""
  value = metrics[exp.metric]
  unit = " nats/char" if exp.task == "chars" else ""
  lines = [f"final {exp.metric}: {value:.4f}{unit}"]
  for name, base in exp.baselines.items():
    verdict = "better" if value < base else "not better"
    lines.append(f"  baseline {name}: {base:.4f}{unit}  ({verdict}; ratio {value / base:.3f})")
  for k, v in metrics.items():
    if k != exp.metric:
      lines.append(f"  {k}: {v:.4f}")
  return "\n".join(lines)


def write_outputs(directory: str, history: dict, exp: experiments.Experiment, config: dict) -> None:
  """``history.json`` and ``loss.png`` in ``directory`` (each written to a temp file, then renamed)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  payload = {
    "config": config,
    "baselines": exp.baselines,
    "metric": exp.metric,
    **{k: [v.item() if hasattr(v, "item") else v for v in vals] for k, vals in history.items()},
  }
  tmp = os.path.join(directory, ".history.json.tmp")
  with open(tmp, "w") as f:
    json.dump(payload, f)
  os.replace(tmp, os.path.join(directory, "history.json"))

  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot(history["step"], history["loss"], lw=0.8, alpha=0.6, label="training loss")
  if len(history.get("eval_step", ())):
    ax.plot(history["eval_step"], history[f"eval_{exp.metric}"], "o-", label=exp.metric)
  for (name, value), style in zip(exp.baselines.items(), ("--", ":", "-.")):
    ax.axhline(value, ls=style, color="gray", label=f"baseline: {name} ({value:.3f})")
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  if exp.task in ("adding", "sunspots", "dogs"):
    ax.set_yscale("log")
  ax.set_title(f"jrnn: {config['cell']}({config['hidden']}) on {exp.task}")
  ax.legend(fontsize=8)
  fig.tight_layout()
  tmp = os.path.join(directory, ".loss.png.tmp.png")
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, os.path.join(directory, "loss.png"))
