r"""Data parallelism on JAX's own engine: one jitted step over a ``jax.sharding.Mesh``.

The global batch of ``B`` sequences is split along its leading (batch)
dimension over the ``data`` axis of a mesh of ``D`` devices; params and
optimizer state are replicated on every device. The step is the ordinary one
from :func:`jrnn.train.make_step`, jitted once: XLA's SPMD partitioner (GSPMD)
turns the mean over the batch into per-device partial sums and one all-reduce,
so every device applies the same update

.. math::

   g = \nabla_\theta \frac{1}{B} \sum_{b=1}^{B} \ell(\theta; x_b)
     = \frac{1}{B} \sum_{d=1}^{D} \sum_{b \in \mathcal{B}_d} \nabla_\theta \ell(\theta; x_b),
   \qquad |\mathcal{B}_d| = B / D

and the result equals the single-device run on the same global batch, up to
the order of the float32 sums. No ``pmap``, no ``psum`` in user code: the loss
is written for the global batch and the shardings of the inputs say where the
rows live. The same code runs on one CPU (``D = 1``), 8 GPUs, or a TPU pod slice.

Usage (the same lines on one CPU, where the mesh has one device, and on 8 GPUs):

  >>> import jax.numpy as jnp, optax, jrnn
  >>> mesh = jrnn.sharding.data_mesh()  # all of jax.devices() on a "data" axis
  >>> loss_fn = lambda params, batch: jnp.mean((batch @ params["w"] - 1.0) ** 2)
  >>> optimizer = optax.sgd(0.1)
  >>> step = jrnn.train.make_step(loss_fn, optimizer, clip_norm=1.0, mesh=mesh)  # jitted, sharded
  >>> params = {"w": jnp.zeros((3, 1))}
  >>> params, opt_state = jrnn.sharding.replicate((params, optimizer.init(params)), mesh)
  >>> result = jrnn.train.fit(step, params, opt_state, lambda i: jnp.ones((8, 3)), steps=5, progress=False)
  >>> result.params["w"].sharding.is_fully_replicated
  True

The step places its inputs itself (:func:`shard_batch` for the batch,
:func:`replicate` for params and state; both are no-ops on arrays already
placed), so ``batch_fn`` may return host or single-device arrays. Every array
leaf of the batch with a leading dimension is split along it (for truncated
BPTT the batch is ``(window, carry)`` and the carry's rows are split with
their sequences); 0-d leaves are replicated. ``B`` must be divisible by ``D``
(a ``ValueError`` says so, naming both).

Multi-host (a TPU pod slice, several GPU hosts): start every process with
:func:`jrnn.distributed.initialize` (``jax.distributed.initialize`` with
bounded waits for the other processes; arguments are discovered on Cloud TPU
and under SLURM, elsewhere pass the coordinator's address, the number of
processes and this process's id) before anything else touches JAX; then
``jax.devices()`` lists the devices of all hosts and :func:`data_mesh` spans
them. Each host runs the same program and its ``batch_fn`` returns only **its
own** rows (:func:`jrnn.distributed.process_rows`: ``B / P`` of them for ``P``
processes), as numpy (or host-local) arrays: :func:`shard_batch` assembles the
global array with ``jax.make_array_from_process_local_data``, without any host
seeing the whole batch. Params must start identical on every host (the same
seed); :func:`replicate` then makes them one global replicated array. Metrics
come back replicated, so every host can read the loss. ``jrnn train`` does all
this with ``--distributed``; ``docs/distributed.md`` has the recipes.

Sequence parallelism (sharding the time axis) is offered for the cells whose
recurrence is linear in the carry (min_gru, min_lstm, lru):
:func:`sequence_parallel_unroll` splits one sequence's steps over a mesh axis
with ``jax.shard_map`` (each device scans its chunk, one all-gather of the
``D`` chunk summaries ``(∏ a, c_end)``, each device corrects its chunk with the
incoming carry). It pays only when one sequence is too long for one device:
with ``B ≥ D``, data parallelism uses every device with one all-reduce of the
gradients. For the non-linear cells (Elman, GRU, LSTM) ``h_t`` needs
``h_{t-1}``, so devices holding consecutive chunks would run one after another:
splitting time would buy memory, never speed, and is not offered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jrnn._seqpar import sequence_parallel_unroll as sequence_parallel_unroll

__all__ = (
  "DataParallelStep",
  "data_mesh",
  "data_parallel",
  "replicate",
  "sequence_parallel_unroll",
  "shard_batch",
)

DATA_AXIS = "data"


def data_mesh(devices: Sequence[Any] | None = None, *, axis: str = DATA_AXIS) -> Mesh:
  """A one-dimensional mesh over ``devices`` (default: ``jax.devices()``, every host's).

  ``devices`` are ``jax.Device`` s (annotated ``Any``: jaxlib ships no type
  stubs for that class).

  Example:
    >>> import jax, jrnn
    >>> mesh = jrnn.sharding.data_mesh()  # Mesh('data': 8) on 8 GPUs
    >>> mesh.axis_names, mesh.shape["data"] == len(jax.devices())
    (('data',), True)
  """
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("jrnn.sharding.data_mesh: no devices given.")
  return Mesh(np.asarray(devices, dtype=object), (axis,))


def _check_axis(mesh, axis, where):
  if not isinstance(mesh, Mesh):
    raise TypeError(f"jrnn.sharding.{where}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
  if axis not in mesh.shape:
    raise ValueError(f"jrnn.sharding.{where}: the mesh has axes {tuple(mesh.axis_names)}, not the data axis {axis!r}.")


def replicate(tree: Any, mesh: Mesh) -> Any:
  """``tree`` with every array placed whole on every device of ``mesh`` (``P()``)."""
  if not isinstance(mesh, Mesh):
    raise TypeError(f"jrnn.sharding.replicate: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
  return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: Any, mesh: Mesh, *, axis: str = DATA_AXIS) -> Any:
  """``batch`` split along its leading dimension over the mesh's ``axis`` (``P(axis)``).

  0-d leaves are replicated. In a multi-process run, leaves that are not
  already global ``jax.Array`` s are this process's rows; the global batch is
  their concatenation over processes (``jax.make_array_from_process_local_data``).

  Raises:
    ValueError: if a leaf's (global) leading dimension is not divisible by the
      number of devices on ``axis``.
  """
  _check_axis(mesh, axis, "shard_batch")
  devices = mesh.shape[axis]
  split, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
  processes = jax.process_count()

  def place(path, leaf):
    local = processes > 1 and not (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable)
    if np.ndim(leaf) == 0:
      return jax.device_put(leaf, whole)
    rows = np.shape(leaf)[0] * (processes if local else 1)
    if rows % devices:
      name = jax.tree_util.keystr(path) or "the batch"
      per = f" ({np.shape(leaf)[0]} on each of {processes} processes)" if local else ""
      raise ValueError(
        f"jrnn.sharding: batch size {rows}{per} of {name} is not divisible by the {devices} "
        f"devices on the mesh axis {axis!r}; use a global batch that is a multiple of {devices}."
      )
    if local:
      return jax.make_array_from_process_local_data(split, np.asarray(leaf))
    return jax.device_put(leaf, split)

  return jax.tree_util.tree_map_with_path(place, batch)


class DataParallelStep:
  """What :func:`data_parallel` returns: called like the step it wraps.

  Attributes:
    mesh: the mesh it runs on.
    axis: the mesh axis the batch is split over.
  """

  def __init__(self, sharded: Callable[..., tuple], mesh: Mesh, axis: str):
    self._sharded, self.mesh, self.axis = sharded, mesh, axis

  def _place(self, params, opt_state, batch, *rest):
    params, opt_state, rest = replicate((params, opt_state, rest), self.mesh)
    return (params, opt_state, shard_batch(batch, self.mesh, axis=self.axis), *rest)

  def __call__(self, params, opt_state, batch, *rest) -> tuple:
    return self._sharded(*self._place(params, opt_state, batch, *rest))

  def lower(self, params, opt_state, batch, *rest):
    """The jitted step lowered for these inputs, to inspect the program (``.compile().as_text()``)."""
    return self._sharded.lower(*self._place(params, opt_state, batch, *rest))


def data_parallel(step: Callable[..., tuple], mesh: Mesh | None = None, *, axis: str = DATA_AXIS) -> DataParallelStep:
  """Jits ``step(params, opt_state, batch)`` to run data-parallel over ``mesh``.

  The returned step places its inputs (batch split over ``axis``, params,
  optimizer state and any further argument, such as the key of a step built
  with ``has_rng=True``, replicated) and constrains its outputs: params, optimizer
  state and metrics replicated; an aux output (the carry of truncated BPTT)
  split over ``axis`` wherever its leading dimension is the batch's. One
  ``jax.jit``; no ``pmap``.

  Args:
    step: from :func:`jrnn.train.make_step` (not yet jitted, though a jitted one
      works too); ``jrnn.train.make_step(..., mesh=mesh)`` calls this for you.
    mesh: a mesh with an ``axis`` dimension; default :func:`data_mesh` over
      ``jax.devices()``.
    axis: the name of the data axis.

  Returns:
    A :class:`DataParallelStep`: the jitted step, with the signature and
    results of ``step``, and ``lower`` to inspect the compiled program.
  """
  mesh = data_mesh(axis=axis) if mesh is None else mesh
  _check_axis(mesh, axis, "data_parallel")
  split, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())

  @jax.jit
  def sharded(params, opt_state, batch, *rest):  # rest: the key of a step with has_rng=True, replicated
    out = step(params, opt_state, batch, *rest)
    rows = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch) if np.ndim(x) > 0}
    replicated = jax.lax.with_sharding_constraint(tuple(out[:3]), whole)
    aux = jax.tree_util.tree_map(
      lambda x: jax.lax.with_sharding_constraint(x, split if np.ndim(x) > 0 and np.shape(x)[0] in rows else whole),
      tuple(out[3:]),
    )
    return replicated + aux

  return DataParallelStep(sharded, mesh, axis)
