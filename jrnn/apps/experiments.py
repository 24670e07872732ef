"""Ready-made training set-ups for the tasks in :mod:`jrnn.tasks` (used by the ``jrnn`` command).

An :class:`Experiment` ties a task to a model (a cell and a linear head): a
loss in the seeds' many-to-one or many-to-many form, a batch for every step
number, an evaluation and the task's baselines. ``build(config, key)`` makes
one from a plain dict (the command line's flags), so the same dict saved in a
checkpoint rebuilds the same experiment.

Every set-up runs its model as ``jrnn.unroll_batch(cell, params, xs[B, T, I],
**options)`` and then the linear head, where ``options`` are the config's
``scan``, ``projection``, ``remat``, ``vjp``, ``precision`` and ``kernel``
(:data:`OPTION_DEFAULTS`; see :func:`jrnn.unroll`): they change how the scan
runs and what it stores, not the values it computes (``precision``, which the
head's product takes too, changes their rounding on TPU and GPU).

=========  ============  =====================================  ======================
task       form          batch ``i``                            metric vs baseline
=========  ============  =====================================  ======================
dogs       many-to-many  the one "dog" sequence                 loss vs ln 4
adding     many-to-one   ``B`` fresh sequences of length T      test MSE vs predict-1
copy       many-to-many  ``B`` fresh sequences, T blanks        test CE vs memoryless
chars      many-to-many  window ``i`` of ``B`` streams (TBPTT)  valid CE vs bigram
sunspots   many-to-one   ``B`` random training windows          test MSE vs persistence
dates      seq2seq       ``B`` random (date, ISO date) pairs    test CE vs no-source
reverse    seq2seq       ``B`` random (string, reverse) pairs   test CE vs no-source
words      many-to-many  window ``i`` of ``B`` streams (TBPTT)  valid ppl vs n-grams
=========  ============  =====================================  ======================

``dates`` and ``reverse`` train the encoder-decoder of :mod:`jrnn.apps.seq2seq`
(``--attention none`` for the plain one) on :mod:`jrnn.tasks.transduction`'s
pairs and report the greedy decodings' exact-match accuracy too; reverse's
``_longer`` metrics are on strings longer than any seen in training.

``words`` trains the language model of :mod:`jrnn.apps.wordlm` (embedding,
``layers`` stacked cells, dropout, tied output layer) on
:mod:`jrnn.tasks.words`; ``train_tokens`` keeps only the first tokens of the
training split, and the baselines are counted on those same tokens;
``eval_tokens`` scores only the first tokens of the validation and test
splits (the baselines too), for quick runs.

In a multi-process run each process builds the experiment with ``rows``, its
share of the global batch (:func:`jrnn.distributed.process_rows`): ``batch_fn``
then returns only those rows of the global batch ``i``, and ``initial_carry``
only their carries. chars and sunspots read only their rows of the data (the
streams, the drawn windows); adding and copy draw the global batch from the
step's key, which is cheap, and keep their rows. Evaluation is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn import _checks
from jrnn import losses
from jrnn.tasks import COPY_CLASSES
from jrnn.tasks import COPY_LENGTH
from jrnn.tasks import DOGS_VOCAB
from jrnn.tasks import adding as adding_data
from jrnn.tasks import adding_baseline
from jrnn.tasks import chars as chars_task
from jrnn.tasks import copy as copy_data
from jrnn.tasks import copy_baseline
from jrnn.tasks import dogs as dogs_data
from jrnn.tasks import sunspots as sunspots_task

CELLS = {"elman": jrnn.elman, "gru": jrnn.gru, "lstm": jrnn.lstm}
TASKS = ("dogs", "adding", "copy", "chars", "sunspots", "dates", "reverse", "words")

# How the sequence runs (jrnn.unroll's options), the same default for every task. A config saved before
# these keys existed resolves to these defaults, i.e. the behaviour it was trained with.
OPTION_DEFAULTS = {
  "scan": "auto",
  "projection": "auto",
  "remat": "none",
  "vjp": "autodiff",
  "precision": None,
  "kernel": "auto",
}
SCANS = ("auto", "sequential", "associative")
PROJECTIONS = ("auto", "hoisted", "per_step")
REMATS = ("none", "step", "sqrt")  # or a positive int chunk length
VJPS = ("autodiff", "fused")
KERNELS = ("auto", "xla", "cudnn", "cpu")
PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")  # None: JAX's default

# Defaults per task, measured on 2 shared CPU cores: adding reaches test MSE < 0.01 at T = 100 by step
# ~500 (1500 leave a margin); copy (T = 10) reaches CE ~0.11 against the memoryless 0.69; chars beats the
# bigram baseline by step ~200; sunspots reaches about half the persistence baseline's MSE.
DEFAULTS = {
  "dogs": dict(
    cell="elman", hidden=3, steps=300, batch=1, lr=0.05, optimizer="adam", seq_len=3, clip_norm=None, eval_every=100
  ),
  "adding": dict(
    cell="lstm", hidden=64, steps=1500, batch=64, lr=0.01, optimizer="adam", seq_len=100, clip_norm=1.0, eval_every=100
  ),
  "copy": dict(
    cell="lstm", hidden=128, steps=4000, batch=32, lr=0.01, optimizer="adam", seq_len=10, clip_norm=1.0, eval_every=500
  ),
  "chars": dict(
    cell="lstm", hidden=256, steps=2000, batch=32, lr=0.005, optimizer="adam", seq_len=32, clip_norm=1.0, eval_every=200
  ),
  "sunspots": dict(
    cell="lstm", hidden=32, steps=600, batch=32, lr=0.003, optimizer="adam", seq_len=20, clip_norm=1.0, eval_every=100
  ),
  # seq_len: dates, unused (the formats fix it); reverse, the longest training string (tests go to twice it)
  "dates": dict(
    cell="gru",
    hidden=64,
    steps=1000,
    batch=64,
    lr=0.003,
    optimizer="adam",
    seq_len=29,
    clip_norm=1.0,
    eval_every=200,
    attention="additive",
  ),
  "reverse": dict(
    cell="gru",
    hidden=64,
    steps=2000,
    batch=64,
    lr=0.003,
    optimizer="adam",
    seq_len=12,
    clip_norm=1.0,
    eval_every=250,
    attention="additive",
  ),
  # words: Zaremba et al.'s small model (2 x 200, windows of 35, batch 20) with Adam; train_tokens None: all
  "words": dict(
    cell="lstm",
    hidden=200,
    steps=3000,
    batch=20,
    lr=0.003,
    optimizer="adam",
    seq_len=35,
    clip_norm=1.0,
    eval_every=250,
    layers=2,
    dropout=0.5,
    train_tokens=None,
    eval_tokens=None,
  ),
}
WORDS_FLAGS = ("layers", "dropout", "train_tokens", "eval_tokens")  # the config keys that only --task words takes
SEQ2SEQ_TASKS = ("dates", "reverse")  # encoder-decoders (jrnn.apps.seq2seq); --attention applies to these
ATTENTIONS = ("none", "additive", "dot", "general")


ModelParams = jrnn.ModelParams  # the cell's and the head's params


class Experiment(NamedTuple):
  """A task bound to a model.

  Attributes:
    task: the task's name.
    cell, head: the model.
    input_size: the cell's input size.
    init: ``key -> ModelParams``.
    loss_fn: ``(params, batch) -> loss``, or ``-> (loss, carry)`` when
      ``initial_carry`` is not None (stateful TBPTT; the batch is then
      ``(window, carry)``).
    batch_fn: ``i -> batch`` for step ``i``, a pure function of ``i``: the
      global batch, or only the rows given to :func:`build`.
    evaluate: ``(params, full) -> {name: float}``; ``full=False`` may use a
      subset (cheap enough to run during training).
    metric: the name in ``evaluate``'s result that the baselines compare with.
    baselines: ``{description: value}`` of the same metric.
    initial_carry: ``params -> batched carry`` for stateful training (one row
      per row of ``batch_fn``'s batches), or None.
    metadata: JSON-serialisable data the experiment needs again (the vocabulary).
    key: for a loss that draws random numbers (dropout), the run's key:
      ``loss_fn`` then takes ``(params, batch, key)``, the step is built with
      ``make_step(..., has_rng=True)`` and :func:`jrnn.train.fit` is given
      ``key=`` (step ``i`` gets ``fold_in(key, i)``). None: no randomness.
  """

  task: str
  cell: Any
  head: Any
  input_size: int
  init: Callable[[jax.Array], ModelParams]
  loss_fn: Callable[..., Any]
  batch_fn: Callable[[int], Any]
  evaluate: Callable[[ModelParams, bool], dict]
  metric: str
  baselines: dict
  initial_carry: Callable[[ModelParams], Any] | None = None
  metadata: dict | None = None
  key: jax.Array | None = None


class ConfigError(ValueError):
  """A configuration that cannot work (a flag out of range, an impossible combination)."""


def resolve(config: dict) -> dict:
  """``config`` with missing entries filled from the task's defaults, checked."""
  task = config.get("task")
  if task not in DEFAULTS:
    raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}.")
  out: dict[str, Any] = dict(DEFAULTS[task], seed=0, **OPTION_DEFAULTS)
  out.update({k: v for k, v in config.items() if v is not None})
  if out["cell"] not in CELLS:
    raise ConfigError(f"unknown cell {out['cell']!r}; choose one of {', '.join(CELLS)}.")
  if not _checks.is_int_at_least(out["seed"], 0):
    raise ConfigError(f"--seed must be a non-negative integer, got {out['seed']!r}.")
  for name in ("hidden", "steps", "batch", "seq_len", "eval_every"):
    if not _checks.is_positive_int(out[name]):
      raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {out[name]!r}.")
  if not (isinstance(out["lr"], (int, float)) and math.isfinite(out["lr"]) and out["lr"] > 0):
    raise ConfigError(f"--lr must be a positive number, got {out['lr']!r}.")
  if out["clip_norm"] is not None and not out["clip_norm"] > 0:
    raise ConfigError(f"--clip-norm must be positive, got {out['clip_norm']!r}.")
  for name, allowed in (("scan", SCANS), ("projection", PROJECTIONS), ("vjp", VJPS), ("kernel", KERNELS)):
    if out[name] not in allowed:
      raise ConfigError(f"--{name} must be one of {', '.join(allowed)}; got {out[name]!r}.")
  if out["precision"] is not None and out["precision"] not in PRECISIONS:
    raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}; got {out['precision']!r}.")
  remat = out["remat"]
  if not (remat in REMATS or (isinstance(remat, int) and not isinstance(remat, bool) and remat >= 1)):
    raise ConfigError(f"--remat must be none, step, sqrt or a positive integer (chunk length), got {remat!r}.")
  if task in SEQ2SEQ_TASKS and out["attention"] not in ATTENTIONS:
    raise ConfigError(f"--attention must be one of {', '.join(ATTENTIONS)}; got {out['attention']!r}.")
  if task not in SEQ2SEQ_TASKS and out.get("attention") is not None:
    raise ConfigError(f"--attention applies to the encoder-decoder tasks ({', '.join(SEQ2SEQ_TASKS)}), not {task}.")
  if task != "words" and any(out.get(k) is not None for k in WORDS_FLAGS):
    given = ", ".join("--" + k.replace("_", "-") for k in WORDS_FLAGS if out.get(k) is not None)
    raise ConfigError(f"{given} apply to --task words, not {task}.")
  if task == "words":
    if not _checks.is_positive_int(out["layers"]):
      raise ConfigError(f"--layers must be a positive integer, got {out['layers']!r}.")
    if not (isinstance(out["dropout"], (int, float)) and 0 <= out["dropout"] < 1):
      raise ConfigError(f"--dropout must be in [0, 1), got {out['dropout']!r}.")
    if out["train_tokens"] is not None and not _checks.is_int_at_least(out["train_tokens"], 2):
      raise ConfigError(f"--train-tokens must be an integer of at least 2, got {out['train_tokens']!r}.")
    if out["eval_tokens"] is not None and not _checks.is_int_at_least(out["eval_tokens"], 64):
      raise ConfigError(f"--eval-tokens must be an integer of at least 64, got {out['eval_tokens']!r}.")
  if task == "dogs" and (out["seq_len"] != 3 or out["batch"] != 1):
    raise ConfigError("the dogs task is the one sequence d-o-g: it needs --seq-len 3 and --batch 1.")
  if task == "adding" and out["seq_len"] < 2:
    raise ConfigError("the adding task needs --seq-len of at least 2 (one marker in each half).")
  return out


def sequence_options(config: dict) -> dict:
  """The keyword options of ``jrnn.unroll_batch`` that ``config`` asks for (a missing key: its default)."""
  options = {k: config.get(k, default) for k, default in OPTION_DEFAULTS.items()}
  if options["remat"] == "none":
    options["remat"] = None
  return options


class _Model(NamedTuple):
  """A cell with a linear head, run over batches with fixed sequence options."""

  cell: Any
  head: Any
  init: Callable[[jax.Array], ModelParams]
  options: dict

  def many_to_one(self, params, xs):
    """Batched many-to-one: ``xs [B, T, I] -> y [B, O]``, the head on the last step's output."""
    _, hs = jrnn.unroll_batch(self.cell, params.cell, xs, **self.options)
    return self.head.apply(params.head, hs[:, -1], precision=self.options.get("precision"))

  def many_to_many(self, params, xs, carry=None):
    """Batched many-to-many: ``xs [B, T, I] -> (carry, ys [B, T, O])``."""
    carry, hs = jrnn.unroll_batch(self.cell, params.cell, xs, carry, **self.options)
    return carry, self.head.apply(params.head, hs, precision=self.options.get("precision"))


def _model(config, input_size, output_size):
  cell = CELLS[config["cell"]](config["hidden"])
  head = jrnn.linear(output_size)
  options = sequence_options(config)
  try:  # trace once on a dummy batch, so that options the cell cannot run fail here, not at step 1
    jax.eval_shape(
      lambda: jrnn.unroll_batch(
        cell, cell.init(jax.random.key(0), input_size), jnp.zeros((1, 2, input_size)), **options
      )
    )
  except (ValueError, TypeError) as e:
    raise ConfigError(f"--cell {config['cell']} cannot run with these sequence options: {e}") from None

  @jax.jit  # one compilation instead of one per initializer op
  def init(key):
    kc, kh = jax.random.split(key)
    return ModelParams(cell.init(kc, input_size), head.init(kh, config["hidden"]))

  return _Model(cell, head, init, options)


def _rows_of(batch, rows):
  """The ``rows`` of every leaf with a batch dimension, as numpy (``rows=None``: ``batch`` as it is).

  numpy, because :func:`jrnn.sharding.shard_batch` takes a process's rows as
  host data, and slicing there compiles nothing.
  """
  if rows is None:
    return batch
  return jax.tree_util.tree_map(lambda x: np.asarray(x)[rows] if np.ndim(x) > 0 else x, batch)


def stream_windows(ids, config, rows, what):
  """Truncated BPTT over one token stream: ``(local_streams, batch_fn)`` (the ``chars`` and ``words`` tasks).

  ``ids`` is cut into ``config["batch"]`` parallel streams
  (:func:`jrnn.tasks.chars.streams`), of which this process keeps ``rows``;
  ``batch_fn(i)`` is window ``i`` (modulo the number of windows) of
  ``config["seq_len"]`` steps: ``(inputs, targets, first)``, ``first`` True on
  the first window of a pass, where the loss resets the carry
  (:func:`reset_on_first`). ``what`` names the data in the error for a stream
  too short for one window.
  """
  T, B = config["seq_len"], config["batch"]
  streams = chars_task.streams(ids, B)
  windows = (streams.shape[1] - 1) // T
  if windows < 1:
    raise ConfigError(f"--seq-len {T} with --batch {B} leaves no full window in the {what}.")
  streams = _rows_of(streams, rows)  # this process's streams only

  def batch_fn(i):
    w = i % windows
    chunk = streams[:, w * T : w * T + T + 1]
    return chunk[:, :-1], chunk[:, 1:], np.asarray(w == 0)  # a new pass over the stream resets the carry

  return streams, batch_fn


def reset_on_first(first, carry):
  """``carry`` with every leaf zeroed where ``first`` (from :func:`stream_windows`) is True."""
  return jax.tree_util.tree_map(lambda c: jnp.where(first, jnp.zeros_like(c), c), carry)


def _dogs(config, key, rows):
  del key, rows  # one sequence: a run of several processes cannot split it (jrnn train says so first)
  data = dogs_data()
  m = _model(config, len(DOGS_VOCAB), len(DOGS_VOCAB))
  xs, labels = data.xs[None], data.labels[None]

  def loss_fn(params, batch):
    xs, labels = batch
    return losses.softmax_cross_entropy(m.many_to_many(params, xs)[1], labels)

  @jax.jit
  def _eval(params):
    logits = m.many_to_many(params, xs)[1][0]
    return losses.softmax_cross_entropy(logits, labels[0]), jax.nn.softmax(logits[-1])[3]

  def evaluate(params, full):
    del full
    loss, p_s = _eval(params)
    return {"loss": float(loss), "p(s|dog)": float(p_s)}

  return Experiment(
    "dogs",
    m.cell,
    m.head,
    4,
    m.init,
    loss_fn,
    lambda i: (xs, labels),
    evaluate,
    "loss",
    {"uniform (ln 4)": math.log(4)},
  )


def _adding(config, key, rows):
  T, B = config["seq_len"], config["batch"]
  m = _model(config, 2, 1)
  k_train, k_test = jax.random.split(key)
  test = adding_data(k_test, 1000, T)

  def loss_fn(params, batch):
    return losses.mse(m.many_to_one(params, batch.xs), batch.targets)

  test_mse = jax.jit(lambda params: loss_fn(params, test))

  def batch_fn(i):
    return _rows_of(adding_data(jax.random.fold_in(k_train, i), B, T), rows)

  return Experiment(
    "adding",
    m.cell,
    m.head,
    2,
    m.init,
    loss_fn,
    batch_fn,
    lambda params, full: {"test_mse": float(test_mse(params))},
    "test_mse",
    {"predict 1": float(adding_baseline(test.targets))},
  )


def _copy(config, key, rows):
  T, B = config["seq_len"], config["batch"]
  m = _model(config, COPY_CLASSES, COPY_CLASSES)
  k_train, k_test = jax.random.split(key)
  test = copy_data(k_test, 500, T)

  def loss_fn(params, batch):
    return losses.softmax_cross_entropy(m.many_to_many(params, batch.xs)[1], batch.labels)

  @jax.jit
  def _eval(params):
    logits = m.many_to_many(params, test.xs)[1]
    recalled = jnp.argmax(logits[:, -COPY_LENGTH:], axis=-1) == test.labels[:, -COPY_LENGTH:]
    return losses.softmax_cross_entropy(logits, test.labels), jnp.mean(recalled.astype(jnp.float32))

  def evaluate(params, full):
    del full
    ce, acc = _eval(params)
    return {"test_ce": float(ce), "copy_accuracy": float(acc)}

  return Experiment(
    "copy",
    m.cell,
    m.head,
    COPY_CLASSES,
    m.init,
    loss_fn,
    lambda i: _rows_of(copy_data(jax.random.fold_in(k_train, i), B, T), rows),
    evaluate,
    "test_ce",
    {"memoryless": copy_baseline(T)},
  )


def _chars(config, key, rows):
  del key  # the corpus order is fixed; batch i is window i of the streams
  data = chars_task.chars()
  V = len(data.vocab)
  m = _model(config, V, V)
  streams, batch_fn = stream_windows(data.train, config, rows, "training text")
  valid_streams = chars_task.streams(data.valid, 16)

  def loss_fn(params, batch):
    (x, y, first), carry = batch
    carry = reset_on_first(first, carry)
    carry, logits = m.many_to_many(params, jax.nn.one_hot(x, V, dtype=jnp.float32), carry)
    return losses.softmax_cross_entropy(logits, y), carry

  @jax.jit
  def _valid_loss(params, ids):
    _, logits = m.many_to_many(params, jax.nn.one_hot(ids[:, :-1], V, dtype=jnp.float32))
    return losses.softmax_cross_entropy(logits, ids[:, 1:])

  def evaluate(params, full):
    # during training, the first 1,000 characters of each of the 16 validation streams
    ids = valid_streams if full else valid_streams[:, :1001]
    return {"valid_loss": float(_valid_loss(params, ids))}

  def initial_carry(params):
    c = m.cell.initial_carry(params.cell)
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (streams.shape[0],) + x.shape), c)

  baselines = {
    f"uniform (ln {V})": chars_task.uniform_baseline(V),
    "bigram (add-one)": chars_task.bigram_baseline(data.train, data.valid, V),
  }
  return Experiment(
    "chars",
    m.cell,
    m.head,
    V,
    m.init,
    loss_fn,
    batch_fn,
    evaluate,
    "valid_loss",
    baselines,
    initial_carry,
    {"vocab": data.vocab},
  )


def _sunspots(config, key, rows):
  try:
    data = sunspots_task.sunspots(config["seq_len"])
  except (ImportError, ValueError) as e:  # statsmodels missing; a window too long for the series
    raise ConfigError(str(e)) from None
  B = config["batch"]
  m = _model(config, 1, 1)
  train_xs, train_ys = jnp.asarray(data.train_xs), jnp.asarray(data.train_ys)

  def loss_fn(params, batch):
    xs, ys = batch
    return losses.mse(m.many_to_one(params, xs), ys)

  def batch_fn(i):
    idx = _rows_of(jax.random.randint(jax.random.fold_in(key, i), (B,), 0, train_xs.shape[0]), rows)
    return train_xs[idx], train_ys[idx]

  test_mse = jax.jit(lambda params: loss_fn(params, (jnp.asarray(data.test_xs), jnp.asarray(data.test_ys))))
  return Experiment(
    "sunspots",
    m.cell,
    m.head,
    1,
    m.init,
    loss_fn,
    batch_fn,
    lambda params, full: {"test_mse": float(test_mse(params))},
    "test_mse",
    {"persistence": sunspots_task.persistence_baseline(data.test_xs, data.test_ys)},
    metadata={"mean": data.mean, "std": data.std},
  )


def _words(config, key, rows):
  from jrnn.apps import wordlm  # it builds on this module

  return wordlm.experiment(config, key, rows)


def _seq2seq(task):
  def builder(config, key, rows):
    from jrnn.apps import seq2seq  # it builds on this module

    return seq2seq.experiment(task, config, key, rows)

  return builder


_BUILDERS = {
  "dogs": _dogs,
  "adding": _adding,
  "copy": _copy,
  "chars": _chars,
  "sunspots": _sunspots,
  "dates": _seq2seq("dates"),
  "reverse": _seq2seq("reverse"),
  "words": _words,
}


def build(config: dict, key: jax.Array, *, rows: slice | None = None) -> Experiment:
  """The :class:`Experiment` for a resolved ``config`` (see :func:`resolve`); ``key`` draws the data.

  ``rows``: in a multi-process run, this process's rows of the global batch
  (:func:`jrnn.distributed.process_rows`); ``batch_fn`` and ``initial_carry``
  then cover those rows only. Default: the whole batch.
  """
  try:
    return _BUILDERS[config["task"]](config, key, rows)
  except ConfigError:
    raise
  except ValueError as e:  # a task's own check (too few tokens for the batch, ...)
    raise ConfigError(str(e)) from None
