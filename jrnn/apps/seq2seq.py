"""A character-level encoder-decoder, with or without attention, for the tasks of :mod:`jrnn.tasks.transduction`.

The model that ``jrnn train --task dates`` (and ``--task reverse``) trains
and ``notebooks/07_seq2seq_attention.ipynb`` studies, built from jrnn's public
pieces:

.. math::

   m_{1:S},\\ s_S = \\mathrm{encoder}(E[x_1] \\ldots E[x_S]), \\qquad
   s_0^{dec} = s_S, \\qquad z_u = \\mathrm{head}(\\mathrm{decoder}(s_{u-1}^{dec}, E[y_{u-1}]))

with one embedding ``E`` for both sides (:func:`jrnn.embedding`), a GRU or
LSTM encoder run with the source's padding mask (:func:`jrnn.unroll`: its
final carry is the one after the last character), and as decoder either the
same cell (the plain encoder-decoder of Sutskever et al. 2014 and Cho et al.
2014: the source reaches it only through ``s_S``) or
:func:`jrnn.attention_decoder` over the encoder's states ``m`` (Bahdanau et
al. 2015, Luong et al. 2015). The attention decoder's memory length is part
of its shape, so :meth:`Seq2Seq.decoder` makes one per padded source length;
the params are the same for every length.

Training is teacher forcing (``y_0 = bos``, cross-entropy of the next
character); decoding is :func:`jrnn.beam_search` (width 1: greedy).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn import losses

CELLS = {"gru": jrnn.gru, "lstm": jrnn.lstm}
ATTENTIONS = ("none", "additive", "dot", "general")


class Seq2SeqParams(NamedTuple):
  """The params of a :class:`Seq2Seq`."""

  embed: Any
  encoder: Any
  decoder: Any
  head: Any


class Seq2Seq(NamedTuple):
  """An encoder-decoder over a character vocabulary (see the module's docstring).

  Attributes:
    vocab_size: ``V``, the specials included (``0`` padding, ``1`` bos, ``2`` eos).
    hidden: the cells' hidden size (also the embedding's).
    cell: ``"gru"`` or ``"lstm"``.
    attention: ``"none"`` (the plain encoder-decoder) or a :func:`jrnn.attention` kind.
    options: :func:`jrnn.unroll`'s keyword options for the encoder and the
      teacher-forced decoder (None: the defaults).
  """

  vocab_size: int
  hidden: int
  cell: str = "gru"
  attention: str = "additive"
  options: dict | None = None  # jrnn.unroll's options for the encoder and the teacher-forced decoder

  BOS = 1
  EOS = 2

  def _parts(self):
    H = self.hidden
    return jrnn.embedding(self.vocab_size, H), CELLS[self.cell](H), jrnn.linear(self.vocab_size)

  def decoder(self, src_length: int) -> jrnn.Cell:
    """The decoder cell for sources padded to ``src_length`` (the same params for every length)."""
    _, cell, _ = self._parts()
    if self.attention == "none":
      return cell
    attention = jrnn.attention(self.attention)
    return jrnn.attention_decoder(CELLS[self.cell](self.hidden), attention, self.hidden, src_length)

  def init(self, key: jax.Array) -> Seq2SeqParams:
    if self.attention not in ATTENTIONS:
      raise ValueError(f"Seq2Seq: attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}.")
    embed, encoder, head = self._parts()
    ke, kenc, kdec, kh = jax.random.split(key, 4)
    H = self.hidden
    return Seq2SeqParams(embed.init(ke), encoder.init(kenc, H), self.decoder(1).init(kdec, H), head.init(kh, H))

  def start(self, params: Seq2SeqParams, src: jax.Array, src_mask: jax.Array) -> Any:
    """The decoder's state before ``bos`` for one source ``[S]`` (ids) with its mask ``[S]``."""
    embed, encoder, _ = self._parts()
    carry, memory = jrnn.unroll(
      encoder, params.encoder, embed.apply(params.embed, src), mask=src_mask, **(self.options or {})
    )
    if self.attention == "none":
      return carry
    return jrnn.attention_carry(self.decoder(src.shape[0]), params.decoder, memory, src_mask, carry)

  def logits(self, params: Seq2SeqParams, src, src_mask, dec_in) -> jax.Array:
    """Teacher-forced logits ``[U, V]`` of one pair (``dec_in [U]``: ``bos`` and the target)."""
    embed, _, head = self._parts()
    state = self.start(params, src, src_mask)
    _, hs = jrnn.unroll(
      self.decoder(src.shape[0]), params.decoder, embed.apply(params.embed, dec_in), state, **(self.options or {})
    )
    return head.apply(params.head, hs)

  def loss(self, params: Seq2SeqParams, batch) -> jax.Array:
    """Mean cross-entropy (nats per target character) of a batch ``(src, src_mask, dec_in, dec_out, dec_mask)``."""
    src, src_mask, dec_in, dec_out, dec_mask = batch
    logits = jax.vmap(lambda s, m, d: self.logits(params, s, m, d))(src, src_mask, dec_in)
    return losses.softmax_cross_entropy(logits, dec_out, dec_mask)

  def step_fn(self, params: Seq2SeqParams, src_length: int):
    """``(state, token) -> (state, logits [V])``: one decoding step, for :func:`jrnn.beam_search`."""
    embed, _, head = self._parts()
    step = self.decoder(src_length).step
    assert step is not None

    def fn(state, token):
      state, out = step(params.decoder, state, embed.apply(params.embed, token))
      return state, head.apply(params.head, out)

    return fn

  def decode(self, params: Seq2SeqParams, src, src_mask, *, beam_size: int = 1, max_length: int) -> jrnn.BeamResult:
    """Beam search (width 1: greedy) for a batch of sources ``[N, S]``: a :class:`jrnn.BeamResult` per row."""
    fn = self.step_fn(params, src.shape[1])

    def one(s, m):
      return jrnn.beam_search(
        fn, self.start(params, s, m), bos=self.BOS, eos=self.EOS, beam_size=beam_size, max_length=max_length
      )

    return jax.vmap(one)(src, src_mask)

  def attention_weights(self, params: Seq2SeqParams, src, src_mask, dec_in) -> jax.Array:
    """The attention weights ``[U, S]`` of one teacher-forced pair (an attention model only)."""
    embed, _, _ = self._parts()
    state = self.start(params, src, src_mask)
    return jrnn.attention_weights(self.decoder(src.shape[0]), params.decoder, embed.apply(params.embed, dec_in), state)


def sequence_log_prob(model: Seq2Seq, params: Seq2SeqParams, src, src_mask, tokens) -> jax.Array:
  """``log p(tokens | src)`` per row, for decoded ``tokens [N, L]`` (up to and including the first ``eos``)."""

  def one(s, m, t):
    dec_in = jnp.concatenate([jnp.array([model.BOS], t.dtype), t[:-1]])
    logp = jax.nn.log_softmax(model.logits(params, s, m, dec_in))
    picked = jnp.take_along_axis(logp, t[:, None], axis=1)[:, 0]
    eos = (t == model.EOS).astype(jnp.int32)
    ended = jnp.cumsum(eos) - eos  # eos seen before this position
    return jnp.sum(jnp.where(ended == 0, picked, 0.0))

  return jax.vmap(one)(src, src_mask, tokens)


# The data of the command line's tasks: pairs drawn with the run's seed; the test pairs are drawn with another
# seed, and any whose source is also a training source is dropped, so the test measures generalisation.
DATES_TRAIN, DATES_TEST = 20_000, 1_000
REVERSE_TRAIN, REVERSE_TEST, REVERSE_MIN = 20_000, 500, 4


def _position_unigram(enc, vocab_size) -> float:
  """Cross-entropy (nats/char) on ``enc`` of the best model that ignores the source: a distribution per output position.

  Counted on the same pairs it is scored on (add-one smoothing), so it is
  the best such model can do, an optimistic baseline.
  """
  total, n = 0.0, 0
  for u in range(enc.dec_out.shape[1]):
    ids = enc.dec_out[enc.dec_mask[:, u], u]
    if ids.size:
      counts = np.bincount(ids, minlength=vocab_size) + 1.0
      total -= float(np.sum(np.log(counts[ids] / counts.sum())))
      n += ids.size
  return total / n


class TaskData(NamedTuple):
  """A task's vocabulary, training pairs and held-out test sets (``""``; reverse also ``"_longer"``), encoded."""

  vocab: Any
  train: Any
  tests: dict


def task_data(task: str, seed: int, seq_len: int) -> TaskData:
  """The pairs of ``--task dates`` or ``--task reverse`` (``seq_len``: reverse's longest training string).

  Test pairs are drawn with ``seed + 1`` (and ``seed + 2``), and any whose
  source is also a training source is dropped, so the test measures
  generalisation. Training pairs are padded to the longest training source
  and target; each test set to its own longest.
  """
  from jrnn.tasks import transduction as tr

  if task == "dates":
    vocab = tr.DATE_VOCAB
    train_pairs = tr.dates(DATES_TRAIN, seed=seed)
    test_sets = {"": tr.dates(DATES_TEST, seed=seed + 1)}
  else:
    vocab = tr.Vocab("abcdefghij")
    train_pairs = tr.reversal(REVERSE_TRAIN, (REVERSE_MIN, seq_len), seed=seed)
    test_sets = {
      "": tr.reversal(REVERSE_TEST, (REVERSE_MIN, seq_len), seed=seed + 1),
      "_longer": tr.reversal(REVERSE_TEST, (seq_len + 1, 2 * seq_len), seed=seed + 2),
    }
  seen = set(train_pairs.sources)
  tests = {
    k: tr.encode(tr.Pairs([s for s in p.sources if s not in seen], [t for s, t in zip(*p) if s not in seen]), vocab)
    for k, p in test_sets.items()
  }
  return TaskData(vocab, tr.encode(train_pairs, vocab), tests)


def experiment(task: str, config: dict, key: jax.Array, rows):
  """The :class:`jrnn.apps.experiments.Experiment` of ``--task dates`` or ``--task reverse``."""
  from jrnn.apps import experiments
  from jrnn.tasks import transduction as tr

  if config["cell"] not in CELLS:
    raise experiments.ConfigError(f"--task {task} runs --cell gru or lstm, got {config['cell']!r}.")
  if task == "reverse" and config["seq_len"] < REVERSE_MIN:
    raise experiments.ConfigError(f"--task reverse needs --seq-len of at least {REVERSE_MIN}, got {config['seq_len']}.")
  vocab, train, tests = task_data(task, config["seed"], config["seq_len"])
  options = experiments.sequence_options(config)
  model = Seq2Seq(vocab.size, config["hidden"], config["cell"], config["attention"], options)
  try:
    jax.eval_shape(model.loss, jax.eval_shape(model.init, jax.random.key(0)), tuple(a[:1] for a in train))
  except (ValueError, TypeError) as e:
    raise experiments.ConfigError(f"--task {task} cannot run with these options: {e}") from None
  B = config["batch"]

  def batch_fn(i):
    idx = np.asarray(jax.random.randint(jax.random.fold_in(key, i), (B,), 0, len(train.src)))
    return experiments._rows_of(tuple(a[idx] for a in train), rows)

  loss = jax.jit(model.loss)
  greedy = jax.jit(lambda p, s, m, L: model.decode(p, s, m, beam_size=1, max_length=L).tokens[:, 0], static_argnums=3)

  def evaluate(params, full):
    out = {}
    for name, enc in tests.items():
      if not full:
        enc = tr.Encoded(*(a[:200] for a in enc))
      out[f"test_loss{name}"] = float(loss(params, tuple(enc)))
      tokens = greedy(params, enc.src, enc.src_mask, enc.dec_out.shape[1])
      out[f"exact_match{name}"] = float(tr.exact_match(np.asarray(tokens), enc).mean())
    return out

  return experiments.Experiment(
    task,
    model,
    None,
    vocab.size,
    jax.jit(model.init),
    model.loss,
    batch_fn,
    evaluate,
    "test_loss",
    {"position-wise unigram, no source (nats/char)": _position_unigram(tests[""], vocab.size)},
    metadata={"vocab": vocab.chars},
  )
