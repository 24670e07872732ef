"""Multi-process training on one machine: 2 processes x 2 forced CPU devices (gloo) against one process.

``tests/multiprocess_worker.py`` starts the processes, each with
``--xla_force_host_platform_device_count`` set before JAX starts, and reads
their output as it comes; every wait has a deadline, so a hang fails a test
instead of blocking the suite. Each test starts its runs at once, so that they
overlap (the machine has 2 cores).

:func:`test_two_processes_train_like_one_and_resume_bit_identically`, through
the ``jrnn train`` command on the adding task (LSTM(4), global batch 8, Adam):

* ``killed``: 2 processes train with a checkpoint every 2 steps; process 1 is
  killed (SIGKILL) as soon as the first checkpoint is complete, and process 0
  must stop with one line on stderr within a bounded time;
* the reference, meanwhile, here in the test process: the same command in one
  process, on one device, on the same global batches, for ``STEPS`` steps;
* ``uninterrupted`` (from the moment of the kill, from the compilation cache
  the killed run filled): 2 processes train ``STEPS`` steps; their params must
  equal the reference's to float32 tolerance (only the order of the batch sums
  differs);
* ``resumed`` (once the killed run's process 0 has stopped): 2 processes resume
  its last checkpoint up to ``STEPS``; their params must equal the
  uninterrupted run's bit for bit.

:func:`test_a_lost_process_stops_the_others_with_one_line`, through
:mod:`jrnn.distributed` alone (the worker trains nothing): a process that never
joins, a process frozen by SIGSTOP (alive, its sockets open, silent), and a
process that fails with a message.
"""

import json
import os
import shutil
import signal
import tempfile
import threading
import time

import jax
import numpy as np
import pytest

from jrnn import checkpoint
from jrnn.apps import cli
from jrnn.apps import run
from tests import multiprocess_worker as worker

pytestmark = [
  pytest.mark.skipif(worker.gloo_missing() is not None, reason=f"no CPU collectives: {worker.gloo_missing()}"),
  pytest.mark.standard_promotion,  # optax's Adam is not strict-promotion clean
]

STEPS = 6
TRAIN = ["train", "--task", "adding", "--hidden", "4", "--batch", "8", "--seq-len", "4"]
TRAIN += ["--eval-every", "1000", "--no-progress"]
HEARTBEAT = 5  # seconds, for the killed run
INIT_TIMEOUT = 3  # seconds, for the process left alone
TIMEOUT = 240  # seconds any run may take before it is killed and the test fails


def _state(directory):
  """The latest checkpoint in ``directory``, restored here (one process, one device)."""
  config = checkpoint.read_metadata(directory)["config"]
  _, like, _ = run.setup_run(config)
  return checkpoint.restore(directory, like)


def _leaves(state):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves((state.params, state.opt_state))]


def _history(directory):
  with open(os.path.join(directory, "history.json")) as f:
    return json.load(f)


def _ok(results, what):
  for i, (status, stdout, stderr) in results.items():
    assert status == 0, f"{what}: process {i} exited with {status}\n{stdout}\n{stderr[-3000:]}"


def _errors(stderr, prefix):
  return [line for line in stderr.splitlines() if line.startswith(prefix)]


@pytest.fixture
def runs():
  """``start(argv, **kwargs)`` for :func:`worker.start`, and a temporary directory; every run is collected."""
  tmp = tempfile.mkdtemp(prefix="jrnn-multiprocess-")
  started = []

  def start(argv, **kwargs):
    started.append(worker.start(argv, **kwargs))
    return started[-1]

  try:
    yield start, tmp
  finally:
    for r in started:
      r.close()
    shutil.rmtree(tmp, ignore_errors=True)


def test_two_processes_train_like_one_and_resume_bit_identically(runs):
  start, tmp = runs
  t0 = time.monotonic()
  cache = os.path.join(tmp, "jax-cache")  # the processes compile the same programs: once
  dirs = {name: os.path.join(tmp, name) for name in ("uninterrupted", "killed", "reference")}
  multi = ["--init-timeout", "60", "--heartbeat-timeout", "20"]
  killed = start(
    TRAIN
    + ["--init-timeout", "60", "--heartbeat-timeout", str(HEARTBEAT)]
    + ["--steps", "100000", "--save-every", "2", "--checkpoint-dir", dirs["killed"]],
    cache=cache,
  )
  killed_at, later = [], {}

  def kill_then_start_the_others():
    while not os.path.isdir(checkpoint.step_dir(dirs["killed"], 2)):
      if time.monotonic() - killed.start > TIMEOUT or killed.ended:
        return
      time.sleep(0.02)
    killed.kill(1)
    killed_at.append(time.monotonic())
    later["uninterrupted"] = start(
      TRAIN + multi + ["--steps", str(STEPS), "--checkpoint-dir", dirs["uninterrupted"]], cache=cache
    )
    killed.wait(TIMEOUT)  # the killed run's last checkpoint is final once its process 0 has stopped
    later["resumed"] = start(
      TRAIN + multi + ["--steps", str(STEPS), "--resume", "--checkpoint-dir", dirs["killed"]], cache=cache
    )

  chain = threading.Thread(target=kill_then_start_the_others)
  chain.start()
  assert jax.device_count() == 1  # the reference, meanwhile, on this process's one device
  assert cli.main(TRAIN + ["--steps", str(STEPS), "--checkpoint-dir", dirs["reference"]]) == 0
  chain.join()
  status, _, stderr = killed.wait(TIMEOUT)[0]
  assert killed_at, f"the run to be killed ended or stalled before its first checkpoint: {killed.results}"
  last = checkpoint.latest_step(dirs["killed"])
  uninterrupted, resumed = later["uninterrupted"].wait(TIMEOUT), later["resumed"].wait(TIMEOUT)
  print(f"test_two_processes_train_like_one_and_resume_bit_identically: runs took {time.monotonic() - t0:.1f} s")
  _ok(uninterrupted, "uninterrupted run")
  _ok(resumed, "resumed run")

  # The killed process stopped the other: one line, naming what happened and the checkpoint to resume.
  detected_s = killed.ended[0] - killed_at[0]
  errors = _errors(stderr, "jrnn: error:")
  assert status == 1, stderr[-3000:]
  assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
  assert "process 1 of 2" in errors[0] or "another process died" in errors[0], errors[0]
  assert f"The last checkpoint (step {last}) in {dirs['killed']} resumes with --resume." in errors[0]
  print(f"killed process detected in {detected_s:.1f} s: {errors[0]}")
  assert detected_s < HEARTBEAT + 5
  # No checkpoint is half-written: every step_* directory checks against its manifest.
  steps = checkpoint.all_steps(dirs["killed"])
  assert steps[-1] == STEPS and last is not None and last < STEPS
  for step in steps:
    assert checkpoint.verify(dirs["killed"], step)["step"] == step
  assert not [n for n in os.listdir(dirs["uninterrupted"]) if n.startswith(".tmp-")]

  # 2 processes x 2 devices against 1 process on 1 device, same global batches.
  multi_state, reference = _state(dirs["uninterrupted"]), _state(dirs["reference"])
  assert multi_state.step == reference.step == STEPS
  a, b = _leaves(multi_state), _leaves(reference)
  assert len(a) == len(b)
  for x, y in zip(a, b):  # float32; the only difference is the order of the batch sums
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  print(f"max |params_2x2 - params_1|: {max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)):.3g}")
  losses = _history(dirs["uninterrupted"])["loss"], _history(dirs["reference"])["loss"]
  np.testing.assert_allclose(*losses, rtol=1e-5, atol=1e-6)
  assert abs(losses[1][-1] - losses[1][0]) > 1e-3  # training moved: equal results are not equal starting points

  # Killed at step `last` and resumed: bit for bit the uninterrupted run, step for step the same losses.
  resumed_state = _state(dirs["killed"])
  assert resumed_state.step == STEPS
  for x, y in zip(_leaves(resumed_state), a, strict=True):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(jax.random.key_data(resumed_state.key), jax.random.key_data(multi_state.key))
  assert f"resumed {dirs['killed']} at step {last}" in resumed[0][1]
  history = _history(dirs["killed"])
  assert history["step"] == list(range(last, STEPS)) and history["loss"] == losses[0][last:]

  # Only process 0 logs and plots (process 1's stdout has gloo's own C++ lines only).
  out0, out1 = uninterrupted[0][1], uninterrupted[1][1]
  assert "jrnn train: lstm(4) on adding" in out0 and "final test_mse" in out0
  assert "data-parallel: 2 processes, 4 devices, 4 rows of each batch per process" in out0
  # (gloo's lines may arrive split, so look for jrnn's lines rather than for gloo's prefix)
  assert not set(out0.splitlines()) & set(out1.splitlines()), out1
  assert not any(word in out1 for word in ("jrnn train", "test_mse", "baseline", "trained", "wrote")), out1
  assert os.path.isfile(os.path.join(dirs["uninterrupted"], "loss.png"))


def test_a_lost_process_stops_the_others_with_one_line(runs):
  start, tmp = runs
  t0 = time.monotonic()
  alone = start(
    TRAIN + ["--init-timeout", str(INIT_TIMEOUT), "--steps", "2", "--checkpoint-dir", os.path.join(tmp, "a")],
    only=[0],
  )
  flags = {name: os.path.join(tmp, f"{name}-flags") for name in ("frozen", "failing")}
  for d in flags.values():
    os.makedirs(d)
  frozen = start(["hold", flags["frozen"]], devices=1, script=True)
  failing = start(["fail", flags["failing"]], devices=1, script=True)
  while len(os.listdir(flags["frozen"])) < 2 and not frozen.ended and time.monotonic() - t0 < TIMEOUT:
    time.sleep(0.02)
  frozen.procs[1].send_signal(signal.SIGSTOP)  # alive and connected, but silent: only heartbeats can tell
  stopped_at = time.monotonic()
  while 0 not in frozen.ended and time.monotonic() - t0 < TIMEOUT:
    time.sleep(0.02)
  frozen.kill(1)
  frozen_results, failing_results, alone_results = frozen.wait(TIMEOUT), failing.wait(TIMEOUT), alone.wait(TIMEOUT)
  print(f"test_a_lost_process_stops_the_others_with_one_line: runs took {time.monotonic() - t0:.1f} s")

  # Process 0 of 2, alone: it gives up after --init-timeout, with one line.
  status, _, stderr = alone_results[0]
  elapsed = alone.ended[0] - alone.start
  assert status == 1, stderr[-3000:]
  line = stderr.strip().splitlines()[-1]
  assert line.startswith(f"jrnn: error: process 0 waited {INIT_TIMEOUT} s for all 2 processes to join at localhost:")
  assert len(_errors(stderr, "jrnn: error:")) == 1
  print(f"lone process exited {elapsed:.1f} s after its start: {line}")
  assert INIT_TIMEOUT <= elapsed < INIT_TIMEOUT + 20  # the timeout, plus starting Python and JAX

  # A frozen process: the other's watchdog misses its heartbeat (the frozen one is killed by the harness).
  status, _, stderr = frozen_results[0]
  detected_s = frozen.ended[0] - stopped_at
  assert status == 1, stderr[-3000:]
  line = stderr.strip().splitlines()[-1]
  assert line.startswith("worker: error: process 1 of 2 stopped responding (no heartbeat for "), line
  print(f"frozen process detected in {detected_s:.1f} s: {line}")
  assert worker.HEARTBEAT - 1 <= detected_s < worker.HEARTBEAT + 3

  # A process that fails: the other stops too, quoting it.
  (status0, _, stderr0), (status1, _, stderr1) = failing_results[0], failing_results[1]
  delay_s = failing.ended[0] - failing.ended[1]
  assert status1 == 3, stderr1[-3000:]  # the status it passed to exit_with_failure
  assert status0 == 1, stderr0[-3000:]
  assert stderr0.strip().splitlines()[-1] == "worker: error: process 1 of 2 failed: disk full (the test's own failure)"
  print(f"process 1's failure reached process 0 in {delay_s:.1f} s")
  assert delay_s < 3


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--coordinator", "localhost:1234"], "--coordinator, --num-processes and --process-id go together"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id must be between 0 and 1"),
    (["--distributed", "--init-timeout", "0"], "--init-timeout must be a positive number of seconds"),
  ],
)
def test_bad_distributed_flags_are_usage_errors(flags, message, tmp_path, capsys):
  assert cli.main(TRAIN + ["--steps", "2", "--checkpoint-dir", str(tmp_path)] + flags) == 2
  assert message in capsys.readouterr().err
