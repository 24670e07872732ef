"""The seeds' input/output configurations, built on :func:`jrnn.unroll`.

* many-to-many, equal lengths: :func:`many_to_many` (``y_t`` at every step);
* many-to-one: :func:`many_to_one` (``y`` at the last valid step);
* one-to-many: :func:`one_to_many` (one input, then the model's own output fed
  back for ``length`` steps, greedily or sampled);
* many-to-many, unequal lengths: :func:`encoder_decoder` (the encoder's final
  carry starts the decoder; teacher forcing for training, feedback for
  inference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jrnn import _cell
from jrnn import _checks
from jrnn import _linear
from jrnn import _options
from jrnn import _scans
from jrnn import _unroll

# Options for a layer whose last step must be the last step (reverse is not one of them).
_FORWARD_ONLY = tuple(f for f in _options.Options._fields if f != "reverse")

Feedback = str | Callable[[jax.Array, jax.Array], jax.Array]


def many_to_many(
  cell: _cell.Cell,
  params: Any,
  head: _linear.Head,
  head_params: Any,
  xs: jax.typing.ArrayLike,
  carry: Any = None,
  *,
  mask=None,
  reset=None,
  **options,
) -> tuple[Any, jax.Array]:
  """Many-to-many of equal length: an output for every input.

  .. math::

     s_t = \\mathrm{cell}(s_{t-1}, x_t), \\qquad y_t = \\mathrm{head}(s_t), \\quad t = 1 \\ldots T

  ``options`` are any of :class:`jrnn.Options`' fields (``reverse``,
  ``unroll``, ``scan``, ``projection``, ``remat``, ``vjp``, ``precision``),
  passed to :func:`jrnn.unroll`; ``precision`` covers the head's product too.
  ``reset`` (boolean ``[T]``) resets the carry to its initial value before
  the steps where it is True, as in :func:`jrnn.unroll` (packed sequences).

  Returns ``(carry, ys)`` with ``ys: [T, output_size]``; rows where ``mask``
  is False are zeros.
  """
  opts = _options.make("jrnn.many_to_many", **options)
  carry, hs = _unroll.unroll(cell, params, xs, carry, mask=mask, reset=reset, **options)
  with _options.matmul_precision(opts.precision):
    ys = head.apply(head_params, hs)
  if mask is not None:
    ys = jnp.where(jnp.asarray(mask)[:, None], ys, jnp.zeros_like(ys))
  return carry, ys


def last_valid(hs: jax.typing.ArrayLike, mask: jax.typing.ArrayLike | None = None) -> jax.Array:
  """The row of ``hs: [T, H]`` at the last index where ``mask`` is True (zeros if none is)."""
  hs = jnp.asarray(hs)
  if mask is None:
    return hs[-1]
  mask = jnp.asarray(mask)
  T = hs.shape[0]
  last = T - 1 - jnp.argmax(mask[::-1])
  return jnp.where(jnp.any(mask), hs[last], jnp.zeros_like(hs[last]))


def many_to_one(
  cell: _cell.Cell, params: Any, xs: jax.typing.ArrayLike, carry: Any = None, *, mask=None, **options
) -> tuple[Any, jax.Array]:
  """Many-to-one: read the sequence, return the state at its last valid step.

  .. math::

     s_T = \\mathrm{cell}(s_{T-1}, x_T) \\circ \\cdots \\circ \\mathrm{cell}(s_0, x_1)

  With a mask, ``T`` is the last step where the mask is True. Put a head on
  the result for ``y = head(s_T)`` (sentiment of a sentence, the seeds' "s"
  after "d-o-g"). ``options`` are :class:`jrnn.Options`' fields but
  ``reverse`` (the last step is the last step), passed to :func:`jrnn.unroll`.

  Returns:
    ``(carry, h_last)`` with ``h_last: [hidden_size]``.
  """
  _options.make("jrnn.many_to_one", _FORWARD_ONLY, **options)
  carry, hs = _unroll.unroll(cell, params, xs, carry, mask=mask, **options)
  return carry, last_valid(hs, mask)


def _feedback_fn(feedback: Feedback, temperature: float) -> Callable[[jax.Array, jax.Array], jax.Array]:
  if callable(feedback):
    return feedback
  if feedback == "output":
    return lambda y, key: y
  if feedback == "argmax":
    return lambda y, key: jax.nn.one_hot(jnp.argmax(y), y.shape[-1], dtype=y.dtype)
  if feedback == "sample":

    def sample(y, key):
      k = jax.random.categorical(key, y.astype(jnp.float32) / temperature)
      return jax.nn.one_hot(k, y.shape[-1], dtype=y.dtype)

    return sample
  raise ValueError(f"feedback must be 'output', 'argmax', 'sample' or a callable (y, key) -> x, got {feedback!r}.")


def one_to_many(
  cell: _cell.Cell,
  params: Any,
  head: _linear.Head,
  head_params: Any,
  x0: jax.typing.ArrayLike,
  length: int,
  carry: Any = None,
  *,
  feedback: Feedback = "output",
  key: jax.Array | None = None,
  temperature: float = 1.0,
  **options,
) -> tuple[Any, jax.Array, jax.Array]:
  """One-to-many: one input, then the model's own output fed back as the next input.

  .. math::

     s_1 = \\mathrm{cell}(s_0, x_0), \\quad y_t = \\mathrm{head}(s_t), \\quad
     x_t = f(y_t), \\quad s_{t+1} = \\mathrm{cell}(s_t, x_t)

  ``f`` is the feedback: ``"output"`` feeds ``y_t`` itself (regression;
  needs ``output_size == input_size``); ``"argmax"`` feeds the one-hot of the
  most likely class (greedy decoding); ``"sample"`` feeds the one-hot of a class
  drawn from ``softmax(y_t / temperature)`` (needs ``key``); or any callable
  ``(y, key) -> x``.

  Args:
    cell, params: the recurrent cell and its params (the cell must have a
      ``step``).
    head, head_params: the read-out head.
    x0: the single input ``[input_size]``.
    length: number of outputs ``N``.
    carry: initial carry (``None`` for zeros; an encoder's final carry in
      :func:`encoder_decoder`).
    feedback: see above.
    key: PRNG key, required for ``"sample"``; split once per step.
    temperature: softmax temperature for ``"sample"``.
    options: ``unroll`` (steps per ``lax.scan`` iteration), ``remat`` and
      ``precision`` (of the cell's and the head's products), as in
      :func:`jrnn.unroll`: the other :class:`jrnn.Options` do not apply to a
      loop that feeds each output back.

  Returns:
    ``(carry, ys, fed)``: ``ys: [N, output_size]`` the outputs and ``fed: [N,
    input_size]`` the inputs fed back after each output (for ``"argmax"`` and
    ``"sample"``, ``fed.argmax(-1)`` are the chosen tokens).
  """
  fn = "jrnn.one_to_many"
  if cell.step is None:
    raise ValueError(f"{fn}: {cell.name} has no step (bidirectional layers need the whole sequence).")
  opts = _options.make(fn, ("unroll", "remat", "precision"), **options)
  _checks.positive_int(length, "length", fn)
  x0 = jnp.asarray(x0)
  if x0.ndim != 1:
    raise ValueError(f"{fn}: x0 must have shape [input_size], got {tuple(x0.shape)}.")
  xs0, carry, _ = _checks.check_sequence(cell, params, x0[None], carry, None, fn)
  if feedback == "sample" and key is None:
    raise ValueError(f"{fn}: feedback='sample' needs a PRNG key (key=jax.random.key(0)).")
  keys = jax.random.split(jax.random.key(0) if key is None else key, length)
  f = _feedback_fn(feedback, temperature)
  input_size = cell.input_size(params)

  step = cell.step

  def body(state, k):
    c, x = state
    c, h = step(params, c, x)
    y = head.apply(head_params, h)
    x_next = f(y, k)
    if x_next.shape != (input_size,):
      raise ValueError(
        f"{fn}: feedback gave an input of shape {tuple(x_next.shape)}, the cell needs "
        f"({input_size},); with feedback='output' the head's output_size must equal input_size."
      )
    return (c, x_next.astype(xs0.dtype)), (y, x_next)

  with _options.matmul_precision(opts.precision):
    (carry, _), (ys, fed) = _scans.sequential(body, (carry, xs0[0]), keys, unroll=int(opts.unroll), remat=opts.remat)
  return carry, ys, fed


def encoder_decoder(
  encoder: _cell.Cell,
  encoder_params: Any,
  decoder: _cell.Cell,
  decoder_params: Any,
  head: _linear.Head,
  head_params: Any,
  xs: jax.typing.ArrayLike,
  *,
  mask=None,
  decoder_inputs: jax.typing.ArrayLike | None = None,
  start: jax.typing.ArrayLike | None = None,
  length: int | None = None,
  feedback: Feedback = "output",
  key: jax.Array | None = None,
  temperature: float = 1.0,
  **options,
) -> tuple[Any, jax.Array]:
  """Many-to-many of unequal length: an encoder reads ``xs``, a decoder writes ``ys``.

  .. math::

     c = \\mathrm{encoder}(x_1 \\ldots x_{T_{in}}), \\qquad
     s_0^{dec} = c, \\qquad y_t = \\mathrm{head}(\\mathrm{decoder}(s_{t-1}^{dec}, u_t)),
     \\quad t = 1 \\ldots T_{out}

  The encoder's final carry (after its last valid step, with a mask) starts
  the decoder, so the two cells must have the same carry shape.

  * Training (teacher forcing): pass ``decoder_inputs`` ``[T_out, dec_input]``,
    usually the targets shifted right behind a start symbol; ``u_t`` are those.
  * Inference: pass ``start`` ``[dec_input]`` and ``length``; ``u_1 = start``
    and ``u_{t+1} = f(y_t)`` as in :func:`one_to_many`.

  ``options`` (:class:`jrnn.Options`' fields but ``reverse``) are passed to
  the encoder's and the decoder's :func:`jrnn.unroll` (``precision`` to the
  head as well); with feedback the decoder takes ``unroll``, ``remat`` and
  ``precision`` only, as :func:`one_to_many` does.

  Returns:
    ``(decoder_carry, ys)`` with ``ys: [T_out, output_size]``.

  References:
    Sutskever, Vinyals & Le, "Sequence to sequence learning with neural
    networks", NeurIPS (2014); Cho et al., EMNLP (2014).
  """
  fn = "jrnn.encoder_decoder"
  if (decoder_inputs is None) == (start is None):
    raise ValueError(f"{fn}: pass exactly one of decoder_inputs (teacher forcing) or start and length (feedback).")
  opts = _options.make(fn, _FORWARD_ONLY, **options)
  enc_carry, _ = _unroll.unroll(encoder, encoder_params, xs, mask=mask, **options)
  try:
    dec_carry = _checks.check_carry(decoder, decoder_params, enc_carry, fn)
  except ValueError as e:
    raise ValueError(f"{fn}: the encoder's final carry does not fit the decoder: {e}") from None
  if decoder_inputs is not None:
    carry, hs = _unroll.unroll(decoder, decoder_params, decoder_inputs, dec_carry, **options)
    with _options.matmul_precision(opts.precision):
      return carry, head.apply(head_params, hs)
  if length is None or start is None:
    raise ValueError(f"{fn}: feedback decoding needs start and length (the number of outputs).")
  carry, ys, _ = one_to_many(
    decoder,
    decoder_params,
    head,
    head_params,
    start,
    length,
    dec_carry,
    feedback=feedback,
    key=key,
    temperature=temperature,
    unroll=opts.unroll,
    remat=opts.remat,
    precision=opts.precision,
  )
  return carry, ys
