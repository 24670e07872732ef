"""Attention and the attention decoder against NumPy loops in float64; masked positions get exactly zero weight."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn

MASK = np.array([True, False, True, True, False, True])  # a hole and padding


def _np_scores(kind, params, q, m):
  if kind == "dot":
    return m @ q
  if kind == "general":
    return m @ (q @ np.asarray(params.w))
  return np.tanh(q @ np.asarray(params.wq) + m @ np.asarray(params.wm)) @ np.asarray(params.v)


def _np_attend(kind, params, q, m, mask):
  e = _np_scores(kind, params, q, m)
  w = np.zeros_like(e)
  if mask.any():
    z = np.exp(e[mask] - e[mask].max())
    w[mask] = z / z.sum()
  return w @ m, w


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
def test_attend_matches_numpy_and_masked_positions_get_zero(x64, kind):
  att = jrnn.attention(kind, dtype=jnp.float64)
  params = att.init(jax.random.key(0), 5, 5)
  rng = np.random.default_rng(0)
  q, m = rng.normal(size=5), rng.normal(size=(6, 5))
  context, weights = jrnn.attend(att, params, jnp.asarray(q), jnp.asarray(m), jnp.asarray(MASK))
  want_context, want_weights = _np_attend(kind, params, q, m, MASK)
  np.testing.assert_allclose(weights, want_weights, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(context, want_context, rtol=1e-12, atol=1e-14)
  assert (np.asarray(weights)[~MASK] == 0.0).all() and abs(float(weights.sum()) - 1) < 1e-12
  none_c, none_w = jrnn.attend(att, params, jnp.asarray(q), jnp.asarray(m), jnp.zeros(6, bool))
  assert (np.asarray(none_w) == 0).all() and (np.asarray(none_c) == 0).all()  # nothing to attend to


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
def test_attention_decoder_matches_a_numpy_loop(x64, kind):
  H, D, I, T = 5, 5, 3, 7
  decoder = jrnn.attention_decoder(jrnn.elman(H, dtype=jnp.float64), jrnn.attention(kind, dtype=jnp.float64), D, 6)
  params = decoder.init(jax.random.key(1), I)
  rng = np.random.default_rng(1)
  memory, xs, h0 = rng.normal(size=(6, D)), rng.normal(size=(T, I)), rng.normal(size=H)
  carry = jrnn.attention_carry(decoder, params, memory, MASK, carry=jnp.asarray(h0))
  final, hs = jrnn.unroll(decoder, params, jnp.asarray(xs), carry)
  weights = jrnn.attention_weights(decoder, params, jnp.asarray(xs), carry)
  wx, wh, b = (np.asarray(a) for a in params.cell)
  wc = np.asarray(params.wc)
  h, out = h0, np.zeros(H)
  for t in range(T):
    h = np.tanh(np.concatenate([xs[t], out]) @ wx + h @ wh + b)
    context, w = _np_attend(kind, params.attention, h, memory, MASK)
    out = np.tanh(np.concatenate([context, h]) @ wc)
    np.testing.assert_allclose(hs[t], out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(weights[t], w, rtol=1e-12, atol=1e-13)
  np.testing.assert_allclose(final.cell, h, rtol=1e-12)
  assert (np.asarray(weights)[:, ~MASK] == 0.0).all()


def test_bidirectional_encoder_stack_decoder_batched_with_gradients(x64):
  """A padded batch: bidirectional LSTM encoder -> memory; a stacked GRU decoder attends over it."""
  B, S, T, I, H = 2, 5, 4, 3, 4
  encoder = jrnn.bidirectional(jrnn.lstm(H, dtype=jnp.float64))
  decoder = jrnn.attention_decoder(
    jrnn.stack([jrnn.gru(H, dtype=jnp.float64), jrnn.gru(H, dtype=jnp.float64)]),
    jrnn.attention("additive", size=6, dtype=jnp.float64),
    2 * H,
    S,
  )
  params = (encoder.init(jax.random.key(2), I), decoder.init(jax.random.key(3), I))
  src = jax.random.normal(jax.random.key(4), (B, S, I), jnp.float64)
  tgt = jax.random.normal(jax.random.key(5), (B, T, I), jnp.float64)
  src_mask = jnp.asarray([[True] * 5, [True, True, True, False, False]])

  def run(params, src, tgt):
    def one(x, m, y):
      _, memory = jrnn.unroll(encoder, params[0], x, mask=m)
      carry = jrnn.attention_carry(decoder, params[1], memory, m)
      return jrnn.unroll(decoder, params[1], y, carry)[1], jrnn.attention_weights(decoder, params[1], y, carry)

    return jax.vmap(one)(src, src_mask, tgt)

  hs, weights = run(params, src, tgt)
  assert hs.shape == (B, T, H) and weights.shape == (B, T, S)
  assert (np.asarray(weights[1, :, 3:]) == 0).all()  # the padded source positions
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-12)
  # the padded source positions do not change the output
  src_changed = src.at[1, 3:].set(100.0)
  np.testing.assert_allclose(run(params, src_changed, tgt)[0][1], hs[1], rtol=1e-12)
  check_grads(lambda p: jnp.sum(run(p, src, tgt)[0] ** 2), (params,), order=1, modes=["rev"])


def test_bad_arguments_are_clear_errors():
  with pytest.raises(ValueError, match="kind must be one of"):
    jrnn.attention("cosine")
  with pytest.raises(ValueError, match="dot attention needs query_size == memory_size, got 4 and 6"):
    jrnn.attention("dot").init(jax.random.key(0), 4, 6)
  decoder = jrnn.attention_decoder(jrnn.gru(4), jrnn.attention("general"), 6, 5)
  params = decoder.init(jax.random.key(0), 3)
  with pytest.raises(
    ValueError, match=r"memory must have shape \[memory_length, memory_size\] = \[5, 6\], got \(5, 4\)"
  ):
    jrnn.attention_carry(decoder, params, jnp.ones((5, 4)))
  with pytest.raises(TypeError, match="cell must be a jrnn.Cell with a step"):
    jrnn.attention_decoder(jrnn.bidirectional(jrnn.gru(4)), jrnn.attention(), 6, 5)
  with pytest.raises(TypeError, match="decoder must come from jrnn.attention_decoder"):
    jrnn.attention_weights(jrnn.gru(4), params, jnp.ones((2, 3)), None)


def test_streaming_equals_the_one_shot_run(x64):
  """Encode once, then decode token by token with decoder.step; and a stacked encoder fed in chunks with the carry."""
  S, I, H, T = 6, 3, 4, 9
  encoder = jrnn.stack([jrnn.lstm(H, dtype=jnp.float64), jrnn.gru(H, dtype=jnp.float64)])
  decoder = jrnn.attention_decoder(jrnn.lstm(H, dtype=jnp.float64), jrnn.attention("general", dtype=jnp.float64), H, S)
  pe, pd = encoder.init(jax.random.key(0), I), decoder.init(jax.random.key(1), I)
  src = jax.random.normal(jax.random.key(2), (S, I), jnp.float64)
  tgt = jax.random.normal(jax.random.key(3), (T, I), jnp.float64)
  # The encoder over the whole source, and over chunks of 2, 3 and 1 steps with the carry passed on.
  enc_carry, memory = jrnn.unroll(encoder, pe, src)
  c, parts = None, []
  for lo, hi in ((0, 2), (2, 5), (5, 6)):
    c, hs = jrnn.unroll(encoder, pe, src[lo:hi], c)
    parts.append(hs)
  np.testing.assert_allclose(jnp.concatenate(parts), memory, rtol=1e-13)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), c, enc_carry)
  # The decoder in one shot, and one token at a time through decoder.step.
  carry = jrnn.attention_carry(decoder, pd, memory, carry=enc_carry[0])
  final, outs = jrnn.unroll(decoder, pd, tgt, carry)
  step = jax.jit(decoder.step)
  for t in range(T):
    carry, out = step(pd, carry, tgt[t])
    np.testing.assert_allclose(out, outs[t], rtol=1e-12)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), carry, final)
