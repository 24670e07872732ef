"""Starts processes of one multi-process run on this machine, for ``tests/test_multiprocess.py``.

:func:`start` runs ``python -m jrnn train ... --coordinator localhost:PORT
--num-processes N --process-id I`` in each process (or this file, as below),
with its environment set before JAX starts: CPU only,
``--xla_force_host_platform_device_count=D`` devices, the source tree on
``PYTHONPATH``, unbuffered output and, when given, one persistent compilation
cache that the processes share (they compile the same programs; the cache
changes speed, never results). Collectives between the processes go through
gloo over TCP on localhost.

As a script, this file is one process of a run that trains nothing, to test
:mod:`jrnn.distributed` on its own::

  python tests/multiprocess_worker.py hold|fail FLAG_DIR --coordinator localhost:PORT --num-processes 2 --process-id I

joins the run (``heartbeat_timeout`` :data:`HEARTBEAT` s), writes
``FLAG_DIR/joined-I`` and waits until every process has, then waits for a
minute (``hold``), or, in process 1, fails at once with
:func:`jrnn.distributed.exit_with_failure` (``fail``). The watchdog's one-line
message goes to stderr, as in ``jrnn train``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gloo_missing() -> str | None:
  """Why this platform cannot run CPU collectives across processes, or None if it can."""
  try:
    from jax._src.lib import _jax
  except ImportError as e:
    return f"jaxlib has no _jax extension ({e})"
  if not hasattr(_jax, "make_gloo_tcp_collectives"):
    return "this jaxlib was built without gloo CPU collectives (jax_cpu_collectives_implementation='gloo')"
  return None


def free_port() -> int:
  """A TCP port nobody listens on right now (the coordinator binds it a moment later)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def environment(devices: int, cache: str | None = None) -> dict:
  """The environment of one process: ``devices`` forced CPU devices, set before JAX starts."""
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    PYTHONUNBUFFERED="1",
    XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip(),
  )
  if cache is not None:
    env.update(
      JAX_COMPILATION_CACHE_DIR=cache,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
  return env


class Run:
  """The processes of one multi-process ``jrnn train`` run.

  A thread per process reads its output as it comes (no pipe fills up) and
  notes when it ended: ``ended[i]`` is process ``i``'s exit time on the
  ``time.monotonic()`` clock, ``start`` the time the processes were started.
  """

  def __init__(self, procs: dict[int, subprocess.Popen], start: float, port: int):
    self.procs, self.start, self.port = procs, start, port
    self.results: dict[int, tuple[int, str, str]] = {}
    self.ended: dict[int, float] = {}
    self._readers = {i: threading.Thread(target=self._read, args=(i,), daemon=True) for i in procs}
    for t in self._readers.values():
      t.start()

  def _read(self, i: int) -> None:
    stdout, stderr = self.procs[i].communicate()
    self.ended[i] = time.monotonic()
    self.results[i] = (self.procs[i].returncode, stdout, stderr)

  def running(self) -> bool:
    return any(t.is_alive() for t in self._readers.values())

  def wait(self, timeout: float) -> dict[int, tuple[int, str, str]]:
    """``{process id: (status, stdout, stderr)}`` once all have ended, ``timeout`` seconds after the start at most.

    Processes still running at the deadline are killed (status ``-9``) and
    their stderr says so: the caller's assertions then fail with the output
    instead of the suite hanging.
    """
    for t in self._readers.values():
      t.join(max(0.0, self.start + timeout - time.monotonic()))
    if self.running():
      self.close()
      for i in self.procs:
        status, stdout, stderr = self.results[i]
        self.results[i] = (status, stdout, stderr + f"\n[multiprocess_worker: killed after the {timeout:g} s timeout]")
    return dict(sorted(self.results.items()))

  def kill(self, i: int | None = None) -> None:
    """Kills process ``i`` (SIGKILL), or every process still running."""
    for j, p in self.procs.items():
      if (i is None or i == j) and p.poll() is None:
        p.kill()

  def close(self) -> None:
    """Kills what still runs and collects every process (no zombie, no open pipe)."""
    self.kill()
    for t in self._readers.values():
      t.join()


def start(
  argv: list[str],
  *,
  processes: int = 2,
  devices: int = 2,
  only: list[int] | None = None,
  cache: str | None = None,
  port: int | None = None,
  script: bool = False,
) -> Run:
  """Starts ``python -m jrnn *argv`` (``script``: this file) as processes ``only`` (default all) of a run."""
  port = free_port() if port is None else port
  env = environment(devices, cache)
  flags = ["--coordinator", f"localhost:{port}", "--num-processes", str(processes)]
  started = time.monotonic()
  procs = {
    i: subprocess.Popen(
      [sys.executable, *([__file__] if script else ["-m", "jrnn"]), *argv, *flags, "--process-id", str(i)],
      env=env,
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in (range(processes) if only is None else only)
  }
  return Run(procs, started, port)


HEARTBEAT = 2  # seconds


def main(args: list[str]) -> int:
  import argparse

  from jrnn import distributed

  parser = argparse.ArgumentParser()
  parser.add_argument("action", choices=("hold", "fail"))
  parser.add_argument("flag_dir")
  parser.add_argument("--coordinator")
  parser.add_argument("--num-processes", type=int)
  parser.add_argument("--process-id", type=int)
  a = parser.parse_args(args)
  distributed.initialize(
    a.coordinator,
    a.num_processes,
    a.process_id,
    initialization_timeout=60,
    heartbeat_timeout=HEARTBEAT,
    on_failure=lambda message: print(f"worker: error: {message}", file=sys.stderr),
  )
  open(os.path.join(a.flag_dir, f"joined-{a.process_id}"), "w").close()
  while len([n for n in os.listdir(a.flag_dir) if n.startswith("joined-")]) < a.num_processes:
    time.sleep(0.05)
  if a.action == "fail" and a.process_id == 1:
    distributed.exit_with_failure("disk full (the test's own failure)", 3)
  time.sleep(60)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
