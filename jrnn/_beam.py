"""Beam search over a step function: the k most probable sequences, with length normalisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _checks


class BeamResult(NamedTuple):
  """What :func:`beam_search` returns, best first.

  Attributes:
    tokens: ``[beam_size, max_length]`` int32: each hypothesis without the
      ``bos`` it started from; its end-of-sequence token included, and ``eos``
      after it.
    lengths: ``[beam_size]``: tokens generated, the end-of-sequence token
      included (``max_length`` for a hypothesis that never ended).
    log_probs: ``[beam_size]``: ``log p(tokens)`` summed over its ``lengths``.
    scores: ``[beam_size]``: the ranking score, ``log_probs / lp(lengths)``.
      ``-inf`` marks slots left empty when fewer than ``beam_size``
      hypotheses exist.
  """

  tokens: jax.Array
  lengths: jax.Array
  log_probs: jax.Array
  scores: jax.Array


def _length_penalty(length, alpha):
  """GNMT's ``lp(n) = ((5 + n) / 6) ** alpha`` (Wu et al. 2016); 1 for ``alpha = 0``."""
  return ((5.0 + length) / 6.0) ** alpha


def beam_search(
  step_fn: Callable[[Any, jax.Array], tuple[Any, jax.Array]],
  state: Any,
  *,
  bos: int,
  eos: int,
  beam_size: int,
  max_length: int,
  length_penalty: float = 0.0,
) -> BeamResult:
  r"""The ``beam_size`` best sequences of a decoder by beam search (Graves 2012; Sutskever et al. 2014).

  ``step_fn(state, token) -> (state, logits [V])`` feeds one token to the
  decoder (one hypothesis, no batch axis; it is vmapped over the beam) and
  returns the logits of the next one. A hypothesis starts from ``state`` and
  ``bos`` and grows one token per step; its log-probability is

  .. math::

     \log p(y_{1:n}) = \sum_{t=1}^{n} \log \mathrm{softmax}(\mathrm{logits}_t)[y_t]

  It ends at ``eos`` (kept, and no longer grown) or at ``max_length`` tokens.
  Hypotheses are ranked by ``log p / lp(n)`` with GNMT's length penalty
  ``lp(n) = ((5 + n) / 6)^α`` (Wu et al. 2016; ``α = length_penalty``, 0: plain
  log-probability, which favours short outputs).

  At every step each live hypothesis proposes every token; of the ``k`` best
  proposals, those ending in ``eos`` join the finished set (which keeps its
  ``k`` best by score) and the others stay live, so a finished hypothesis
  takes its beam slot with it. At ``max_length`` the live ones are scored as
  they stand and the ``k`` best of both sets are returned. With ``beam_size = 1`` this is greedy decoding
  (for ``α = 0``); with ``beam_size ≥ V^max_length`` it is exhaustive and
  returns the exact best sequences (both are tested, against greedy decoding
  and brute-force enumeration).

  It runs a fixed ``max_length`` steps (``lax.scan``), so it jits; for a
  batch, ``jax.vmap`` it over ``state`` (and whatever ``step_fn`` closes over
  per example).

  Args:
    step_fn: ``(state, token: int32 []) -> (state, logits [V])``.
    state: the decoder's state before ``bos`` (e.g. an encoder's final carry).
    bos: the token fed first.
    eos: the end-of-sequence token.
    beam_size: ``k``, the number of hypotheses kept.
    max_length: the most tokens a hypothesis may have.
    length_penalty: ``α ≥ 0``.

  Returns:
    A :class:`BeamResult`, best first.

  Raises:
    ValueError: for a non-positive ``beam_size`` or ``max_length``, a negative
      ``length_penalty``, or a ``step_fn`` that does not return ``[V]`` logits.

  References:
    Graves, "Sequence transduction with recurrent neural networks",
    arXiv:1211.3711 (2012).
    Sutskever, Vinyals & Le, "Sequence to sequence learning with neural
    networks", NeurIPS (2014).
    Wu et al., "Google's neural machine translation system", arXiv:1609.08144
    (2016), section 7 (the length penalty).

  Example:
    A "decoder" whose next-token distribution ignores its input:

    >>> import jax.numpy as jnp, jrnn
    >>> logits = jnp.log(jnp.array([0.5, 0.3, 0.2]))        # eos = 0
    >>> out = jrnn.beam_search(lambda s, tok: (s, logits), jnp.zeros(()), bos=1, eos=0, beam_size=2, max_length=3)
    >>> out.tokens.tolist(), out.lengths.tolist()
    ([[0, 0, 0], [1, 0, 0]], [1, 2])
    >>> [round(float(v), 4) for v in out.log_probs]           # log 0.5, log 0.3 + log 0.5
    [-0.6931, -1.8971]
  """
  fn_name = "jrnn.beam_search"
  k = _checks.positive_int(beam_size, "beam_size", fn_name)
  L = _checks.positive_int(max_length, "max_length", fn_name)
  if not (isinstance(length_penalty, (int, float)) and not isinstance(length_penalty, bool) and length_penalty >= 0):
    raise ValueError(f"{fn_name}: length_penalty must be a number >= 0, got {length_penalty!r}.")
  alpha = float(length_penalty)
  _, logits_shape = jax.eval_shape(step_fn, state, jnp.zeros((), jnp.int32))
  if len(logits_shape.shape) != 1:
    raise ValueError(
      f"{fn_name}: step_fn must return (state, logits [V]) for one hypothesis, got logits of shape "
      f"{tuple(logits_shape.shape)}; vmap beam_search for a batch."
    )
  V = logits_shape.shape[0]
  n = k  # proposals kept per step (2k would keep the live beam full, but k = 1 would not be greedy)
  neg = jnp.float32(-jnp.inf)

  alive_seq = jnp.full((k, L + 1), eos, jnp.int32).at[:, 0].set(bos)
  alive_logp = jnp.full((k,), neg).at[0].set(0.0)
  alive_state = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (k,) + jnp.shape(x)), state)
  fin_seq = jnp.full((k, L + 1), eos, jnp.int32)
  fin_logp = jnp.full((k,), neg)
  fin_score = jnp.full((k,), neg)
  fin_len = jnp.zeros((k,), jnp.int32)

  def body(carry, t):
    alive_seq, alive_logp, alive_state, fin_seq, fin_logp, fin_score, fin_len = carry
    new_state, logits = jax.vmap(step_fn)(alive_state, alive_seq[:, t])
    logp = alive_logp[:, None] + jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    top, flat = jax.lax.top_k(logp.reshape(-1), n)
    parent, token = flat // V, (flat % V).astype(jnp.int32)
    seq = alive_seq[parent].at[:, t + 1].set(token)
    ended = token == eos
    # The k best proposals that go on.
    live_logp, live = jax.lax.top_k(jnp.where(ended, neg, top), k)
    alive_seq, alive_logp = seq[live], live_logp
    alive_state = jax.tree_util.tree_map(lambda x: x[parent[live]], new_state)
    # The k best finished hypotheses, old and new.
    length = t + 1
    new_score = jnp.where(ended, top / _length_penalty(length.astype(jnp.float32), alpha), neg)
    all_score = jnp.concatenate([fin_score, new_score])
    fin_score, best = jax.lax.top_k(all_score, k)
    fin_seq = jnp.concatenate([fin_seq, seq])[best]
    fin_logp = jnp.concatenate([fin_logp, jnp.where(ended, top, neg)])[best]
    fin_len = jnp.concatenate([fin_len, jnp.full((n,), length, jnp.int32)])[best]
    return (alive_seq, alive_logp, alive_state, fin_seq, fin_logp, fin_score, fin_len), None

  init = (alive_seq, alive_logp, alive_state, fin_seq, fin_logp, fin_score, fin_len)
  (alive_seq, alive_logp, _, fin_seq, fin_logp, fin_score, fin_len), _ = jax.lax.scan(body, init, jnp.arange(L))
  # The live hypotheses at max_length are scored as they stand and compete with the finished ones.
  score = jnp.concatenate([fin_score, alive_logp / _length_penalty(L, alpha)])
  scores, best = jax.lax.top_k(score, k)
  seqs = jnp.concatenate([fin_seq, alive_seq])[best, 1:]
  lengths = jnp.concatenate([fin_len, jnp.full((k,), L, jnp.int32)])[best]
  log_probs = jnp.concatenate([fin_logp, alive_logp])[best]
  return BeamResult(seqs, lengths, log_probs, scores)


class SampleResult(NamedTuple):
  """What :func:`sample_decode` returns.

  Attributes:
    tokens: ``[max_length]`` int32, the ``eos`` included, ``eos`` after it.
    length: tokens generated, the ``eos`` included (``max_length`` if none).
    log_prob: ``log p(tokens)`` under the model's own distribution
      (temperature 1, no top-k), summed over ``length``.
  """

  tokens: jax.Array
  length: jax.Array
  log_prob: jax.Array


def sample_decode(
  step_fn: Callable[[Any, jax.Array], tuple[Any, jax.Array]],
  state: Any,
  key: jax.Array | None,
  *,
  bos: int,
  eos: int,
  max_length: int,
  temperature: float = 1.0,
  top_k: int | None = None,
) -> SampleResult:
  r"""Greedy decoding or ancestral sampling, with temperature and top-k, from a decoder step function.

  Each step draws

  .. math::

     y_t \sim \mathrm{softmax}(\mathrm{logits}_t / \tau) \text{ restricted to the } k \text{ largest logits}

  (Fan, Lewis & Dauphin 2018 for top-k), feeds ``y_t`` back, and stops
  growing at ``eos``. ``temperature=0`` is greedy decoding, ``argmax
  logits_t`` (``key`` may then be None); ``top_k=None`` keeps every token. ``step_fn`` is
  :func:`beam_search`'s; ``jax.vmap`` over ``state`` and ``key`` for a batch.

  Args:
    step_fn: ``(state, token: int32 []) -> (state, logits [V])``.
    state: the decoder's state before ``bos``.
    key: a JAX random key (None only with ``temperature=0``).
    bos, eos, max_length: as in :func:`beam_search`.
    temperature: ``τ ≥ 0``.
    top_k: sample among the ``k`` most likely tokens only.

  Returns:
    A :class:`SampleResult`.

  Raises:
    ValueError: for a negative temperature, a non-positive ``max_length`` or
      ``top_k``, or sampling (``temperature > 0``) without a key.

  References:
    Fan, Lewis & Dauphin, "Hierarchical neural story generation", ACL (2018).

  Example:
    >>> import jax.numpy as jnp, jrnn
    >>> logits = jnp.log(jnp.array([0.1, 0.6, 0.3]))        # eos = 0
    >>> step = lambda s, t: (s, logits)
    >>> jrnn.sample_decode(step, 0.0, None, bos=1, eos=0, max_length=3, temperature=0).tokens.tolist()
    [1, 1, 1]
  """
  fn_name = "jrnn.sample_decode"
  L = _checks.positive_int(max_length, "max_length", fn_name)
  if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature >= 0):
    raise ValueError(f"{fn_name}: temperature must be a number >= 0, got {temperature!r}.")
  if top_k is not None:
    _checks.positive_int(top_k, "top_k", fn_name)
  greedy = temperature == 0
  if not greedy and key is None:
    raise ValueError(f"{fn_name}: sampling with temperature {temperature} needs a key.")
  keys = jax.random.split(key, L) if key is not None else jnp.zeros((L,), jnp.int32)

  def body(carry, k):
    state, token, done, log_prob, length = carry
    state, logits = step_fn(state, token)
    logits = logits.astype(jnp.float32)
    if greedy:
      new = jnp.argmax(logits).astype(jnp.int32)
    else:
      scaled = logits / jnp.float32(temperature)
      if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(scaled, top_k)[0][-1]
        scaled = jnp.where(scaled >= kth, scaled, -jnp.inf)
      new = jax.random.categorical(k, scaled).astype(jnp.int32)
    new = jnp.where(done, jnp.int32(eos), new)
    log_prob = log_prob + jnp.where(done, 0.0, jax.nn.log_softmax(logits)[new])
    length = length + jnp.where(done, 0, 1)
    return (state, new, done | (new == eos), log_prob, length), new

  init = (state, jnp.int32(bos), jnp.bool_(False), jnp.float32(0.0), jnp.int32(0))
  (_, _, _, log_prob, length), tokens = jax.lax.scan(body, init, keys)
  return SampleResult(tokens, length, log_prob)
