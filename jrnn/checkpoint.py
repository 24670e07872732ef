"""Checkpoints of a training run with orbax-checkpoint: params, optimizer state, step, PRNG key.

A checkpoint directory holds one subdirectory per saved step::

  DIR/step_00000100/state/          the pytree, written by orbax's StandardCheckpointer
  DIR/step_00000100/meta.json       step, format, the caller's metadata (e.g. the run's config)
  DIR/step_00000100/MANIFEST.json   SHA-256 of every file above

A save writes everything into a hidden temporary directory ``DIR/.tmp-…``
and renames it to ``step_…`` only when it is complete (a rename is atomic on
POSIX file systems), so a crash or error mid-save leaves the earlier
checkpoints as they were. Older steps are deleted only after the new one is in
place (``keep`` of them remain). A restore checks every file against the
manifest first, so a truncated or altered file gives a :class:`CheckpointError`
that names it, instead of orbax's low-level error or, worse, silently wrong
numbers.

Restoring the state saved after step ``N`` and training on to ``2N`` gives
bit-identical params to an uninterrupted ``2N``-step run when the batches are
a function of the step number (see :func:`jrnn.train.fit`).

In a multi-process run (:func:`jrnn.distributed.initialize`) every process
calls :func:`save` and :func:`restore` with the same arguments, and
``directory`` must be the same shared file system on every host. Process 0
creates the temporary directory; every process writes its shards of the
global arrays into it (orbax writes a replicated array once); after a barrier
that all processes reach only once their shards are on disk, process 0 writes
``meta.json`` and the manifest and makes the one rename, then tells the others
whether it succeeded, so every process returns (or raises) the same outcome.
Leaves that are not global arrays (the PRNG key) must be equal on every
process and are written once, by process 0. A restore reads global arrays
back onto the shardings of ``like``'s arrays, so each process loads its own
shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from typing import Any, NamedTuple

import jax
import numpy as np

from jrnn import _checks
from jrnn import distributed

__all__ = (
  "CheckpointError",
  "TrainState",
  "all_steps",
  "latest_step",
  "read_metadata",
  "restore",
  "save",
  "step_dir",
  "verify",
)

FORMAT = "jrnn-checkpoint-1"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


class CheckpointError(RuntimeError):
  """A checkpoint is missing, corrupt, incomplete, or does not match the model."""


class TrainState(NamedTuple):
  """Everything a run needs to resume exactly.

  Attributes:
    step: the number of steps done.
    params: the model's params.
    opt_state: the optimizer's state.
    key: a typed PRNG key (``jax.random.key``), e.g. the key the batches are
      drawn from.
    carry: the recurrent carry of stateful (truncated BPTT) training, or None.
  """

  step: int
  params: Any
  opt_state: Any
  key: jax.Array
  carry: Any = None


def step_dir(directory: str, step: int) -> str:
  """The path of the checkpoint of ``step`` in ``directory``."""
  return os.path.join(directory, f"step_{step:08d}")


def all_steps(directory: str) -> list[int]:
  """The steps saved in ``directory``, ascending (empty if there is none or no directory)."""
  if not os.path.isdir(directory):
    return []
  found = (_STEP_DIR.match(name) for name in os.listdir(directory))
  return sorted(int(m.group(1)) for m in found if m and os.path.isdir(os.path.join(directory, m.group(0))))


def latest_step(directory: str) -> int | None:
  """The newest step saved in ``directory``, or None."""
  steps = all_steps(directory)
  return steps[-1] if steps else None


def _sha256(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _files(root):
  out = []
  for base, _, names in os.walk(root):
    for name in names:
      rel = os.path.relpath(os.path.join(base, name), root)
      if rel != "MANIFEST.json":
        out.append(rel)
  return sorted(out)


def _write_json(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())


def _tree(state):
  tree = {"params": state.params, "opt_state": state.opt_state, "key": jax.random.key_data(state.key)}
  if state.carry is not None:
    tree["carry"] = state.carry
  return tree


def _is_global(x):
  """A ``jax.Array`` with shards on other processes' devices (a multi-process run's global array)."""
  return isinstance(x, jax.Array) and not x.is_fully_addressable


def _for_orbax(tree):
  """``tree`` as orbax should write it: in a multi-process run, leaves other than global arrays as numpy.

  Such leaves hold the same values on every process; orbax writes a numpy leaf
  once, from process 0, where per-process arrays would be written by every
  process to the same file.
  """
  if jax.process_count() == 1:
    return tree
  return jax.tree_util.tree_map(lambda x: x if _is_global(x) else np.asarray(x), tree)


def _restore_target(x):
  """What orbax restores a leaf shaped like ``x`` into: where ``x`` lives, whatever the saving run's devices were."""
  if jax.process_count() > 1 and not _is_global(x):  # saved as numpy (see _for_orbax): numpy on every process
    return np.zeros(np.shape(x), jax.numpy.result_type(x))
  where = x.sharding if isinstance(x, jax.Array) else jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.ShapeDtypeStruct(np.shape(x), jax.numpy.result_type(x), sharding=where)


def _signature(tree):
  """``[[path, shape, dtype], ...]`` of every leaf: what a restore target must match."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [[jax.tree_util.keystr(path), list(np.shape(x)), str(jax.numpy.result_type(x))] for path, x in leaves]


def save(directory: str, state: TrainState, *, metadata: dict | None = None, keep: int = 2) -> str:
  """Saves ``state`` as ``directory/step_<state.step>``, atomically.

  Args:
    directory: the checkpoint directory (created if missing).
    state: a :class:`TrainState`.
    metadata: JSON-serialisable data stored beside the arrays (the run's
      configuration, a vocabulary ...), returned by :func:`read_metadata`.
    keep: how many of the newest checkpoints to keep; older ones are deleted
      after the new one is complete.

  Returns:
    The path of the new checkpoint.

  Raises:
    CheckpointError: if writing fails; the earlier checkpoints are untouched
      and no partial ``step_…`` directory is left behind.
  """
  import orbax.checkpoint as ocp

  _checks.positive_int(keep, "keep", "jrnn.checkpoint.save")
  step = int(state.step)
  if step < 0:
    raise ValueError(f"jrnn.checkpoint.save: step must be non-negative, got {step}.")
  main = jax.process_index() == 0
  directory = os.path.abspath(directory)
  final = step_dir(directory, step)
  # One name on every process: process 0 draws it.
  token = distributed._share(f"checkpoint {step}: name", uuid.uuid4().hex if main else None)
  tmp = os.path.join(directory, f".tmp-step_{step:08d}-{token}")
  outcome = "ok"
  try:
    if main:
      os.makedirs(tmp)
    distributed.barrier(f"checkpoint {step}: directory made")
    checkpointer = ocp.StandardCheckpointer()
    try:
      checkpointer.save(os.path.join(tmp, "state"), _for_orbax(_tree(state)))
      checkpointer.wait_until_finished()
    finally:
      checkpointer.close()
    distributed.barrier(f"checkpoint {step}: every process's shards written")
    if main:
      try:
        _commit(directory, tmp, final, state, step, metadata)
      except Exception as e:
        outcome = f"{type(e).__name__}: {e}"
        raise
      finally:  # the others return or raise with process 0
        distributed._share(f"checkpoint {step}: outcome", outcome)
    else:
      outcome = distributed._share(f"checkpoint {step}: outcome", None)
  except Exception as e:
    if main:
      shutil.rmtree(tmp, ignore_errors=True)
    why = f"{type(e).__name__}: {e}"
    raise CheckpointError(
      f"saving checkpoint step {step} to {directory} failed ({why}); earlier checkpoints are untouched."
    ) from e
  if outcome != "ok":
    raise CheckpointError(
      f"saving checkpoint step {step} to {directory} failed in process 0 ({outcome}); "
      "earlier checkpoints are untouched."
    )
  if main:
    for old_step in all_steps(directory)[:-keep]:
      shutil.rmtree(step_dir(directory, old_step), ignore_errors=True)
  return final


def _commit(directory, tmp, final, state, step, metadata):
  """Process 0, once every shard is written: ``meta.json``, the manifest, then the one rename."""
  meta = {
    "format": FORMAT,
    "step": step,
    "has_carry": state.carry is not None,
    "leaves": _signature(_tree(state)),
    "metadata": {} if metadata is None else metadata,
  }
  _write_json(os.path.join(tmp, "meta.json"), meta)
  _write_json(os.path.join(tmp, "MANIFEST.json"), {f: _sha256(os.path.join(tmp, f)) for f in _files(tmp)})
  if os.path.exists(final):  # re-saving a step: swap, so that one of the two is always complete
    old = os.path.join(directory, f".old-step_{step:08d}-{uuid.uuid4().hex}")
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.rename(tmp, final)


def _resolve(directory, step):
  directory = os.path.abspath(directory)
  steps = all_steps(directory)
  if not steps:
    where = "does not exist" if not os.path.isdir(directory) else "has no step_* checkpoint in it"
    raise CheckpointError(f"no checkpoint found: {directory} {where}.")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise CheckpointError(f"no checkpoint for step {step} in {directory}; saved steps: {steps}.")
  return directory, step, steps


def verify(directory: str, step: int | None = None) -> dict:
  """Checks a checkpoint's files against its manifest; returns its ``meta.json``.

  Raises:
    CheckpointError: naming the missing, extra or altered file.
  """
  directory, step, steps = _resolve(directory, step)
  path = step_dir(directory, step)
  earlier = [s for s in steps if s < step]
  hint = f" An earlier checkpoint exists (step {earlier[-1]})." if earlier else ""

  def corrupt(why):
    return CheckpointError(f"checkpoint {path} is corrupt or incomplete: {why}.{hint}")

  try:
    with open(os.path.join(path, "MANIFEST.json")) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise corrupt(f"cannot read MANIFEST.json ({e})") from None
  if not isinstance(manifest, dict):
    raise corrupt("MANIFEST.json is not a mapping")
  present = _files(path)
  for name in sorted(set(manifest) - set(present)):
    raise corrupt(f"file {name} is missing")
  for name in sorted(set(present) - set(manifest)):
    raise corrupt(f"unexpected file {name}")
  for name in present:
    if _sha256(os.path.join(path, name)) != manifest[name]:
      raise corrupt(f"file {name} does not match its SHA-256 in MANIFEST.json")
  with open(os.path.join(path, "meta.json")) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT or meta.get("step") != step:
    raise corrupt(
      f"meta.json has format {meta.get('format')!r} and step {meta.get('step')!r}, expected {FORMAT!r} and {step}"
    )
  return meta


def read_metadata(directory: str, step: int | None = None) -> dict:
  """The ``metadata`` given to :func:`save` for ``step`` (default: the latest), after :func:`verify`."""
  return verify(directory, step)["metadata"]


def restore(directory: str, like: TrainState, *, step: int | None = None) -> TrainState:
  """Restores the checkpoint of ``step`` (default: the latest) from ``directory``.

  Args:
    directory: the checkpoint directory.
    like: a :class:`TrainState` with the structure, shapes and dtypes to
      restore into (e.g. the freshly initialised state); its values are not
      used. Its ``key`` gives the PRNG implementation; its ``carry`` must be
      None exactly when the checkpoint has none.
    step: which step; default the latest.

  Returns:
    The restored :class:`TrainState`, with the same pytree types as ``like``.

  Raises:
    CheckpointError: if there is no checkpoint, a file is corrupt or
      missing, or the saved arrays do not fit ``like``.
  """
  import orbax.checkpoint as ocp

  meta = verify(directory, step)
  path = step_dir(os.path.abspath(directory), meta["step"])
  if meta["has_carry"] != (like.carry is not None):
    raise CheckpointError(
      f"checkpoint {path} {'has' if meta['has_carry'] else 'has no'} recurrent carry, "
      f"but the state to restore into {'has none' if like.carry is None else 'has one'} "
      "(stateful and stateless runs cannot resume each other)."
    )
  # Compare shapes and dtypes before orbax reads anything: a failed orbax restore
  # gives a less useful message and leaves callbacks behind on a closed event loop.
  want, saved = _signature(_tree(like)), meta["leaves"]
  mismatch = next(((w, g) for w, g in zip(want, saved) if w != g), None)
  if mismatch is not None or len(want) != len(saved):
    w, g = mismatch or (f"{len(want)} leaves", f"{len(saved)} leaves")
    raise CheckpointError(
      f"checkpoint {path} does not fit the model being restored: it has {g} where the "
      f"model has {w}; was it saved with another task, cell or size?"
    )
  target = jax.tree_util.tree_map(_restore_target, _tree(like))
  checkpointer = ocp.StandardCheckpointer()
  try:
    tree = checkpointer.restore(os.path.join(path, "state"), target)
  except Exception as e:
    first_line = (str(e).splitlines() or [""])[0][:300]
    raise CheckpointError(f"checkpoint {path} could not be read ({type(e).__name__}: {first_line}).") from e
  finally:
    checkpointer.close()
  key = jax.random.wrap_key_data(tree["key"], impl=jax.random.key_impl(like.key))
  return TrainState(meta["step"], tree["params"], tree["opt_state"], key, tree.get("carry"))
