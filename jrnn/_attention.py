"""Attention over an encoder's states (Bahdanau et al. 2015; Luong et al. 2015) and the attention decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _initializers

KINDS = ("additive", "dot", "general")


class AdditiveParams(NamedTuple):
  """Params of additive attention: ``e_s = vᵀ tanh(q W_q + m_s W_m)``.

  Attributes:
    wq: ``[query_size, size]``.
    wm: ``[memory_size, size]``.
    v: ``[size]``.
  """

  wq: jax.Array
  wm: jax.Array
  v: jax.Array


class GeneralParams(NamedTuple):
  """Params of Luong's general attention: ``e_s = q W m_sᵀ``; ``w: [query_size, memory_size]``."""

  w: jax.Array


class Attention(NamedTuple):
  """A score function over a memory, from :func:`attention`.

  Attributes:
    init: ``(key, query_size, memory_size) -> params``.
    score: ``(params, query [Dq], memory [S, Dm]) -> scores [S]``.
    kind: ``"additive"``, ``"dot"`` or ``"general"``.
  """

  init: Callable[..., Any]
  score: Callable[..., jax.Array]
  kind: str


def attention(kind: str = "additive", size: int | None = None, *, dtype=jnp.float32) -> Attention:
  r"""An attention score over the positions ``s`` of a memory ``m`` (an encoder's states), given a query ``q``.

  .. math::

     e_s = \begin{cases}
       v^\top \tanh(q W_q + m_s W_m) & \text{additive (Bahdanau, Cho \& Bengio 2015)} \\
       q\, m_s^\top & \text{dot (Luong, Pham \& Manning 2015)} \\
       q W m_s^\top & \text{general (Luong et al. 2015)}
     \end{cases}

  :func:`attend` turns the scores into weights ``a = softmax(e)`` over the
  unmasked positions and the context ``c = Σ_s a_s m_s``.

  Args:
    kind: ``"additive"``, ``"dot"`` or ``"general"``.
    size: the additive score's hidden size (default: the query size).
    dtype: dtype of the params.

  Returns:
    An :class:`Attention`.

  References:
    Bahdanau, Cho & Bengio, "Neural machine translation by jointly learning to
    align and translate", ICLR (2015).
    Luong, Pham & Manning, "Effective approaches to attention-based neural
    machine translation", EMNLP (2015).

  Example:
    >>> import jax, jax.numpy as jnp, jrnn
    >>> att = jrnn.attention("general")
    >>> params = att.init(jax.random.key(0), 4, 6)
    >>> context, weights = jrnn.attend(att, params, jnp.ones(4), jnp.ones((5, 6)), jnp.array([1, 1, 0, 1, 0], bool))
    >>> context.shape, weights.tolist()          # equal scores: equal weights over the 3 unmasked positions
    ((6,), [0.3333333432674408, 0.3333333432674408, 0.0, 0.3333333432674408, 0.0])
  """
  name = "jrnn.attention"
  if kind not in KINDS:
    raise ValueError(f"{name}: kind must be one of {KINDS}, got {kind!r}.")
  if size is not None:
    size = _checks.positive_int(size, "size", name)

  def init(key, query_size, memory_size):
    query_size = _checks.positive_int(query_size, "query_size", f"{name}.init")
    memory_size = _checks.positive_int(memory_size, "memory_size", f"{name}.init")
    if kind == "dot":
      if query_size != memory_size:
        raise ValueError(
          f"{name}.init: dot attention needs query_size == memory_size, got {query_size} and {memory_size}; "
          "use 'general' or 'additive'."
        )
      return ()
    if kind == "general":
      return GeneralParams(_initializers.input_weights(key, query_size, memory_size, 1, dtype))
    a = size or query_size
    kq, km, kv = jax.random.split(key, 3)
    return AdditiveParams(
      _initializers.input_weights(kq, query_size, a, 1, dtype),
      _initializers.input_weights(km, memory_size, a, 1, dtype),
      jax.random.uniform(kv, (a,), dtype, -1.0 / a**0.5, 1.0 / a**0.5),
    )

  def score(params, query, memory):
    if kind == "dot":
      return memory @ query
    if kind == "general":
      return memory @ (query @ params.w)
    return jnp.tanh((query @ params.wq)[None, :] + memory @ params.wm) @ params.v

  return Attention(init, score, kind)


def attend(
  attention: Attention, params: Any, query: jax.Array, memory: jax.Array, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  r"""The context and the weights of one query over a memory.

  .. math::

     a_s = \frac{\exp e_s}{\sum_{s' \in \mathrm{mask}} \exp e_{s'}} \;(s \in \mathrm{mask}),
     \quad a_s = 0 \;(s \notin \mathrm{mask}), \qquad c = \sum_s a_s m_s

  Masked positions (padding, or holes anywhere) get a weight of exactly 0;
  with every position masked, the weights and the context are 0.

  Args:
    attention: from :func:`attention`.
    params: its params.
    query: ``[query_size]``.
    memory: ``[S, memory_size]``.
    mask: optional boolean ``[S]``.

  Returns:
    ``(context [memory_size], weights [S])``.
  """
  e = attention.score(params, query, memory)
  if mask is None:
    weights = jax.nn.softmax(e)
  else:
    e = jnp.where(mask, e, -jnp.inf)
    top = jnp.max(jnp.where(mask, e, jnp.finfo(e.dtype).min))
    p = jnp.where(mask, jnp.exp(e - top), 0.0)
    total = p.sum()
    weights = jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), 0.0)
  return weights @ memory, weights


class AttentionDecoderParams(NamedTuple):
  """Params of :func:`attention_decoder`: the cell's, the attention's, and ``wc [memory_size + H, H]``."""

  cell: Any
  attention: Any
  wc: jax.Array


class AttentionCarry(NamedTuple):
  """Carry of :func:`attention_decoder`.

  Attributes:
    cell: the decoder cell's carry.
    output: the last attentional output ``h̃ [H]`` (fed back with the next input).
    memory: the encoder's states ``[S, memory_size]``.
    mask: their mask ``[S]`` as 1.0 (attended) and 0.0 (a carry is floating point).
    weights: the last step's attention weights ``[S]``.
  """

  cell: Any
  output: jax.Array
  memory: jax.Array
  mask: jax.Array
  weights: jax.Array


def attention_decoder(cell: _cell.Cell, attention: Attention, memory_size: int, memory_length: int) -> _cell.Cell:
  r"""A decoder cell that attends over an encoder's states at every step (Luong et al. 2015, input feeding).

  .. math::

     (c_t, h_t) &= \mathrm{cell}(c_{t-1}, [x_t ; \tilde h_{t-1}]) \\
     (\mathrm{ctx}_t, a_t) &= \mathrm{attend}(h_t, m, \mathrm{mask}) \\
     \tilde h_t &= \tanh([\mathrm{ctx}_t ; h_t]\, W_c)

  The output is ``h̃_t``; the memory ``m`` (e.g. the ``hs`` of a
  :func:`jrnn.bidirectional` encoder, padded to ``memory_length``) and its
  mask travel in the carry, built by :func:`attention_carry`. The carry's
  shapes are fixed by the cell, so the memory's length is too: for sources
  of another padded length, make another decoder (the params are the same). Any cell works, :func:`jrnn.stack` too
  (``h_t`` is its last layer's output). With ``attention("additive")`` the
  score is Bahdanau et al.'s, computed from ``h_t``. :func:`attention_weights`
  returns every step's weights ``a_t``.

  Args:
    cell: the decoder cell (with a ``step``).
    attention: from :func:`jrnn.attention`.
    memory_size: the size of the memory's vectors.
    memory_length: the memory's (padded) number of positions ``S``.

  Returns:
    A :class:`jrnn.Cell` with :class:`AttentionDecoderParams` and
    :class:`AttentionCarry`, ``hidden_size = cell.hidden_size``; its
    ``init(key, input_size)`` gives the cell an input of ``input_size + H``.

  References:
    Luong, Pham & Manning, "Effective approaches to attention-based neural
    machine translation", EMNLP (2015).
    Bahdanau, Cho & Bengio, "Neural machine translation by jointly learning to
    align and translate", ICLR (2015).
  """
  name = "jrnn.attention_decoder"
  inner_step = cell.step if isinstance(cell, _cell.Cell) else None
  if inner_step is None:
    raise TypeError(
      f"{name}: cell must be a jrnn.Cell with a step (not a bidirectional layer), got {type(cell).__name__}."
    )
  if not isinstance(attention, Attention):
    raise TypeError(f"{name}: attention must come from jrnn.attention(...), got {type(attention).__name__}.")
  D = _checks.positive_int(memory_size, "memory_size", name)
  S = _checks.positive_int(memory_length, "memory_length", name)
  H = cell.hidden_size

  def init(key, input_size):
    input_size = _checks.positive_int(input_size, "input_size", f"{name}.init")
    k1, k2, k3 = jax.random.split(key, 3)
    p = cell.init(k1, input_size + H)
    dtype = _cell.params_dtype(p)
    return AttentionDecoderParams(p, attention.init(k2, H, D), _initializers.input_weights(k3, D + H, H, 1, dtype))

  def initial_carry(params):
    dtype = _cell.params_dtype(params.cell)
    zeros = jnp.zeros((S,), dtype)  # an empty memory (every position masked) until attention_carry fills it
    return AttentionCarry(
      cell.initial_carry(params.cell), jnp.zeros((H,), dtype), jnp.zeros((S, D), dtype), zeros, zeros
    )

  def step(params, carry, x):
    c, h = inner_step(params.cell, carry.cell, jnp.concatenate([x, carry.output.astype(x.dtype)]))
    context, weights = attend(attention, params.attention, h, carry.memory, carry.mask > 0)
    out = jnp.tanh(jnp.concatenate([context, h]) @ params.wc)
    return AttentionCarry(c, out, carry.memory, carry.mask, weights.astype(carry.weights.dtype)), out

  return _cell.Cell(
    init=init,
    initial_carry=initial_carry,
    step=step,
    hidden_size=H,
    input_size=lambda params: cell.input_size(params.cell) - H,
    kind=_cell.Stepwise(),
    name=name,
  )


def attention_carry(decoder: _cell.Cell, params: Any, memory: Any, mask: Any = None, carry: Any = None) -> Any:
  """The initial :class:`AttentionCarry` of ``decoder`` for a memory ``[memory_length, memory_size]`` (batch: vmap).

  Args:
    decoder: from :func:`attention_decoder`.
    params: its params.
    memory: the encoder's states ``[memory_length, memory_size]``.
    mask: optional boolean ``[memory_length]`` (None: every position).
    carry: the decoder cell's initial carry (e.g. the encoder's final carry);
      None for its ``initial_carry``.
  """
  base = decoder.initial_carry(params)
  memory = jnp.asarray(memory, base.memory.dtype)
  if memory.shape != base.memory.shape:
    raise ValueError(
      f"jrnn.attention_carry: memory must have shape [memory_length, memory_size] = {list(base.memory.shape)}, "
      f"got {tuple(memory.shape)}."
    )
  mask = jnp.ones(memory.shape[:1], bool) if mask is None else jnp.asarray(mask, bool)
  if mask.shape != memory.shape[:1]:
    raise ValueError(f"jrnn.attention_carry: mask must have shape [{memory.shape[0]}], got {tuple(mask.shape)}.")
  weights = jnp.zeros(memory.shape[:1], memory.dtype)
  return AttentionCarry(base.cell if carry is None else carry, base.output, memory, mask.astype(memory.dtype), weights)


def attention_weights(decoder: _cell.Cell, params: Any, xs: jax.Array, carry: Any) -> jax.Array:
  """Every step's attention weights ``[T, S]`` of ``jrnn.unroll(decoder, params, xs, carry)`` (for plotting).

  Args:
    decoder: from :func:`attention_decoder`.
    params: its params.
    xs: the decoder's inputs ``[T, input_size]``.
    carry: from :func:`attention_carry`.
  """
  step = decoder.step
  if decoder.name != "jrnn.attention_decoder" or step is None:
    raise TypeError(f"jrnn.attention_weights: decoder must come from jrnn.attention_decoder, got {decoder.name}.")

  def body(c, x):
    c, _ = step(params, c, x)
    return c, c.weights

  return jax.lax.scan(body, carry, jnp.asarray(xs))[1]
