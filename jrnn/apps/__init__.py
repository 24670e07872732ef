"""Applications built on jrnn's public API: the ``jrnn`` command, ``make demo``, the tasks' training
set-ups and the benchmark harness.

* :mod:`jrnn.apps.cli`: the ``jrnn`` command (``jrnn train``, ``jrnn generate``,
  ``jrnn bench``; also ``python -m jrnn``).
* :mod:`jrnn.apps.demo`: ``make demo`` (``python -m jrnn.apps.demo``).
* :mod:`jrnn.apps.experiments`: a task from :mod:`jrnn.tasks` bound to a model,
  a loss, batches, an evaluation and baselines.
* :mod:`jrnn.apps.bench`: jrnn vs Flax vs PyTorch across sequence lengths
  (``jrnn bench``, ``python -m jrnn.apps.bench``).

The core library never imports this subpackage: ``import jrnn`` leaves it
unloaded, and nothing here is needed to use cells, unrolling or training.
"""
