"""The sequence-to-sequence tasks (jrnn.tasks.transduction) and their encoder-decoder (jrnn.apps.seq2seq).

References: the dates' every (date, format) string, enumerated to show that
each source has exactly one answer; the issue's own examples; ordinals and
weekday names written out by hand and by ``datetime``; NumPy for the
encodings, the loss and the log-probabilities; ``jrnn.encoder_decoder`` for
the plain model; beam search's own scores for the sequence log-probability.
"""

import datetime
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn.apps.seq2seq import Seq2Seq
from jrnn.apps.seq2seq import sequence_log_prob
from jrnn.tasks import transduction as tr


def test_the_issues_examples():
  d = datetime.date(1998, 3, 3)
  written = {tr.format_date(d, f) for f in tr.DATE_FORMATS}
  assert {"tue 3 march 1998", "03/03/98", "March 3rd, 1998"} <= written
  assert d.isoformat() == "1998-03-03"


def test_every_source_has_exactly_one_answer():
  """All 36,525 dates × every format: no string is written for two different dates."""
  answer = {}
  day, last = tr.FIRST, tr.LAST
  while day <= last:
    for f in tr.DATE_FORMATS:
      s = tr.format_date(day, f)
      assert answer.setdefault(s, day) == day, (s, answer[s], day)
    day += datetime.timedelta(days=1)
  assert len(answer) == 36525 * len(tr.DATE_FORMATS)


def test_names_ordinals_and_numbers():
  for n, want in [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th")]:
    assert tr.format_date(datetime.date(2001, 1, n), "{do}") == want
  for n, want in [(21, "21st"), (22, "22nd"), (23, "23rd"), (30, "30th"), (31, "31st")]:
    assert tr.format_date(datetime.date(2001, 1, n), "{do}") == want
  for day in range(1, 8):  # 2001-01-01 was a Monday; the names do not depend on the locale
    d = datetime.date(2001, 1, day)
    assert tr.format_date(d, "{Weekday}") == tr.WEEKDAYS[day - 1].capitalize() == d.strftime("%A")
  assert [tr.format_date(datetime.date(2001, m, 1), "{month}") for m in range(1, 13)] == list(tr.MONTHS)
  assert tr.format_date(datetime.date(2049, 12, 31), "{dd}/{mm}/{yy}") == "31/12/49"
  assert tr.format_date(datetime.date(1950, 1, 5), "{yyyy}{mm}{dd}") == "19500105"


def test_dates_are_deterministic_and_span_formats():
  a, b, c = tr.dates(300, seed=5), tr.dates(300, seed=5), tr.dates(300, seed=6)
  assert a == b and a != c
  for s, t in zip(*a):
    d = datetime.date.fromisoformat(t)
    assert tr.FIRST <= d <= tr.LAST
    assert s in {tr.format_date(d, f) for f in tr.DATE_FORMATS}
  used = {f for s, t in zip(*a) for f in tr.DATE_FORMATS if tr.format_date(datetime.date.fromisoformat(t), f) == s}
  assert used == set(tr.DATE_FORMATS)
  with pytest.raises(ValueError, match="n must be a positive integer"):
    tr.dates(0)


def test_reversal():
  pairs = tr.reversal(200, (3, 7), seed=1)
  assert all(t == s[::-1] and 3 <= len(s) <= 7 for s, t in zip(*pairs))
  assert {len(s) for s in pairs.sources} == set(range(3, 8))
  assert pairs == tr.reversal(200, (3, 7), seed=1)
  with pytest.raises(ValueError, match="lengths must be"):
    tr.reversal(3, (5, 2))


def test_encode_and_exact_match():
  v = tr.Vocab("abc")
  enc = tr.encode(tr.Pairs(["ab", "cab"], ["ba", "c"]), v)
  np.testing.assert_array_equal(enc.src, [[3, 4, 0], [5, 3, 4]])
  np.testing.assert_array_equal(enc.src_mask, [[1, 1, 0], [1, 1, 1]])
  np.testing.assert_array_equal(enc.dec_in, [[1, 4, 3], [1, 5, 0]])
  np.testing.assert_array_equal(enc.dec_out, [[4, 3, 2], [5, 2, 0]])
  np.testing.assert_array_equal(enc.dec_mask, [[1, 1, 1], [1, 1, 0]])
  decoded = np.array([[4, 3, 2, 5], [5, 4, 2, 2]])  # right (then anything); wrong before eos
  np.testing.assert_array_equal(tr.exact_match(decoded, enc), [True, False])
  np.testing.assert_array_equal(tr.exact_match(np.array([[4, 3, 5], [5, 2, 5]]), enc), [False, True])
  assert v.text([4, 3, 2, 5]) == "ba"
  with pytest.raises(ValueError, match="'z' of 'az' is not in the vocabulary"):
    v.ids("az")
  with pytest.raises(ValueError, match="longer than src_length=1"):
    tr.encode(tr.Pairs(["ab"], ["b"]), v, src_length=1)


@pytest.fixture(scope="module")
def batch():
  return tr.encode(tr.dates(4, seed=2), tr.DATE_VOCAB)


@pytest.mark.parametrize("attention", ["none", "additive", "general"])
def test_loss_is_the_masked_mean_cross_entropy(attention, batch):
  model = Seq2Seq(tr.DATE_VOCAB.size, 8, "lstm", attention)
  params = model.init(jax.random.key(0))
  logits = np.stack([np.asarray(model.logits(params, *a)) for a in zip(batch.src, batch.src_mask, batch.dec_in)])
  z = logits.astype(np.float64)
  logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
  nll = -np.take_along_axis(logp, batch.dec_out[..., None], -1)[..., 0]
  want = nll[batch.dec_mask].mean()
  np.testing.assert_allclose(float(model.loss(params, tuple(batch))), want, rtol=1e-5)


def test_the_plain_model_is_jrnn_encoder_decoder(batch):
  model = Seq2Seq(tr.DATE_VOCAB.size, 8, "gru", "none")
  params = model.init(jax.random.key(1))
  emb = jrnn.embedding(tr.DATE_VOCAB.size, 8)
  cell = jrnn.gru(8)
  for s, m, d in zip(batch.src, batch.src_mask, batch.dec_in):
    _, want = jrnn.encoder_decoder(
      cell,
      params.encoder,
      cell,
      params.decoder,
      jrnn.linear(tr.DATE_VOCAB.size),
      params.head,
      emb.apply(params.embed, s),
      mask=m,
      decoder_inputs=emb.apply(params.embed, d),
    )
    np.testing.assert_allclose(model.logits(params, s, m, d), want, atol=1e-6)


def test_attention_ignores_the_source_padding(batch):
  model = Seq2Seq(tr.DATE_VOCAB.size, 8, "gru", "additive")
  params = model.init(jax.random.key(2))
  s, m, d = batch.src[0], batch.src_mask[0], batch.dec_in[0]
  w = model.attention_weights(params, s, m, d)
  np.testing.assert_array_equal(np.asarray(w)[:, ~m], 0.0)
  np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-5)
  # other ids in the padded positions change nothing
  s2 = np.where(m, s, 7)
  np.testing.assert_array_equal(model.logits(params, s2, m, d), model.logits(params, s, m, d))


def test_decode_scores_are_sequence_log_probabilities(batch):
  """Beam search's log-probabilities equal a teacher-forced rescoring of its tokens; width 3 ≥ greedy."""
  model = Seq2Seq(tr.DATE_VOCAB.size, 8, "gru", "dot")
  params = model.init(jax.random.key(3))
  L = batch.dec_out.shape[1]
  beam = model.decode(params, jnp.asarray(batch.src), jnp.asarray(batch.src_mask), beam_size=3, max_length=L)
  greedy = model.decode(params, jnp.asarray(batch.src), jnp.asarray(batch.src_mask), beam_size=1, max_length=L)
  for k in range(3):
    rescored = sequence_log_prob(model, params, batch.src, batch.src_mask, beam.tokens[:, k])
    np.testing.assert_allclose(rescored, beam.log_probs[:, k], rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(beam.log_probs[:, 0]) >= np.asarray(greedy.log_probs[:, 0]) - 1e-5)


def test_decode_by_brute_force_on_a_tiny_vocabulary():
  """A width of V^L finds the most probable sequence of all V^L (a 2-character vocabulary, L = 3)."""
  v = tr.Vocab("ab")
  enc = tr.encode(tr.Pairs(["ab"], ["ba"]), v)
  model = Seq2Seq(v.size, 6, "gru", "additive")
  params = model.init(jax.random.key(4))
  L = 3
  r = model.decode(params, jnp.asarray(enc.src), jnp.asarray(enc.src_mask), beam_size=v.size**L, max_length=L)
  # every sequence at once; tokens after an eos are not scored, so such a sequence stands for its prefix
  seqs = np.array(list(itertools.product(range(v.size), repeat=L)), np.int32)
  n = len(seqs)
  src, mask = np.repeat(enc.src, n, 0), np.repeat(enc.src_mask, n, 0)
  best = float(np.max(np.asarray(sequence_log_prob(model, params, src, mask, seqs))))
  np.testing.assert_allclose(float(r.log_probs[0, 0]), best, rtol=1e-5)
