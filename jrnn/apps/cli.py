"""The ``jrnn`` command: train a recurrent net on a task, resume it, sample from it.

::

  jrnn train --task adding --cell lstm                  # the task's defaults
  jrnn train --task chars --steps 2000 --checkpoint-dir runs/chars
  jrnn train --task chars --steps 4000 --checkpoint-dir runs/chars --resume
  jrnn train --task copy --seq-len 1000 --remat sqrt --vjp fused   # how the scan runs
  jrnn train --task chars --precision highest           # float32 matmuls on TPU
  jrnn train --task dates --attention none              # the plain encoder-decoder, for comparison
  jrnn generate --checkpoint-dir runs/chars --prime "def " --length 300 --temperature 0.8
  jrnn train --task words --dropout 0 --train-tokens 500000   # the word-level LM, without dropout

  # one process per host (or two on one machine); the same command in each, but the id
  jrnn train --task adding --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
  jrnn train --task adding --distributed   # Cloud TPU, SLURM, Open MPI: JAX finds the rest

``train`` prints a progress bar and the evaluations, then the final metric
beside the task's baselines (and, for ``chars`` and ``words``, a sample); it leaves
``history.json`` and ``loss.png`` beside the checkpoints. ``--steps`` is the
total: ``--resume`` trains from the last checkpoint up to it. ``--scan``,
``--projection``, ``--remat``, ``--vjp``, ``--precision`` and ``--kernel`` are
:func:`jrnn.unroll`'s options for every sequence the model reads
(``--precision`` for the head's product too); like the model's flags they are
saved in the checkpoint and ``--resume`` keeps them (a checkpoint saved before
an option existed resumes with its default). Bad flags and impossible
combinations print one line on stderr and exit with status 2.

Multi-process training (``--distributed``, or ``--coordinator``,
``--num-processes`` and ``--process-id``; see ``docs/distributed.md``) joins
the run with :func:`jrnn.distributed.initialize` before JAX starts and trains
data-parallel over every process's devices (:mod:`jrnn.sharding`): each
process builds only its rows of each batch, ``--batch`` is the global batch
(a multiple of the number of devices) and the result equals one process on
the same batch, up to the order of float32 sums. Only process 0 prints, plots
and writes ``history.json``; every process takes part in each checkpoint,
which ``--checkpoint-dir`` (the same shared path on every host) receives whole
or not at all, and ``--resume`` works as in one process. A process that never
joins, dies, or fails stops the others, each with one line on stderr naming
what happened (status 1), within ``--init-timeout`` or ``--heartbeat-timeout``
seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence

_CONFIG_FLAGS = (
  "task",
  "cell",
  "hidden",
  "batch",
  "lr",
  "optimizer",
  "seq_len",
  "seed",
  "clip_norm",
  "scan",
  "projection",
  "remat",
  "vjp",
  "precision",
  "kernel",
  "attention",
  "layers",
  "dropout",
  "train_tokens",
  "eval_tokens",
)


class UsageError(Exception):
  """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UsageError(message)


def _remat(text: str):
  """``--remat``: none, step, sqrt or a positive int (the chunk length)."""
  if text in ("none", "step", "sqrt"):
    return text
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be none, step, sqrt or a positive integer (chunk length), got {text!r}")
  return value


def _parser() -> argparse.ArgumentParser:
  from jrnn.apps import experiments

  parser = _Parser(prog="jrnn", description="Train and sample recurrent neural networks written in JAX.")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  t = sub.add_parser("train", help="train a model on a task (defaults depend on the task)")
  t.add_argument("--task", required=True, choices=experiments.TASKS)
  t.add_argument("--cell", choices=sorted(experiments.CELLS))
  t.add_argument("--hidden", type=int, help="hidden size")
  t.add_argument("--steps", type=int, help="total number of optimizer steps")
  t.add_argument("--batch", type=int, help="sequences per step")
  t.add_argument("--lr", type=float, help="learning rate")
  t.add_argument("--optimizer", choices=("sgd", "adam"))
  t.add_argument(
    "--seq-len",
    type=int,
    help="sequence length (adding: T; copy: blanks T; chars: TBPTT window; sunspots: window of years; "
    "reverse: the longest training string)",
  )
  t.add_argument(
    "--attention",
    choices=("none", "additive", "dot", "general"),
    help="dates, reverse: the decoder's attention (default additive; none: the plain encoder-decoder)",
  )
  t.add_argument("--layers", type=int, help="words: stacked recurrent layers (default 2)")
  t.add_argument(
    "--dropout", type=float, help="words: drop probability of every non-recurrent connection (default 0.5; 0: none)"
  )
  t.add_argument(
    "--train-tokens", type=int, help="words: train on the first N tokens of the training split (default: all)"
  )
  t.add_argument(
    "--eval-tokens", type=int, help="words: score the first N tokens of the validation and test splits (default: all)"
  )
  t.add_argument("--clip-norm", type=float, help="clip gradients to this global norm")
  t.add_argument("--seed", type=int, help="seed of the initial params and the data (default 0)")
  t.add_argument(
    "--scan",
    choices=experiments.SCANS,
    help="sequential lax.scan, or the associative scan for cells linear in the carry (default auto)",
  )
  t.add_argument(
    "--projection",
    choices=experiments.PROJECTIONS,
    help="input projection hoisted out of the scan or per step (default auto: by backend)",
  )
  t.add_argument(
    "--remat",
    type=_remat,
    metavar="{none,step,sqrt,K}",
    help="gradient checkpointing of the scan: none (default), every step, sqrt(T) chunks or chunks of K steps",
  )
  t.add_argument(
    "--vjp",
    choices=experiments.VJPS,
    help="backward pass: autodiff through the scan (default) or the fused hand-written BPTT",
  )
  t.add_argument(
    "--precision",
    choices=experiments.PRECISIONS,
    help="precision of every matrix product (default: JAX's; float32 on TPU is one bfloat16 pass unless highest)",
  )
  t.add_argument(
    "--kernel",
    choices=experiments.KERNELS,
    help="what runs the recurrence: auto (default: a fused kernel where it applies and was measured faster, else the "
    "XLA scan), xla, cudnn (an LSTM on a GPU) or cpu (elman, gru, lstm: jrnn's compiled CPU kernel)",
  )
  t.add_argument("--checkpoint-dir", help="where checkpoints, history.json and loss.png go (default runs/TASK)")
  t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --checkpoint-dir")
  t.add_argument("--eval-every", type=int, help="evaluate every N steps")
  t.add_argument("--save-every", type=int, help="checkpoint every N steps (default: at each evaluation)")
  t.add_argument("--no-progress", action="store_true", help="no progress bar")
  d = t.add_argument_group("multi-process training (docs/distributed.md)")
  d.add_argument(
    "--distributed",
    action="store_true",
    help="join a multi-process run; without the next three flags JAX discovers them "
    "(Cloud TPU, SLURM, Open MPI, or JAX_COORDINATOR_ADDRESS)",
  )
  d.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (implies --distributed)")
  d.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
  d.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0 to N-1")
  d.add_argument(
    "--init-timeout",
    type=float,
    default=300.0,
    metavar="S",
    help="seconds to wait for every process to join (default 300)",
  )
  d.add_argument(
    "--heartbeat-timeout",
    type=float,
    default=60.0,
    metavar="S",
    help="seconds of silence after which another process counts as dead (default 60)",
  )
  sub.add_parser(
    "bench", help="time jrnn vs Flax vs PyTorch across sequence lengths (jrnn bench --help)", add_help=False
  )
  g = sub.add_parser("generate", help="sample text from a chars or words checkpoint")
  g.add_argument("--checkpoint-dir", required=True)
  g.add_argument("--prime", default="\n", help="text the model reads first (default: a newline)")
  g.add_argument("--length", type=int, default=300)
  g.add_argument("--temperature", type=float, default=1.0)
  g.add_argument("--seed", type=int, default=0)
  return parser


def _resolve_train_config(args):
  from jrnn import checkpoint
  from jrnn.apps import experiments

  given = {k: getattr(args, k) for k in _CONFIG_FLAGS}
  given.update(steps=args.steps, eval_every=args.eval_every)
  if args.save_every is not None and args.save_every < 1:
    raise UsageError(f"--save-every must be a positive integer, got {args.save_every}.")
  directory = args.checkpoint_dir or os.path.join("runs", args.task)
  last = checkpoint.latest_step(directory)
  if args.resume:
    if last is None:
      raise UsageError(f"--resume: no checkpoint to resume in {directory}.")
    try:
      saved = checkpoint.read_metadata(directory)["config"]
    except (checkpoint.CheckpointError, KeyError) as e:
      raise UsageError(f"--resume: cannot read the checkpoint in {directory}: {e}") from None
    for k in _CONFIG_FLAGS:
      was = saved.get(k, experiments.OPTION_DEFAULTS.get(k))  # saved before the option existed: its default
      if given[k] is not None and given[k] != was:
        flag = "--" + k.replace("_", "-")
        raise UsageError(
          f"--resume: {flag} {given[k]} differs from the checkpoint's {was} (leave {flag} out to keep it)."
        )
    config = dict(saved)
    config.update({k: v for k, v in given.items() if k in ("steps", "eval_every") and v is not None})
    if config["steps"] <= last:
      raise UsageError(
        f"--resume: the checkpoint in {directory} is already at step {last}; pass --steps larger than {last}."
      )
  else:
    if last is not None:
      raise UsageError(
        f"{directory} already has a checkpoint (step {last}); pass --resume to continue it "
        "or choose another --checkpoint-dir."
      )
    config = given
  try:
    config = experiments.resolve(config)
  except experiments.ConfigError as e:
    raise UsageError(str(e)) from None
  return config, directory


def _previous_history(directory, upto):
  """Rows of an earlier ``history.json`` for steps before ``upto`` (so a resumed run's history is whole)."""
  try:
    with open(os.path.join(directory, "history.json")) as f:
      old = json.load(f)
  except (OSError, ValueError):
    return {}
  keep = {}
  for name in ("step", "loss", "grad_norm", "skipped", "time"):
    keep[name] = [v for s, v in zip(old.get("step", []), old.get(name, [])) if s < upto]
  evals = [k for k in old if k.startswith("eval_") and k != "eval_step"]
  for name in ["eval_step"] + evals:
    keep[name] = [v for s, v in zip(old.get("eval_step", []), old.get(name, [])) if s <= upto]
  return keep


def _distributed_args(args):
  """The ``(coordinator, num_processes, process_id)`` to join with, or None for a run of one process."""
  given = (args.coordinator, args.num_processes, args.process_id)
  if not args.distributed and all(v is None for v in given):
    return None
  if any(v is None for v in given) and any(v is not None for v in given):
    raise UsageError(
      "--coordinator, --num-processes and --process-id go together (or pass --distributed alone "
      "where JAX discovers them: Cloud TPU, SLURM, Open MPI)."
    )
  _, n, i = given
  if n is not None and n < 1:
    raise UsageError(f"--num-processes must be a positive integer, got {n}.")
  if n is not None and i is not None and not 0 <= i < n:
    raise UsageError(f"--process-id must be between 0 and {n - 1}, got {i}.")
  for flag, value in (("--init-timeout", args.init_timeout), ("--heartbeat-timeout", args.heartbeat_timeout)):
    if not (math.isfinite(value) and value > 0):
      raise UsageError(f"{flag} must be a positive number of seconds, got {value}.")
  return given


_JOINED: list[str] = []  # the checkpoint directory of the multi-process run this process joined, if any


def _resume_hint(directory) -> str:
  from jrnn import checkpoint

  last = checkpoint.latest_step(directory)
  return f" The last checkpoint (step {last}) in {directory} resumes with --resume." if last is not None else ""


def _join(joining, args, directory):
  """Joins the multi-process run ``joining`` (from :func:`_distributed_args`); returns the mesh over its devices."""
  from jrnn import distributed
  from jrnn import sharding

  coordinator, num_processes, process_id = joining

  def on_failure(message):
    print(f"jrnn: error: {message}{_resume_hint(directory)}", file=sys.stderr)

  try:
    distributed.initialize(
      coordinator,
      num_processes,
      process_id,
      initialization_timeout=args.init_timeout,
      heartbeat_timeout=args.heartbeat_timeout,
      on_failure=on_failure,
    )
  except distributed.DistributedError as e:
    raise UsageError(str(e)) from None
  _JOINED.append(directory)
  return sharding.data_mesh()


def cmd_train(args) -> int:
  import jax

  from jrnn import checkpoint
  from jrnn import distributed
  from jrnn import train
  from jrnn.apps import experiments
  from jrnn.apps import run
  from jrnn.apps import wordlm
  from jrnn.tasks import chars

  joining = _distributed_args(args)
  config, directory = _resolve_train_config(args)
  mesh = None if joining is None else _join(joining, args, directory)
  main = distributed.is_main_process()
  say = print if main else (lambda *a, **k: None)  # only process 0 logs
  if mesh is not None and config["batch"] % jax.device_count():
    raise UsageError(
      f"--batch {config['batch']} is the global batch: it must be a multiple of the {jax.device_count()} devices "
      f"of the {jax.process_count()} processes."
    )
  try:
    exp, state, step = run.setup_run(config, mesh=mesh)
  except experiments.ConfigError as e:
    raise UsageError(str(e)) from None
  previous = {}
  if args.resume:
    state = checkpoint.restore(directory, state)
    previous = _previous_history(directory, state.step) if main else {}
    say(f"resumed {directory} at step {state.step}")
  model = f"{config['cell']}({config['hidden']})"
  say(
    f"jrnn train: {model} on {config['task']}, {config['optimizer']} lr={config['lr']}, "
    f"batch {config['batch']}, seq-len {config['seq_len']}, steps {state.step}->{config['steps']}"
  )
  if mesh is not None:
    say(
      f"data-parallel: {jax.process_count()} processes, {jax.device_count()} devices, "
      f"{config['batch'] // jax.process_count()} rows of each batch per process"
    )
  changed = [f"{k}={config[k]}" for k, v in experiments.OPTION_DEFAULTS.items() if config[k] != v]
  if changed:
    say("sequence options: " + ", ".join(changed))
  say("baselines: " + ", ".join(f"{k} {v:.4f}" for k, v in exp.baselines.items()), flush=True)
  save_every = args.save_every or config["eval_every"]
  # Evaluation runs in process 0 alone, on a host copy of the (replicated) params: no collective to wait for.
  local = jax.device_get if mesh is not None else (lambda params: params)

  def save(i, params, opt_state, carry):
    checkpoint.save(
      directory,
      checkpoint.TrainState(i, params, opt_state, state.key, carry),
      metadata={"config": config, **(exp.metadata or {})},
    )

  start = time.perf_counter()
  try:
    out = train.fit(
      step,
      state.params,
      state.opt_state,
      exp.batch_fn,
      steps=config["steps"],
      start_step=state.step,
      carry=state.carry,
      key=exp.key,
      eval_fn=(lambda p: exp.evaluate(local(p), False)) if main else None,
      eval_every=config["eval_every"],
      save_fn=save,
      save_every=save_every,
      progress=main and not args.no_progress,
      verbose=main,
      desc=f"{config['task']} {model}",
    )
  except train.NonFiniteLossError as e:
    last = checkpoint.latest_step(directory)
    kept = f"the last checkpoint (step {last}) is kept" if last is not None else "no checkpoint was written"
    return _fail(
      f"training diverged: loss {e.loss} (gradient norm {e.grad_norm}) at step {e.step}; "
      f"{kept}. Try a smaller --lr or --clip-norm.",
      1,
    )
  elapsed = time.perf_counter() - start
  if not main:
    distributed.shutdown()  # waits for process 0 to finish its outputs
    return 0
  params = local(out.params)
  final = exp.evaluate(params, True)
  history = {k: list(previous.get(k, [])) + list(v) for k, v in out.history.items()}
  print(f"trained {config['steps'] - state.step} steps in {elapsed:.1f} s")
  print(run.report(exp, final))
  if config["task"] == "chars":
    text = chars.generate(
      exp.cell,
      params.cell,
      exp.head,
      params.head,
      (exp.metadata or {})["vocab"],
      "\n",
      300,
      jax.random.key(config["seed"]),
      temperature=0.8,
    )
    print("sample (temperature 0.8):\n" + text)
  if config["task"] == "words":
    text = wordlm.sample_text(
      exp.cell, params, (exp.metadata or {})["vocab"], "", 100, jax.random.key(config["seed"]), temperature=0.8
    )
    print("sample (temperature 0.8):\n" + text)
  history[f"final_{exp.metric}"] = [final[exp.metric]]
  run.write_outputs(directory, history, exp, config)
  print(f"wrote {os.path.join(directory, 'loss.png')} and history.json", flush=True)
  if mesh is not None:
    distributed.shutdown()
  return 0


def cmd_generate(args) -> int:
  import jax

  from jrnn import checkpoint
  from jrnn.apps import run
  from jrnn.tasks import chars

  if args.length < 1:
    raise UsageError(f"--length must be a positive integer, got {args.length}.")
  if not (math.isfinite(args.temperature) and args.temperature > 0):
    raise UsageError(f"--temperature must be positive, got {args.temperature}.")
  if not args.prime:
    raise UsageError("--prime must be at least one character.")
  try:
    meta = checkpoint.read_metadata(args.checkpoint_dir)
  except checkpoint.CheckpointError as e:
    raise UsageError(str(e)) from None
  config = meta.get("config", {})
  if config.get("task") not in ("chars", "words"):
    raise UsageError(
      f"generate needs a chars or words checkpoint; {args.checkpoint_dir} holds a model for "
      f"task {config.get('task', 'unknown')!r}."
    )
  vocab = meta["vocab"]
  if config["task"] == "words":
    from jrnn.apps import wordlm

    exp, state, _ = run.setup_run(config)
    state = checkpoint.restore(args.checkpoint_dir, state)
    try:
      text = wordlm.sample_text(
        exp.cell, state.params, vocab, args.prime, args.length, jax.random.key(args.seed), temperature=args.temperature
      )
    except ValueError as e:  # a prime tokenize cannot read
      raise UsageError(f"--prime: {e}") from None
    print(text)
    return 0
  missing = sorted(set(args.prime) - set(vocab))
  if missing:
    raise UsageError(f"--prime has characters not in the model's vocabulary: {''.join(missing)!r}.")
  exp, state, _ = run.setup_run(config)
  state = checkpoint.restore(args.checkpoint_dir, state)
  text = chars.generate(
    exp.cell,
    state.params.cell,
    exp.head,
    state.params.head,
    vocab,
    args.prime,
    args.length,
    jax.random.key(args.seed),
    temperature=args.temperature,
  )
  print(args.prime + text)
  return 0


def _joined() -> bool:
  """Whether this process is in a multi-process run (without importing JAX for a bad flag)."""
  jax = sys.modules.get("jax")
  return jax is not None and jax.distributed.is_initialized()


def _fail(message: str, status: int) -> int:
  """Prints ``jrnn: error: message``; in a multi-process run also stops the others with it (and never returns)."""
  print(f"jrnn: error: {message}", file=sys.stderr)
  if _joined():
    from jrnn import distributed

    distributed.exit_with_failure(message, status)
  return status


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit status (2 for bad input).

  In a multi-process run, an error ends this process at once (the same one
  line, the same status) after telling the other processes, which stop too.
  """
  from jrnn import checkpoint

  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["bench"]:  # the benchmark has its own flags (jrnn.apps.bench.main)
    from jrnn.apps import bench

    return bench.main(argv[1:])
  try:
    args = _parser().parse_args(argv)
    return cmd_train(args) if args.command == "train" else cmd_generate(args)
  except UsageError as e:
    return _fail(str(e), 2)
  except checkpoint.CheckpointError as e:
    return _fail(str(e), 1)
  except KeyboardInterrupt:
    if _joined():
      return _fail("interrupted; resume from the last checkpoint with --resume", 130)
    print("jrnn: interrupted; resume from the last checkpoint with --resume", file=sys.stderr)
    return 130
  except Exception as e:
    if not _joined():
      raise
    first = (str(e).strip().splitlines() or [""])[0][:300]
    if any(word in first for word in ("Gloo", "Connection reset", "Socket closed")):  # a peer's sockets closed
      hint = _resume_hint(_JOINED[-1]) if _JOINED else ""
      return _fail(
        f"a collective across the processes failed ({first}): another process died, was killed or lost its "
        f"network.{hint}",
        1,
      )
    import traceback

    traceback.print_exc()
    return _fail(f"{type(e).__name__}: {first}", 1)
