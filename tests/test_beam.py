"""jrnn.beam_search against brute-force enumeration, greedy decoding, and itself under vmap."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

V, EOS, BOS = 4, 0, 3  # tokens 0..3; eos = 0; bos = 3 is also an ordinary token


def _decoder(seed=0, hidden=6):
  """A small embedding -> Elman -> linear decoder: step_fn(state, token) -> (state, logits [V])."""
  emb, cell, head = jrnn.embedding(V, 5), jrnn.elman(hidden), jrnn.linear(V)
  k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
  pe, pc, ph = emb.init(k1), cell.init(k2, 5), head.init(k3, hidden)
  ph = ph._replace(w=3.0 * ph.w)  # sharper distributions, so that the ranks are far apart
  state = 0.5 * jax.random.normal(k4, (hidden,))

  def step_fn(h, token):
    h, out = cell.step(pc, h, emb.apply(pe, token))
    return h, head.apply(ph, out)

  return step_fn, state


def _log_prob(step_fn, state, seq):
  """log p(seq) by running the decoder over it, in float64 NumPy for the sums."""
  total, token = 0.0, BOS
  for y in seq:
    state, logits = step_fn(state, jnp.int32(token))
    logits = np.asarray(logits, np.float64)
    total += logits[y] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    token = y
  return total


def _all_hypotheses(L):
  """Every hypothesis of at most L tokens: n - 1 non-eos tokens then eos, or L tokens without eos."""
  words = [t for t in range(V) if t != EOS]
  for n in range(1, L + 1):
    for body in itertools.product(words, repeat=n - 1):
      yield (*body, EOS)
  yield from itertools.product(words, repeat=L)


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_a_beam_as_wide_as_every_hypothesis_finds_the_exact_best(alpha):
  step_fn, state = _decoder()
  L = 3
  scored = []
  for seq in _all_hypotheses(L):
    lp = ((5 + len(seq)) / 6) ** alpha
    scored.append((_log_prob(step_fn, state, seq) / lp, seq))
  scored.sort(reverse=True)
  k = V**L  # >= the 40 hypotheses: exhaustive
  out = jax.jit(
    lambda s: jrnn.beam_search(step_fn, s, bos=BOS, eos=EOS, beam_size=k, max_length=L, length_penalty=alpha)
  )(state)
  count = len(scored)
  got = [tuple(int(t) for t in out.tokens[i, : int(out.lengths[i])]) for i in range(count)]
  assert got[:5] == [seq for _, seq in scored[:5]]
  np.testing.assert_allclose(np.asarray(out.scores[:count]), [s for s, _ in scored], rtol=1e-5, atol=1e-5)
  assert sorted(got) == sorted(seq for _, seq in scored)  # every hypothesis once
  assert bool(jnp.isneginf(out.scores[count:]).all())  # the rest of the beam is empty
  for i in range(count):  # after the end, eos
    assert (np.asarray(out.tokens[i, int(out.lengths[i]) :]) == EOS).all()


def test_a_beam_of_one_is_greedy_decoding():
  for seed in range(4):
    step_fn, state = _decoder(seed)
    L = 8
    greedy, s, token, total = [], state, BOS, 0.0
    for _ in range(L):
      s, logits = step_fn(s, jnp.int32(token))
      token = int(jnp.argmax(logits))
      total += float(jax.nn.log_softmax(logits)[token])
      greedy.append(token)
      if token == EOS:
        break
    out = jrnn.beam_search(step_fn, state, bos=BOS, eos=EOS, beam_size=1, max_length=L)
    assert out.tokens[0, : int(out.lengths[0])].tolist() == greedy
    np.testing.assert_allclose(float(out.log_probs[0]), total, rtol=1e-5)


def test_vmap_over_a_batch_of_states_equals_one_search_per_state():
  step_fn, _ = _decoder()
  states = jax.random.normal(jax.random.key(9), (3, 6))
  search = lambda s: jrnn.beam_search(step_fn, s, bos=BOS, eos=EOS, beam_size=4, max_length=5)
  batched = jax.jit(jax.vmap(search))(states)
  for b in range(3):
    one = search(states[b])
    jax.tree_util.tree_map(lambda x, y, b=b: np.testing.assert_allclose(x[b], y, rtol=1e-6), batched, one)


def test_wider_beams_never_score_worse():
  step_fn, state = _decoder(seed=5)
  best = [
    float(jrnn.beam_search(step_fn, state, bos=BOS, eos=EOS, beam_size=k, max_length=6).scores[0])
    for k in (1, 2, 4, 8, 64)
  ]
  assert all(b >= a - 1e-6 for a, b in zip(best, best[1:]))


def test_bad_arguments_are_clear_errors():
  step_fn, state = _decoder()
  with pytest.raises(ValueError, match="beam_size must be a positive int, got 0"):
    jrnn.beam_search(step_fn, state, bos=BOS, eos=EOS, beam_size=0, max_length=3)
  with pytest.raises(ValueError, match="length_penalty must be a number >= 0, got -1"):
    jrnn.beam_search(step_fn, state, bos=BOS, eos=EOS, beam_size=2, max_length=3, length_penalty=-1)
  with pytest.raises(ValueError, match=r"logits of shape \(2, 4\); vmap beam_search for a batch"):
    jrnn.beam_search(lambda s, t: (s, jnp.zeros((2, V))), state, bos=BOS, eos=EOS, beam_size=2, max_length=3)


def test_sampling_at_temperature_zero_and_top_k_one_is_greedy():
  step_fn, state = _decoder(seed=1)
  L = 8
  beam = jrnn.beam_search(step_fn, state, bos=BOS, eos=EOS, beam_size=1, max_length=L)
  for out in (
    jrnn.sample_decode(step_fn, state, None, bos=BOS, eos=EOS, max_length=L, temperature=0),
    jrnn.sample_decode(step_fn, state, jax.random.key(0), bos=BOS, eos=EOS, max_length=L, top_k=1),
  ):
    assert int(out.length) == int(beam.lengths[0])
    assert out.tokens.tolist() == beam.tokens[0].tolist()
    np.testing.assert_allclose(float(out.log_prob), float(beam.log_probs[0]), rtol=1e-5)


def test_sampled_first_tokens_follow_the_tempered_top_k_distribution():
  step_fn, state = _decoder(seed=2)
  _, logits = step_fn(state, jnp.int32(BOS))
  tau, k, n = 0.7, 3, 20000
  keys = jax.random.split(jax.random.key(1), n)
  draw = jax.jit(
    jax.vmap(
      lambda key: jrnn.sample_decode(
        step_fn, state, key, bos=BOS, eos=EOS, max_length=2, temperature=tau, top_k=k
      ).tokens[0]
    )
  )
  counts = np.bincount(np.asarray(draw(keys)), minlength=V) / n
  z = np.asarray(logits, np.float64) / tau
  keep = np.argsort(z)[-k:]
  want = np.zeros(V)
  want[keep] = np.exp(z[keep] - z[keep].max()) / np.exp(z[keep] - z[keep].max()).sum()
  np.testing.assert_allclose(counts, want, atol=5 * np.sqrt(0.25 / n))  # 5 standard deviations at most
  assert counts[np.argsort(z)[0]] == 0.0  # outside the top k: never drawn


def test_sample_decode_stops_at_eos_and_scores_under_the_model():
  step_fn, state = _decoder(seed=3)
  out = jrnn.sample_decode(step_fn, state, jax.random.key(5), bos=BOS, eos=EOS, max_length=12, temperature=1.5)
  n = int(out.length)
  tokens = out.tokens.tolist()
  assert (EOS not in tokens[: n - 1]) and (n == 12 or tokens[n - 1] == EOS) and all(t == EOS for t in tokens[n:])
  np.testing.assert_allclose(float(out.log_prob), _log_prob(step_fn, state, tokens[:n]), rtol=1e-5)
  with pytest.raises(ValueError, match="sampling with temperature 1.5 needs a key"):
    jrnn.sample_decode(step_fn, state, None, bos=BOS, eos=EOS, max_length=3, temperature=1.5)
