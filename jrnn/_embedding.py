"""Token embeddings, and an output layer tied to them (Press & Wolf 2017; Inan et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from jrnn import _cell
from jrnn import _checks
from jrnn import _linear
from jrnn import _options


class EmbeddingParams(NamedTuple):
  """Params of :func:`embedding`.

  Attributes:
    table: the embedding matrix ``E``, ``[vocab_size, dim]``: row ``v`` is token ``v``'s vector.
  """

  table: jax.Array


class TiedParams(NamedTuple):
  """Params of :func:`tied_linear`: the embedding it shares, and its own output bias.

  Attributes:
    embedding: the :class:`EmbeddingParams` of the model's input embedding. They live here, once,
      so that ``jax.grad`` sums the gradients of both uses; embed the inputs with
      ``embedding.apply(params.head.embedding, ids)``.
    b: the output bias ``[vocab_size]``.
  """

  embedding: EmbeddingParams
  b: jax.Array


class Embedding(NamedTuple):
  """An embedding layer: ``init(key) -> params``, ``apply(params, ids) -> vectors``.

  ``attend(params, h)`` is the transposed product ``h Eᵀ``, one score per token.
  """

  init: Callable[[jax.Array], EmbeddingParams]
  apply: Callable[..., jax.Array]
  attend: Callable[..., jax.Array]
  vocab_size: int
  dim: int


def _check_ids(ids, vocab_size: int, fn: str) -> jax.Array:
  ids = ids if isinstance(ids, Tracer) else np.asarray(ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise TypeError(f"{fn}: ids must be integer token ids, got dtype {ids.dtype}.")
  if not isinstance(ids, Tracer) and ids.size:
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
      raise ValueError(
        f"{fn}: ids must lie in [0, {vocab_size}) (vocab_size={vocab_size}), got {bad.size} out of range, "
        f"e.g. {bad.ravel()[:5].tolist()}."
      )
  return jnp.asarray(ids)


def embedding(vocab_size: int, dim: int, *, dtype=jnp.float32) -> Embedding:
  """Integer tokens to vectors: row ``v`` of a learned matrix ``E``.

  .. math::

     x_t = E_{w_t}, \\qquad E \\in \\mathbb{R}^{V \\times D}

  the same as ``one_hot(w_t, V) @ E`` without building the ``[T, V]`` one-hot
  input. ``apply(params, ids)`` takes ids of any shape and returns
  ``ids.shape + (dim,)``. ``attend(params, h)`` returns ``h Eᵀ``, the scores
  of a tied output layer (see :func:`tied_linear`). ``E`` starts as
  ``N(0, 1/D)``, Flax's ``nn.Embed`` default.

  Out-of-range ids are an error wherever they can be seen: ids given as
  concrete values (NumPy, a JAX array outside ``jit``) raise a ``ValueError``
  listing some of them; under ``jit`` the values are unknown at trace time, so
  an out-of-range id gives a row of NaN (``jnp.take(mode="fill")``), never a
  clamped neighbour's vector, and the loss turns NaN, which
  :func:`jrnn.train.fit` stops on with ``NonFiniteLossError``.

  Args:
    vocab_size: ``V``, the number of tokens.
    dim: ``D``, the size of each vector.
    dtype: dtype of ``E``.

  Returns:
    An :class:`Embedding` whose params are :class:`EmbeddingParams`.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> emb = jrnn.embedding(10, 4)
    >>> params = emb.init(jax.random.key(0))
    >>> xs = emb.apply(params, jnp.array([3, 1, 3]))
    >>> xs.shape, bool(jnp.array_equal(xs[0], params.table[3])), bool(jnp.array_equal(xs[0], xs[2]))
    ((3, 4), True, True)

  References:
    Bengio, Ducharme, Vincent & Jauvin, "A neural probabilistic language model", JMLR (2003).
  """
  name = "jrnn.embedding"
  vocab_size = _checks.positive_int(vocab_size, "vocab_size", name)
  dim = _checks.positive_int(dim, "dim", name)

  def init(key):
    return EmbeddingParams(jax.random.normal(key, (vocab_size, dim), dtype) / np.sqrt(dim).astype(dtype))

  def apply(params, ids):
    ids = _check_ids(ids, vocab_size, f"{name}.apply")
    return jnp.take(params.table, ids, axis=0, mode="fill", fill_value=jnp.nan)

  def attend(params, h, *, precision=None):
    precision = _options.check_precision(precision, f"{name}.attend")
    h = jnp.asarray(h)
    if h.ndim < 1 or h.shape[-1] != dim:
      raise ValueError(f"{name}.attend: h must have shape [..., {dim}], got shape {tuple(h.shape)}.")
    with _options.matmul_precision(precision):
      return h.astype(params.table.dtype) @ params.table.T

  return Embedding(init, apply, attend, vocab_size, dim)


def tied_linear(embedding: Embedding) -> _linear.Head:
  """An output layer whose weights are the input embedding's (weight tying).

  .. math::

     y_t = h_t E^\\top + b_y, \\qquad E \\in \\mathbb{R}^{V \\times D}

  the embedding matrix that also maps input tokens to vectors, so a language
  model learns one matrix instead of two and its output layer is regularised
  by the input's use of it (Press & Wolf 2017; Inan, Khosravi & Socher 2017).
  ``h_t`` must have the embedding's size ``D``: with a recurrent layer of
  another size, put a projection between them (an LSTM with ``proj_size=D``
  does exactly that).

  The head's params are :class:`TiedParams` ``(embedding, b)``: the embedding's
  params live inside the head's, once, and the model embeds its inputs from
  there (``emb.apply(params.head.embedding, ids)``), so the pytree holds ``E``
  once and ``jax.grad`` adds the gradients of both uses.

  Args:
    embedding: the :func:`embedding` to tie to.

  Returns:
    A :class:`jrnn.Head`; ``init(key, input_size)`` initialises the embedding
    and a zero bias, and checks ``input_size == embedding.dim``.

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> emb = jrnn.embedding(10, 8)
    >>> cell, head = jrnn.gru(8), jrnn.tied_linear(emb)
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> params = jrnn.ModelParams(cell.init(k1, 8), head.init(k2, 8))
    >>> ids = jnp.array([1, 4, 2])
    >>> xs = emb.apply(params.head.embedding, ids)  # the same E embeds the inputs ...
    >>> _, logits = jrnn.many_to_many(cell, params.cell, head, params.head, xs)
    >>> h = jrnn.unroll(cell, params.cell, xs)[1]  # ... and scores the outputs
    >>> logits.shape, bool(jnp.allclose(logits, h @ params.head.embedding.table.T))
    ((3, 10), True)

  References:
    Press & Wolf, "Using the output embedding to improve language models", EACL (2017).
    Inan, Khosravi & Socher, "Tying word vectors and word classifiers", ICLR (2017).
  """
  name = "jrnn.tied_linear"
  if not isinstance(embedding, Embedding):
    raise TypeError(f"{name}: embedding must be a jrnn.embedding(...), got {type(embedding).__name__}.")
  V, D = embedding.vocab_size, embedding.dim

  def init(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    if input_size != D:
      raise ValueError(
        f"{name}.init: input_size must equal the embedding's dim {D} (the tied matrix is [{V}, {D}]), "
        f"got {input_size}; project the recurrent state to {D} first (e.g. an LSTM with proj_size={D})."
      )
    table = embedding.init(key)
    return TiedParams(table, jnp.zeros((V,), table.table.dtype))

  def apply(params, h, *, precision=None):
    precision = _options.check_precision(precision, f"{name}.apply")
    h = jnp.asarray(h)
    if not jnp.issubdtype(h.dtype, jnp.floating):
      raise TypeError(f"{name}.apply: h must be floating, got dtype {h.dtype}.")
    scores = embedding.attend(params.embedding, h, precision=precision)
    return scores + _cell.trailing(params.b, scores)

  return _linear.Head(init, apply, V)
