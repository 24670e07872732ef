"""The seeds' input/output configurations against explicit loops."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn


def _model(make, H=5, I=3, O=3, seed=0, dtype=jnp.float64):
  cell, head = make(H, dtype=dtype), jrnn.linear(O, dtype=dtype)
  k1, k2 = jax.random.split(jax.random.key(seed))
  return cell, cell.init(k1, I), head, head.init(k2, H)


def test_many_to_many_applies_head_per_step(x64):
  cell, p, head, hp = _model(jrnn.gru)
  xs = jax.random.normal(jax.random.key(1), (6, 3), jnp.float64)
  mask = jnp.array([1, 1, 1, 0, 1, 0], bool)
  _, ys = jrnn.many_to_many(cell, p, head, hp, xs, mask=mask)
  _, hs = jrnn.unroll(cell, p, xs, mask=mask)
  want = np.asarray(hs) @ np.asarray(hp.w) + np.asarray(hp.b)
  want[~np.asarray(mask)] = 0.0
  np.testing.assert_allclose(ys, want, rtol=1e-12)


def test_many_to_one_returns_state_at_last_valid_step(x64):
  cell, p, _, _ = _model(jrnn.lstm)
  xs = jax.random.normal(jax.random.key(1), (8, 3), jnp.float64)
  mask = jnp.array([1, 0, 1, 1, 1, 0, 0, 0], bool)
  carry, h = jrnn.many_to_one(cell, p, xs, mask=mask)
  c_ref, hs_ref = jrnn.unroll(cell, p, xs[np.asarray(mask)])
  np.testing.assert_allclose(h, hs_ref[-1], rtol=1e-12)
  np.testing.assert_allclose(h, carry.h, rtol=1e-12)
  chex.assert_trees_all_close(carry, c_ref, rtol=1e-12)
  _, h_nomask = jrnn.many_to_one(cell, p, xs)
  np.testing.assert_allclose(h_nomask, jrnn.unroll(cell, p, xs)[1][-1], rtol=1e-12)
  np.testing.assert_array_equal(jrnn.last_valid(jnp.ones((3, 2)), jnp.zeros(3, bool)), 0.0)


@pytest.mark.parametrize("feedback", ["output", "argmax", "sample"])
def test_one_to_many_equals_feedback_loop(x64, feedback):
  cell, p, head, hp = _model(jrnn.elman)
  x0 = jnp.array([1.0, 0.0, 0.0], jnp.float64)
  key = jax.random.key(7)
  carry, ys, fed = jrnn.one_to_many(cell, p, head, hp, x0, 6, feedback=feedback, key=key, temperature=0.7)
  # Reference: the loop, with the same per-step keys.
  keys = jax.random.split(key, 6)
  c, x, want_ys, want_fed = cell.initial_carry(p), x0, [], []
  for t in range(6):
    c, h = cell.step(p, c, x)
    y = np.asarray(h) @ np.asarray(hp.w) + np.asarray(hp.b)
    if feedback == "output":
      x = y
    elif feedback == "argmax":
      x = np.eye(3)[np.argmax(y)]
    else:
      x = np.eye(3)[int(jax.random.categorical(keys[t], jnp.asarray(y, jnp.float32) / 0.7))]
    want_ys.append(y)
    want_fed.append(x)
  np.testing.assert_allclose(ys, np.stack(want_ys), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(fed, np.stack(want_fed), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(carry, c, rtol=1e-10)


def test_one_to_many_sampling_is_deterministic_per_key_and_follows_temperature():
  cell, p, head, hp = _model(jrnn.gru, dtype=jnp.float32)
  x0 = jnp.array([0.0, 1.0, 0.0])
  run = jax.jit(lambda k, t: jrnn.one_to_many(cell, p, head, hp, x0, 50, feedback="sample", key=k, temperature=t)[2])
  a, b, c = run(jax.random.key(1), 1.0), run(jax.random.key(1), 1.0), run(jax.random.key(2), 1.0)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  # Near-zero temperature sampling equals greedy decoding.
  greedy = jrnn.one_to_many(cell, p, head, hp, x0, 50, feedback="argmax")[2]
  np.testing.assert_array_equal(run(jax.random.key(3), 1e-4), greedy)


def test_encoder_decoder_teacher_forcing_and_feedback(x64):
  enc, pe, head, hp = _model(jrnn.lstm, H=4, I=3, O=2, seed=0)
  dec, pd = jrnn.lstm(4, dtype=jnp.float64), jrnn.lstm(4, dtype=jnp.float64).init(jax.random.key(5), 2)
  xs = jax.random.normal(jax.random.key(1), (7, 3), jnp.float64)
  mask = jnp.arange(7) < 5
  dec_in = jax.random.normal(jax.random.key(2), (4, 2), jnp.float64)  # T_out = 4 != T_in = 7
  carry, ys = jrnn.encoder_decoder(enc, pe, dec, pd, head, hp, xs, mask=mask, decoder_inputs=dec_in)
  enc_carry, _ = jrnn.unroll(enc, pe, xs[:5])
  want_carry, hs = jrnn.unroll(dec, pd, dec_in, enc_carry)
  np.testing.assert_allclose(ys, head.apply(hp, hs), rtol=1e-12)
  chex.assert_trees_all_close(carry, want_carry, rtol=1e-12)
  # Inference: feedback from a start symbol equals one_to_many from the encoder's carry.
  start = jnp.zeros(2, jnp.float64)
  _, ys_fb = jrnn.encoder_decoder(enc, pe, dec, pd, head, hp, xs, mask=mask, start=start, length=3)
  _, want_fb, _ = jrnn.one_to_many(dec, pd, head, hp, start, 3, enc_carry)
  np.testing.assert_allclose(ys_fb, want_fb, rtol=1e-12)
  with pytest.raises(ValueError, match="exactly one"):
    jrnn.encoder_decoder(enc, pe, dec, pd, head, hp, xs)
  gru_dec = jrnn.gru(5, dtype=jnp.float64)
  with pytest.raises(ValueError, match="does not fit the decoder"):
    jrnn.encoder_decoder(enc, pe, gru_dec, gru_dec.init(jax.random.key(0), 2), head, hp, xs, decoder_inputs=dec_in)
