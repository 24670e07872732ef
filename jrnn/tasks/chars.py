"""Character-level language modelling on a corpus that ships with Python.

The corpus is the text of :mod:`pydoc_data.topics` (the help topics of the
Python documentation, ~465,000 characters and ~100 distinct ones in CPython
3.11), so nothing is downloaded. The vocabulary is the sorted set of
characters of the whole text; the first ``1 - valid_fraction`` of the text is
the training split, the rest the validation split.

The model reads ``x_1 … x_T`` and predicts ``x_{t+1}`` at every step
(many-to-many), scored by the cross-entropy in nats per character. Two
baselines put the number in context:

* the uniform model, ``ln |V|`` nats;
* a bigram model ``p(b | a) = (n_{ab} + α) / (n_a + α |V|)`` counted on the
  training split (add-α smoothing, α = 1 by default: Laplace's rule),
  evaluated on the validation split by :func:`bigram_baseline`.

References:
  Karpathy, Johnson & Fei-Fei, "Visualizing and understanding recurrent
  networks", arXiv:1506.02078 (2015).
  Jurafsky & Martin, "Speech and Language Processing", ch. 3 (n-gram language
  models, Laplace smoothing).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import _modes
from jrnn import _unroll

__all__ = (
  "CharData",
  "bigram_baseline",
  "chars",
  "corpus",
  "decode",
  "encode",
  "generate",
  "streams",
  "uniform_baseline",
  "windows",
)


class CharData(NamedTuple):
  """A character corpus split for language modelling.

  Attributes:
    vocab: the characters, sorted; token ``i`` is ``vocab[i]``.
    train: training token ids ``[N_train]`` (int32 numpy).
    valid: validation token ids ``[N_valid]`` (int32 numpy).
  """

  vocab: str
  train: np.ndarray
  valid: np.ndarray


def corpus() -> str:
  """The text of ``pydoc_data.topics``: its topics in sorted order, joined by blank lines."""
  from pydoc_data import topics

  return "\n\n".join(topics.topics[k] for k in sorted(topics.topics))


def encode(text: str, vocab: str) -> np.ndarray:
  """Token ids ``[len(text)]`` of ``text``; raises ValueError on characters not in ``vocab``."""
  index = {c: i for i, c in enumerate(vocab)}
  missing = sorted(set(text) - index.keys())
  if missing:
    raise ValueError(f"characters {''.join(missing)!r} are not in the vocabulary.")
  return np.fromiter((index[c] for c in text), np.int32, len(text))


def decode(ids, vocab: str) -> str:
  """The text of token ids."""
  return "".join(vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def chars(text: str | None = None, *, valid_fraction: float = 0.1) -> CharData:
  """Splits ``text`` (default: :func:`corpus`) into training and validation ids."""
  text = corpus() if text is None else text
  if not 0.0 < valid_fraction < 1.0:
    raise ValueError(f"jrnn.tasks.chars: valid_fraction must be in (0, 1), got {valid_fraction!r}.")
  vocab = "".join(sorted(set(text)))
  ids = encode(text, vocab)
  cut = int(round(len(ids) * (1.0 - valid_fraction)))
  if cut < 2 or len(ids) - cut < 2:
    raise ValueError(f"jrnn.tasks.chars: text of {len(ids)} characters is too short to split.")
  return CharData(vocab, ids[:cut], ids[cut:])


def windows(ids: jax.typing.ArrayLike, key: jax.Array, batch_size: int, length: int) -> tuple[jax.Array, jax.Array]:
  """Random training windows: ``xs [B, T]`` and next-character ``labels [B, T]`` (int32)."""
  ids = jnp.asarray(ids)
  if ids.shape[0] <= length:
    raise ValueError(f"jrnn.tasks.chars.windows: {ids.shape[0]} tokens are too few for windows of {length}.")
  starts = jax.random.randint(key, (batch_size, 1), 0, ids.shape[0] - length)
  idx = starts + jnp.arange(length + 1)[None, :]
  w = ids[idx]
  return w[:, :-1], w[:, 1:]


def streams(ids: np.ndarray, batch_size: int) -> np.ndarray:
  """Cuts ``ids`` into ``batch_size`` contiguous streams ``[B, N // B]`` for stateful (TBPTT) training.

  Stream ``b`` is ``ids[b * L : (b + 1) * L]``; the tail that does not fill a
  stream is dropped.
  """
  ids = np.asarray(ids)
  per = ids.shape[0] // batch_size
  if per < 2:
    raise ValueError(f"jrnn.tasks.chars.streams: {ids.shape[0]} tokens are too few for {batch_size} streams.")
  return ids[: per * batch_size].reshape(batch_size, per)


def bigram_baseline(train: np.ndarray, valid: np.ndarray, vocab_size: int, alpha: float = 1.0) -> float:
  """Cross-entropy (nats/char) on ``valid`` of an add-``alpha`` bigram model counted on ``train``.

  Each validation character ``valid[t]`` is scored given ``valid[t - 1]`` (the
  first one given the last training character).
  """
  train, valid = np.asarray(train, np.int64), np.asarray(valid, np.int64)
  counts = np.zeros((vocab_size, vocab_size), np.float64)
  np.add.at(counts, (train[:-1], train[1:]), 1.0)
  logp = np.log(counts + alpha) - np.log(counts.sum(axis=1, keepdims=True) + alpha * vocab_size)
  prev = np.concatenate([train[-1:], valid[:-1]])
  return float(-np.mean(logp[prev, valid]))


def uniform_baseline(vocab_size: int) -> float:
  """Cross-entropy of the uniform model, ``ln |V|`` nats/char."""
  return math.log(vocab_size)


def generate(
  cell, params, head, head_params, vocab: str, prime: str, length: int, key: jax.Array, *, temperature: float = 1.0
) -> str:
  """Samples ``length`` characters after ``prime`` from a character model.

  The model reads ``prime`` (its last character is the first input of
  :func:`jrnn.one_to_many`), then each sampled character, drawn from
  ``softmax(y_t / temperature)``, is fed back as the next input.

  Returns:
    The ``length`` generated characters (without the prime).
  """
  if not prime:
    raise ValueError("jrnn.tasks.chars.generate: prime must be at least one character.")
  if not temperature > 0:
    raise ValueError(f"jrnn.tasks.chars.generate: temperature must be positive, got {temperature!r}.")
  ids = encode(prime, vocab)
  dtype = jax.tree_util.tree_leaves(params)[0].dtype
  carry = None
  if len(ids) > 1:
    carry, _ = _unroll.unroll(cell, params, jax.nn.one_hot(ids[:-1], len(vocab), dtype=dtype))
  x0 = jax.nn.one_hot(ids[-1], len(vocab), dtype=dtype)
  _, _, fed = _modes.one_to_many(
    cell, params, head, head_params, x0, length, carry, feedback="sample", key=key, temperature=temperature
  )
  return decode(np.asarray(jnp.argmax(fed, axis=-1)), vocab)
