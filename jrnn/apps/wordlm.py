"""A word-level LSTM language model in the manner of Zaremba et al. (2014), for :mod:`jrnn.tasks.words`.

The model that ``jrnn train --task words`` trains and
``notebooks/08_word_language_model.ipynb`` studies, built from jrnn's public
pieces: an embedding (:func:`jrnn.embedding`), ``L`` stacked recurrent
layers and an output layer tied to the embedding (:func:`jrnn.tied_linear`),
with standard dropout on every non-recurrent connection:

.. math::

   h^{(0)}_t = \\mathrm{dropout}(E[w_t]), \\qquad
   h^{(l)}_t = \\mathrm{cell}_l(h^{(l)}_{t-1}, \\mathrm{dropout}(h^{(l-1)}_t))\\ \\text{for } l \\ge 1, \\qquad
   z_t = \\mathrm{dropout}(h^{(L)}_t)\\, E^\\top + b

where each ``dropout`` draws an independent mask per entry and step
(:func:`jrnn.dropout`), the recurrent connections ``h_{t-1} -> h_t`` are
never dropped, and with ``train=False`` every dropout is the identity. The
input of layer 1 is dropped once (``h^{(0)}``), so ``L`` layers have ``L + 1``
dropout sites. The carry runs on across training windows (truncated BPTT)
and across files, as it runs across sentences in Zaremba et al.'s Penn
Treebank model: the ``<eof>`` token between two files tells the model that a
new one starts.

References:
  Zaremba, Sutskever & Vinyals, "Recurrent neural network regularization", arXiv:1409.2329 (2014).
  Press & Wolf, "Using the output embedding to improve language models", EACL (2017).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn import losses

CELLS = {"elman": jrnn.elman, "gru": jrnn.gru, "lstm": jrnn.lstm}


class WordLMParams(NamedTuple):
  """The params of a :class:`WordLM`: the tied output layer (it holds the embedding) and each layer's cell."""

  head: Any
  layers: tuple


class WordLM(NamedTuple):
  """A stacked recurrent language model with a tied embedding (see the module's docstring).

  Attributes:
    vocab_size: ``V``.
    hidden: every layer's hidden size, and the embedding's.
    layers: ``L``, the number of recurrent layers.
    dropout: the drop probability ``p`` of every dropout site, in ``[0, 1)``.
    cell: ``"lstm"``, ``"gru"`` or ``"elman"``.
    options: :func:`jrnn.unroll_batch`'s keyword options (None: the defaults).
  """

  vocab_size: int
  hidden: int
  layers: int = 2
  dropout: float = 0.5
  cell: str = "lstm"
  options: dict | None = None

  def _parts(self):
    embed = jrnn.embedding(self.vocab_size, self.hidden)
    return embed, jrnn.tied_linear(embed), CELLS[self.cell](self.hidden)

  def init(self, key: jax.Array) -> WordLMParams:
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"WordLM: dropout must be in [0, 1), got {self.dropout!r}.")
    _, head, cell = self._parts()
    kh, *kl = jax.random.split(key, self.layers + 1)
    return WordLMParams(head.init(kh, self.hidden), tuple(cell.init(k, self.hidden) for k in kl))

  def initial_carry(self, params: WordLMParams, batch_size: int) -> tuple:
    """Each layer's initial carry, for ``batch_size`` streams."""
    _, _, cell = self._parts()
    return tuple(
      jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (batch_size,) + x.shape), cell.initial_carry(p))
      for p in params.layers
    )

  def apply(self, params: WordLMParams, ids, carry, *, train: bool, key: jax.Array | None = None):
    """``ids [B, T] -> (carry, logits [B, T, V])``; ``train=True`` applies dropout with masks drawn from ``key``."""
    embed, head, cell = self._parts()
    keys: list[jax.Array | None] = [None] * (self.layers + 1)
    if train and self.dropout > 0:
      if key is None:
        raise ValueError("WordLM.apply: train=True with dropout needs a key.")
      keys = list(jax.random.split(key, self.layers + 1))

    def drop(k, x):
      return x if k is None else jrnn.dropout(k, self.dropout, x)

    h = embed.apply(params.head.embedding, ids)
    new = []
    for layer, c, k in zip(params.layers, carry, keys):
      c, h = jrnn.unroll_batch(cell, layer, drop(k, h), c, **(self.options or {}))
      new.append(c)
    return tuple(new), head.apply(params.head, drop(keys[-1], h))

  def generate(self, params: WordLMParams, prime, length: int, key: jax.Array, *, temperature: float = 1.0):
    """Samples ``length`` token ids after the ids ``prime`` (at least one), from ``softmax(z_t / temperature)``.

    The model reads ``prime``, then each sampled token is fed back as the
    next input (no dropout). Returns the ``length`` sampled ids ``[length]``.
    """
    prime = jnp.asarray(prime)
    if prime.ndim != 1 or prime.shape[0] < 1:
      raise ValueError(f"WordLM.generate: prime must be a non-empty 1-D array of ids, got shape {prime.shape}.")
    if not temperature > 0:
      raise ValueError(f"WordLM.generate: temperature must be positive, got {temperature!r}.")
    carry, logits = self.apply(params, prime[None], self.initial_carry(params, 1), train=False)

    def step(state, k):
      carry, z = state
      token = jax.random.categorical(k, z / temperature).astype(prime.dtype)
      carry, z = self.apply(params, token[None, None], carry, train=False)
      return (carry, z[0, 0]), token

    _, tokens = jax.lax.scan(step, (carry, logits[0, -1]), jax.random.split(key, length))
    return tokens


def _window_nll(model, params, carry, x, y, weight):
  """The carry after a window, and the summed negative log-likelihood of its targets ``y`` weighted by ``weight``."""
  carry, logits = model.apply(params, x, carry, train=False)
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], axis=-1)[..., 0]
  return carry, -jnp.sum(logp * weight)


def perplexity_fn(model: WordLM, *, streams: int = 16, window: int = 256):
  """``(params, ids) -> (perplexity, tokens scored)`` of ``model`` without dropout, compiled once for every ``ids``.

  ``ids`` are read as ``streams`` parallel streams (:func:`jrnn.tasks.chars.streams`:
  the tail that does not fill them is left out) in windows of ``window``
  steps, the carry running on from window to window as in training. The last
  window is padded to full length with zero weight, so every window, of any
  ``ids``, has one shape and one compilation.
  """
  from jrnn.tasks import chars

  step = jax.jit(functools.partial(_window_nll, model))

  def fn(params, ids):
    data = chars.streams(np.asarray(ids), streams)
    per = data.shape[1] - 1
    padded = np.zeros((streams, -(-per // window) * window + 1), data.dtype)
    padded[:, : per + 1] = data
    weight = np.zeros(padded[:, 1:].shape, np.float32)
    weight[:, :per] = 1.0
    carry, total = model.initial_carry(params, streams), 0.0
    for start in range(0, per, window):
      w = slice(start, start + window)
      carry, nll = step(params, carry, padded[:, w], padded[:, start + 1 : start + window + 1], weight[:, w])
      total += float(nll)
    return float(np.exp(total / (streams * per))), streams * per

  return fn


def experiment(config: dict, key: jax.Array, rows):
  """The :class:`jrnn.apps.experiments.Experiment` of ``--task words``."""
  from jrnn.apps import experiments
  from jrnn.tasks import words as words_task

  data = words_task.words()
  V = len(data.vocab)
  train = data.train[: config["train_tokens"]]  # [:None]: all of it
  valid, test = data.valid[: config["eval_tokens"]], data.test[: config["eval_tokens"]]
  model = WordLM(
    V,
    config["hidden"],
    config["layers"],
    config["dropout"],
    config["cell"],
    experiments.sequence_options(config),
  )
  try:
    params = jax.eval_shape(model.init, jax.random.key(0))
    jax.eval_shape(
      lambda p: model.apply(p, jnp.zeros((1, 2), jnp.int32), model.initial_carry(p, 1), train=False), params
    )
  except (ValueError, TypeError) as e:
    raise experiments.ConfigError(f"--task words cannot run with these options: {e}") from None
  streams, batch_fn = experiments.stream_windows(train, config, rows, "training tokens")

  def loss_fn(params, batch, key):  # key: fit's fold_in(run key, step), the step's dropout masks
    (x, y, first), carry = batch
    carry = experiments.reset_on_first(first, carry)
    carry, logits = model.apply(params, x, carry, train=True, key=key)
    return losses.softmax_cross_entropy(logits, y), carry

  perplexity = perplexity_fn(model)

  def evaluate(params, full):  # all of `valid` every time (3-4 s for the whole split); `test` at the end
    out = {"valid_ppl": perplexity(params, valid)[0]}
    if full:
      out["test_ppl"] = perplexity(params, test)[0]
    return out

  n = f"{train.size:,} training tokens"
  baselines = {
    f"unigram, add-one ({n})": words_task.unigram_perplexity(train, valid, V),
    f"Kneser-Ney trigram ({n})": words_task.kneser_ney_perplexity(train, valid, V),
  }
  return experiments.Experiment(
    "words",
    model,
    None,
    V,
    jax.jit(model.init),
    loss_fn,
    batch_fn,
    evaluate,
    "valid_ppl",
    baselines,
    lambda params: model.initial_carry(params, streams.shape[0]),
    {"vocab": list(data.vocab)},
    jax.random.fold_in(key, 1),
  )


def sample_text(model: WordLM, params: WordLMParams, vocab, prime: str, length: int, key: jax.Array, **kw) -> str:
  """``length`` sampled tokens after the source text ``prime``, rendered by :func:`jrnn.tasks.words.detokenize`.

  ``prime`` is tokenized like the corpus (an empty prime: the start of a
  file, after ``<eof>``); the result starts with it. ``kw``: ``temperature``.
  """
  from jrnn.tasks import words

  toks = words.tokens(prime)[:-1]  # without <eof>
  if toks and toks[-1] == "<eol>" and not prime.endswith("\n"):
    toks = toks[:-1]  # tokenize ends every source with a line end; a prime that does not, continues its line
  ids = words.encode(toks or ["<eof>"], vocab)
  out = model.generate(params, ids, length, key, **kw)
  return words.detokenize(toks + words.decode(np.asarray(out), vocab))
