"""jrnn.tasks.words (the standard library as a word corpus, its n-gram baselines) and the word LM of jrnn.apps.wordlm.

References: hand-written token lists, Counter-based ranking, Python-loop n-gram
models written straight from Chen & Goodman's equations (and checked to sum to
one), and the word LM run segment by segment at its resets.
"""

import collections
import math
import pathlib
import sysconfig
import tokenize

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn.apps import wordlm
from jrnn.tasks import words

SOURCE = 'def f(x):\n    """Add one."""\n\n    return x + 1  # done\nprint(f(2))\n'


def test_tokens_of_a_source_by_hand():
  assert words.tokens(SOURCE) == (
    ["def", "f", "(", "x", ")", ":", "<eol>", "<indent>"]
    + ['"', '"', '"', "Add", "one", ".", '"', '"', '"', "<eol>"]  # the blank line is dropped
    + ["return", "x", "+", "1", "#", "done", "<eol>", "<dedent>"]
    + ["print", "(", "f", "(", "2", ")", ")", "<eol>", "<eof>"]
  )
  with pytest.raises(ValueError, match="cannot tokenize"):
    words.tokens('x = """never closed\n')


def test_detokenize_renders_lines_and_indentation():
  assert words.detokenize(words.tokens(SOURCE)) == (
    'def f ( x ) :\n    " " " Add one . " " "\n    return x + 1 # done\nprint ( f ( 2 ) )\n<eof>'
  )


def test_vocabulary_ranks_by_count_then_text_and_encodes_unknowns_as_zero():
  toks = ["b", "a", "c", "a", "b", "a", "d", "e", "<unk>", "e"]
  counts = collections.Counter(t for t in toks if t != "<unk>")
  reference = ["<unk>"] + sorted(counts, key=lambda t: (-counts[t], t))  # a 3, b 2, e 2, c 1, d 1
  assert words.vocabulary(toks, 4) == tuple(reference[:4]) == ("<unk>", "a", "b", "e")
  vocab = words.vocabulary(toks, 4)
  np.testing.assert_array_equal(words.encode(["e", "c", "a", "zzz"], vocab), [3, 0, 1, 0])
  assert words.decode(np.array([1, 3]), vocab) == ["a", "e"]
  with pytest.raises(ValueError, match="vocab_size must be an integer >= 2"):
    words.vocabulary(toks, 1)


def test_corpus_of_a_tree_excludes_tests_and_splits_files_whole(tmp_path):
  files = {f"m{i}.py": f"x{i} = {i}\n" for i in range(60)}
  files |= {"pkg/mod.py": "import os\n", "pkg/tests/t.py": "skip = 1\n", "test/t.py": "skip = 2\n"}
  files |= {"site-packages/p.py": "skip = 3\n", "notes.txt": "not python\n"}
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  kept = [p.relative_to(tmp_path).as_posix() for p in words.source_files(tmp_path)]
  assert kept == sorted(n for n in files if n.endswith(".py") and "skip" not in files[n])
  splits = words.corpus(str(tmp_path))
  for split in ("train", "valid", "test"):  # each split: its files' tokens, whole, in path order
    expected = [t for n in kept if words.split_of(n) == split for t in words.tokens(files[n])]
    assert list(splits[split]) == expected
  assert {words.split_of(n) for n in kept} == {"train", "valid", "test"}


def test_the_standard_library_corpus():
  data = words.words()
  root = pathlib.Path(sysconfig.get_paths()["stdlib"])
  paths = [p.relative_to(root).as_posix() for p in words.source_files()]
  assert len(paths) > 300 and not any(set(p.split("/")[:-1]) & words.EXCLUDED_DIRS for p in paths)
  share = collections.Counter(words.split_of(p) for p in paths)
  assert 0.02 < share["valid"] / len(paths) < 0.08 and 0.02 < share["test"] / len(paths) < 0.08
  assert len(data.vocab) == 10_000 and data.vocab[0] == "<unk>" and set(words.SPECIALS) <= set(data.vocab)
  assert data.train.size > 10 * data.valid.size > 0 and data.test.size > 0
  for ids in (data.train, data.valid, data.test):
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 10_000
    assert words.decode(ids[-1:], data.vocab) == ["<eof>"]
  # one file, read again: its tokens appear in its split as a contiguous run
  path = next(p for p in paths if words.split_of(p) == "valid")
  with tokenize.open(root / path) as f:
    ids = words.encode(words.tokens(f.read()), data.vocab)
  windows = np.lib.stride_tricks.sliding_window_view(data.valid, ids.size)
  assert np.any(np.all(windows == ids, axis=1))
  assert 0.0 < np.mean(data.valid == 0) < 0.15  # the <unk> rate of a 10k vocabulary


def _unigram_reference(train, test, V):
  counts = collections.Counter(train)
  return math.exp(-sum(math.log((counts[w] + 1) / (len(train) + V)) for w in test) / len(test))


def _kneser_ney_reference(train, V, order):
  """``p(w, context)`` of interpolated Kneser-Ney, with Python dicts, straight from the equations."""
  counts = {order: collections.Counter(tuple(train[i : i + order]) for i in range(len(train) - order + 1))}
  for k in range(order - 1, 0, -1):  # continuation counts: distinct words before each k-gram
    counts[k] = collections.Counter(g[1:] for g in counts[k + 1])
  discount = {}
  for k, c in counts.items():
    n1 = sum(1 for v in c.values() if v == 1)
    n2 = sum(1 for v in c.values() if v == 2)
    discount[k] = n1 / (n1 + 2 * n2)
  totals = {k: collections.Counter() for k in counts}
  types = {k: collections.Counter() for k in counts}
  for k, c in counts.items():
    for g, v in c.items():
      totals[k][g[:-1]] += v
      types[k][g[:-1]] += 1

  def p(w, context, k=order):
    if k == 0:
      return 1.0 / V
    h = tuple(context[len(context) - (k - 1) :]) if k > 1 else ()
    lower = p(w, context, k - 1)
    if totals[k][h] == 0:
      return lower
    D = discount[k]
    return (max(counts[k][h + (w,)] - D, 0.0) + D * types[k][h] * lower) / totals[k][h]

  return p


@pytest.mark.parametrize("order", [1, 2, 3])
def test_kneser_ney_equals_a_python_loop_and_sums_to_one(order):
  rng = np.random.default_rng(order)
  V = 40
  zipf = 1.0 / np.arange(1, V) ** 1.1  # token V - 1 never occurs in training
  train = rng.choice(V - 1, 300, p=zipf / zipf.sum())
  test = np.concatenate([rng.choice(V - 1, 60, p=zipf / zipf.sum()), [V - 1, 0, V - 1]])
  p = _kneser_ney_reference(train.tolist(), V, order)
  for context in [(0, 1), (3, 7), (8, 8), (2, 0)]:  # seen and unseen contexts
    assert sum(p(w, context) for w in range(V)) == pytest.approx(1.0, abs=1e-12)
  stream = train[-(order - 1) :].tolist() + test.tolist() if order > 1 else test.tolist()
  nll = -sum(math.log(p(w, stream[i : i + order - 1])) for i, w in enumerate(test.tolist()))
  np.testing.assert_allclose(words.kneser_ney_perplexity(train, test, V, order), math.exp(nll / test.size), rtol=1e-12)
  np.testing.assert_allclose(
    words.unigram_perplexity(train, test, V), _unigram_reference(train.tolist(), test.tolist(), V), rtol=1e-12
  )


def test_baseline_errors():
  with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\)"):
    words.kneser_ney_perplexity(np.array([0, 1, 7]), np.array([1]), 5)
  with pytest.raises(TypeError, match="1-D integer array"):
    words.unigram_perplexity(np.array([0.5]), np.array([1]), 5)
  with pytest.raises(ValueError, match="order must be a positive integer"):
    words.kneser_ney_perplexity(np.array([0, 1, 2]), np.array([1]), 5, order=0)
  with pytest.raises(ValueError, match="no n-gram occurs exactly once"):
    words.kneser_ney_perplexity(np.array([0, 1, 0, 1, 0, 1, 0, 1]), np.array([1]), 5, order=1)


@pytest.fixture(scope="module")
def model_and_params():
  model = wordlm.WordLM(vocab_size=7, hidden=6, layers=2, dropout=0.4, cell="lstm")
  return model, model.init(jax.random.key(1))


def _reference_logits(model, params, ids):
  """One row, layer by layer with jrnn.unroll, then the embedding's transpose and the bias."""
  h = jrnn.embedding(model.vocab_size, model.hidden).apply(params.head.embedding, jnp.asarray(ids))
  for layer in params.layers:
    h = jrnn.unroll(jrnn.lstm(model.hidden), layer, h)[1]
  return h @ params.head.embedding.table.T + params.head.b[None]


def test_word_lm_without_dropout_equals_its_layers_one_by_one(model_and_params):
  model, params = model_and_params
  ids = np.array([[1, 2, 5, 3, 3, 4, 5, 0], [5, 6, 6, 2, 1, 5, 5, 4]], np.int32)
  _, logits = model.apply(params, ids, model.initial_carry(params, 2), train=False)
  for row, want in zip(logits, (_reference_logits(model, params, r) for r in ids)):
    np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-6)
  # train=True with dropout 0 is the same model; with dropout it is deterministic for its key and differs
  plain = model._replace(dropout=0.0)
  np.testing.assert_array_equal(
    plain.apply(params, ids, model.initial_carry(params, 2), train=True, key=jax.random.key(0))[1], logits
  )
  a = model.apply(params, ids, model.initial_carry(params, 2), train=True, key=jax.random.key(3))[1]
  b = model.apply(params, ids, model.initial_carry(params, 2), train=True, key=jax.random.key(3))[1]
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, logits, atol=1e-3)
  with pytest.raises(ValueError, match="needs a key"):
    model.apply(params, ids, model.initial_carry(params, 2), train=True)


def test_word_lm_dropout_sites_equal_explicit_masks(model_and_params):
  """Dropout on the embedding, between the layers and before the tied output, with jrnn.dropout's masks."""
  model, params = model_and_params
  ids = np.array([[1, 2, 3, 3, 4, 0]], np.int32)
  key = jax.random.key(7)
  _, got = model.apply(params, ids, model.initial_carry(params, 1), train=True, key=key)
  keys = jax.random.split(key, model.layers + 1)
  h = model._parts()[0].apply(params.head.embedding, ids)
  masks = [jrnn.dropout(k, model.dropout, jnp.ones(h.shape)) for k in keys]  # the masks, scaled by 1 / (1 - p)
  for m in masks:
    assert set(np.unique(np.asarray(m)).tolist()) <= {0.0, float(np.float32(1.0 / (1.0 - model.dropout)))}
    assert len({tuple(np.asarray(m[0, t])) for t in range(ids.shape[1])}) > 1  # a fresh mask per step
  cell = jrnn.lstm(model.hidden)
  for layer, m in zip(params.layers, masks):
    h = jrnn.unroll(cell, layer, (h * m)[0])[1][None]
  want = (h * masks[-1]) @ params.head.embedding.table.T + params.head.b[None, None]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_generate_at_low_temperature_is_greedy(model_and_params):
  model, params = model_and_params
  prime = np.array([1, 2], np.int32)
  got = model.generate(params, prime, 6, jax.random.key(0), temperature=1e-6)
  seq, want = list(prime), []
  for _ in range(6):  # the reference re-reads the whole sequence every step
    logits = model.apply(params, np.array([seq], np.int32), model.initial_carry(params, 1), train=False)[1]
    want.append(int(jnp.argmax(logits[0, -1])))
    seq.append(want[-1])
  assert got.tolist() == want
  with pytest.raises(ValueError, match="temperature must be positive"):
    model.generate(params, prime, 3, jax.random.key(0), temperature=0.0)


def test_perplexity_evaluation_equals_one_long_pass(model_and_params):
  model, params = model_and_params
  ids = np.random.default_rng(0).integers(0, 7, 2 * 40 + 1).astype(np.int32)
  ppl, n = wordlm.perplexity_fn(model, streams=2, window=7)(params, ids)
  data = jrnn.tasks.chars.streams(ids, 2)
  _, logits = model.apply(params, data[:, :-1], model.initial_carry(params, 2), train=False)
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), data[:, 1:, None], axis=-1)
  assert n == 2 * 39
  np.testing.assert_allclose(ppl, float(jnp.exp(jnp.mean(nll))), rtol=1e-5)
