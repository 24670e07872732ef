"""Multi-process runs: joining one, each process's rows, and failing loudly instead of hanging.

JAX runs one program per process (one per host, or per GPU); after
:func:`initialize`, ``jax.devices()`` lists the devices of every process and
:func:`jrnn.sharding.data_mesh` spans them. Every process runs the same steps
in the same order; each feeds only its own rows of the global batch
(:func:`process_rows`), which :func:`jrnn.sharding.shard_batch` assembles into
one global array. Params start identical everywhere (the same seed) and stay
replicated, so every process can read them and the loss.

:func:`initialize` wraps ``jax.distributed.initialize`` and adds what a
training run needs when a process is missing:

* **A process that never joins.** If the ``num_processes`` processes have not
  all connected within ``initialization_timeout`` seconds, each waiting process
  exits with status 1 and one line on stderr naming the coordinator and the
  timeout (JAX alone would abort from C++ with a stack trace, later).
* **A process that dies.** Each process posts a heartbeat to the coordinator's
  key-value store every second or so and watches the others'. When another
  process stops posting for ``heartbeat_timeout`` seconds (killed, crashed,
  its host gone), every survivor exits with status 1 and one line naming it;
  a survivor would otherwise wait in the next collective for ever. A process
  that fails with a Python error calls :func:`exit_with_failure`, and the others
  stop within a second with its message. If process 0 dies, the coordinator
  goes with it and JAX itself stops the others at once ("the JAX distributed
  service detected fatal errors"). JAX's own heartbeat check stays on as a
  backstop, at twice ``heartbeat_timeout``.
* **CPU collectives.** On CPU, cross-process collectives use gloo over TCP
  (``jax_cpu_collectives_implementation``), so two processes on one machine
  run what a pod slice runs; see ``docs/distributed.md``.

A process alive but stuck (a deadlock in user code) keeps its heartbeat and
is not detected.

Example (one process per host, the same lines everywhere; on Cloud TPU and
under SLURM the arguments are discovered, elsewhere pass them):

  >>> import jrnn
  >>> jrnn.distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)  # doctest: +SKIP
  >>> rows = jrnn.distributed.process_rows(64)  # slice(0, 32) on process 0, slice(32, 64) on 1  # doctest: +SKIP
  >>> if jrnn.distributed.is_main_process():  # doctest: +SKIP
  ...   print("only process 0 logs")
  >>> jrnn.distributed.shutdown()  # at the end, on every process  # doctest: +SKIP

Without :func:`initialize` (one process) the helpers answer for a run of one:

  >>> import jrnn
  >>> jrnn.distributed.process_rows(8), jrnn.distributed.is_main_process()
  (slice(0, 8, None), True)
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

import jax

__all__ = (
  "DistributedError",
  "barrier",
  "exit_with_failure",
  "initialize",
  "is_main_process",
  "process_rows",
  "shutdown",
)

_PREFIX = "jrnn/process/"  # the key-value store's keys: jrnn/process/<id> -> alive:<n> | done | failed:<message>


class DistributedError(RuntimeError):
  """A multi-process run could not start, or its processes did not meet at a barrier in time."""


def _default_on_failure(message: str) -> None:
  print(f"jrnn.distributed: {message}", file=sys.stderr)


class _State:
  watchdog: _Watchdog | None = None
  on_failure: Callable[[str], None] = staticmethod(_default_on_failure)
  coordinator: str | None = None
  barriers: int = 0


_state = _State()


def _client() -> Any:
  """The coordination service's client that ``jax.distributed.initialize`` made (orbax reads it the same way)."""
  from jax._src import distributed as jax_distributed

  client = jax_distributed.global_state.client
  if client is None:
    raise DistributedError("jrnn.distributed: JAX's distributed system is not initialized; call initialize() first.")
  return client


def _die(message: str, status: int = 1) -> NoReturn:
  """Reports ``message`` through the failure callback and ends the process now, skipping JAX's exit handlers."""
  try:
    _state.on_failure(message)
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class _Watchdog(threading.Thread):
  """Posts this process's heartbeat and ends the process when another one dies or fails."""

  def __init__(self, client, process_id: int, num_processes: int, timeout: float):
    super().__init__(name="jrnn-distributed-watchdog", daemon=True)
    self.client, self.process_id, self.num_processes, self.timeout = client, process_id, num_processes, timeout
    self.period = min(1.0, timeout / 5)
    self.stopped = threading.Event()

  def post(self, value: str) -> None:
    self.client.key_value_set(f"{_PREFIX}{self.process_id}", value, allow_overwrite=True)

  def run(self) -> None:
    start = time.monotonic()
    seen: dict[int, tuple[str | None, float]] = {
      p: (None, start) for p in range(self.num_processes) if p != self.process_id
    }
    beat = 0
    while not self.stopped.is_set():
      try:
        self.post(f"alive:{beat}")
        entries = dict(self.client.key_value_dir_get(_PREFIX))
      except Exception as e:  # the coordinator is gone: any error says so
        if self.stopped.is_set():
          return
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        _die(
          f"process {self.process_id} lost the coordinator (process 0 at {_state.coordinator}): {first}; "
          "process 0 died or its host is unreachable."
        )
      beat += 1
      now = time.monotonic()
      for p, (last, since) in seen.items():
        value = entries.get(f"{_PREFIX}{p}")
        if value == "done":
          continue
        if value is not None and value.startswith("failed:"):
          _die(f"process {p} of {self.num_processes} failed: {value[len('failed:') :]}")
        if value != last:
          seen[p] = (value, now)
        elif now - since > self.timeout:
          what = "stopped responding" if last is not None else "never sent a heartbeat"
          _die(
            f"process {p} of {self.num_processes} {what} (no heartbeat for {now - since:.0f} s): it died, "
            f"was killed or lost its network; stopping process {self.process_id} too."
          )
      self.stopped.wait(self.period)


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  initialization_timeout: float = 300,
  heartbeat_timeout: float = 60,
  on_failure: Callable[[str], None] | None = None,
) -> None:
  """Joins a multi-process run (``jax.distributed.initialize``), with bounded waits for the other processes.

  Call it first, before anything else touches JAX, in every process. With all
  three arguments None, JAX discovers them on Cloud TPU, under SLURM and Open
  MPI, or from ``JAX_COORDINATOR_ADDRESS``; elsewhere pass all three.

  Args:
    coordinator_address: ``host:port`` of process 0, which starts the
      coordinator there; the same on every process.
    num_processes: how many processes take part.
    process_id: this process's number, ``0 … num_processes - 1``.
    initialization_timeout: seconds to wait for every process to connect;
      after that this process exits (status 1) with one line on stderr.
    heartbeat_timeout: seconds without a heartbeat after which another process
      counts as dead; this one then exits (status 1) with one line naming it.
    on_failure: called with that one-line message (from a background thread)
      just before the process exits; default: print it on stderr.

  Raises:
    DistributedError: if the arguments are incomplete or invalid, or JAX was
      already in use (``jax.distributed.initialize`` must come first).
  """
  from jax._src import distributed as jax_distributed
  from jax._src import xla_bridge

  for name, value in (("initialization_timeout", initialization_timeout), ("heartbeat_timeout", heartbeat_timeout)):
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
      raise DistributedError(f"jrnn.distributed.initialize: {name} must be a positive number, got {value!r}.")
  if xla_bridge.backends_are_initialized():
    raise DistributedError(
      "jrnn.distributed.initialize must run before anything else uses JAX (jax.devices(), an array, a jit call): "
      "call it first in the process."
    )
  if _state.watchdog is not None or jax_distributed.global_state.client is not None:
    raise DistributedError("jrnn.distributed.initialize: this process has already joined a run.")
  _state.on_failure = on_failure or _default_on_failure
  if jax.config.jax_cpu_collectives_implementation is None:  # type: ignore[attr-defined]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # collectives across processes on CPU

  where = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or "the discovered coordinator"
  _state.coordinator = where
  joined = threading.Event()

  def not_joined():
    if not joined.is_set():
      count = f"all {num_processes}" if num_processes else "all the"
      _die(
        f"process {process_id if process_id is not None else '?'} waited {initialization_timeout:g} s for "
        f"{count} processes to join at {where}, and some never did: start every process with the same "
        "coordinator and number of processes, each with its own process id, within the timeout."
      )

  timer = threading.Timer(initialization_timeout, not_joined)
  timer.daemon = True
  timer.start()
  try:
    # JAX's own timeouts stay on, later than ours, as a backstop (they abort from C++).
    jax.distributed.initialize(
      coordinator_address,
      num_processes,
      process_id,
      initialization_timeout=int(initialization_timeout * 2 + 10),
      heartbeat_timeout_seconds=int(heartbeat_timeout * 2 + 10),
    )
  except (ValueError, TypeError, RuntimeError) as e:
    raise DistributedError(f"jrnn.distributed.initialize: {e}") from None
  finally:
    joined.set()
    timer.cancel()
  _state.coordinator = jax_distributed.global_state.coordinator_address or where
  n = jax_distributed.global_state.num_processes
  if n > 1:
    _state.watchdog = _Watchdog(_client(), jax_distributed.global_state.process_id, n, float(heartbeat_timeout))
    _state.watchdog.start()


def is_main_process() -> bool:
  """True in process 0 (the one that logs, plots and writes shared files); True in a run of one process."""
  return jax.process_index() == 0


def process_rows(global_rows: int, *, process_index: int | None = None, process_count: int | None = None) -> slice:
  """This process's contiguous share of ``global_rows`` rows: ``slice(i * global_rows // P, (i + 1) * ...)``.

  The order matches :func:`jrnn.sharding.shard_batch`: process ``i``'s rows
  are rows ``i * B / P`` to ``(i + 1) * B / P`` of the global batch.

  Args:
    global_rows: the global batch size ``B``.
    process_index, process_count: default ``jax.process_index()`` and
      ``jax.process_count()``.

  Raises:
    ValueError: if ``B`` is not a positive multiple of ``P``.
  """
  i = jax.process_index() if process_index is None else process_index
  p = jax.process_count() if process_count is None else process_count
  if not (isinstance(global_rows, int) and global_rows > 0 and global_rows % p == 0):
    raise ValueError(
      f"jrnn.distributed.process_rows: the global batch ({global_rows!r} rows) must be a positive multiple of "
      f"the {p} processes, so that each gets the same number of rows."
    )
  if not 0 <= i < p:
    raise ValueError(f"jrnn.distributed.process_rows: process_index {i} is not in 0 … {p - 1}.")
  share = global_rows // p
  return slice(i * share, (i + 1) * share)


def barrier(name: str, *, timeout: float = 600) -> None:
  """Waits until every process has called ``barrier`` with this ``name`` (a no-op in a run of one process).

  Each call must use a name not used before in the run; calls are numbered,
  so the same name in a loop is fine as long as every process makes the same
  calls in the same order.

  Raises:
    DistributedError: if the others have not all arrived within ``timeout`` seconds.
  """
  if jax.process_count() == 1:
    return
  _state.barriers += 1
  key = f"jrnn/barrier/{_state.barriers}/{name}"
  try:
    _client().wait_at_barrier(key, int(timeout * 1000))
  except DistributedError:
    raise
  except Exception as e:  # JAX raises its own runtime error type here
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise DistributedError(
      f"process {jax.process_index()}: the processes did not all reach the barrier {name!r} within {timeout:g} s "
      f"({first})."
    ) from None


def _share(name: str, value: str | None, *, timeout: float = 600) -> str:
  """Process 0's ``value`` on every process (the others pass None), through the coordinator's key-value store."""
  if jax.process_count() == 1:
    assert value is not None
    return value
  _state.barriers += 1
  key = f"jrnn/share/{_state.barriers}/{name}"
  if jax.process_index() == 0:
    assert value is not None
    _client().key_value_set(key, value)
    return value
  try:
    return _client().blocking_key_value_get(key, int(timeout * 1000))
  except Exception as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise DistributedError(
      f"process {jax.process_index()}: no {name!r} from process 0 within {timeout:g} s ({first})."
    ) from None


def shutdown() -> None:
  """Leaves the run normally: stops the heartbeat watch, then waits for the others (``jax.distributed.shutdown``).

  Call it on every process at the end of a successful run. A no-op without
  :func:`initialize`.
  """
  watchdog, _state.watchdog = _state.watchdog, None
  if watchdog is not None:
    watchdog.stopped.set()
    watchdog.join()
    with contextlib.suppress(Exception):  # the coordinator already left: nothing to tell it
      watchdog.post("done")
  jax.distributed.shutdown()


def exit_with_failure(message: str, status: int = 1) -> NoReturn:
  """Tells the other processes that this one failed with ``message``, then ends this process with ``status``.

  The others stop within about a second, each with one line quoting
  ``message``. The process ends at once (``os._exit``), without waiting in
  JAX's exit handler for processes that are themselves waiting for this one.
  Without :func:`initialize`, it only exits.
  """
  watchdog, _state.watchdog = _state.watchdog, None
  if watchdog is not None:
    watchdog.stopped.set()
    watchdog.join(timeout=watchdog.period + 5)  # so that its last heartbeat cannot overwrite the failure
    with contextlib.suppress(Exception):  # the coordinator already left
      watchdog.post("failed:" + " ".join(message.split())[:500])
    if watchdog.process_id == 0:  # the coordinator leaves with this process: let the others read the message
      time.sleep(2 * watchdog.period + 0.5)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)
