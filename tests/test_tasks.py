"""The tasks' data and baselines against independent computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn.tasks import adding
from jrnn.tasks import adding_baseline
from jrnn.tasks import chars
from jrnn.tasks import copy
from jrnn.tasks import copy_baseline
from jrnn.tasks import sunspots


def test_adding_targets_are_the_sum_of_the_marked_values():
  data = adding(jax.random.key(3), 64, 11)
  xs, targets = np.asarray(data.xs), np.asarray(data.targets)
  assert xs.shape == (64, 11, 2) and targets.shape == (64, 1)
  for b in range(64):
    marked = [t for t in range(11) if xs[b, t, 1] == 1.0]
    assert len(marked) == 2 and marked[0] < 5 <= marked[1]  # one marker in each half (T // 2 = 5)
    assert set(np.unique(xs[b, :, 1])) == {0.0, 1.0}
    total = 0.0
    for t in marked:
      total += float(xs[b, t, 0])
    np.testing.assert_allclose(targets[b, 0], total, rtol=1e-6)
  assert (xs[..., 0] >= 0).all() and (xs[..., 0] < 1).all()
  np.testing.assert_array_equal(adding(jax.random.key(3), 64, 11).xs, data.xs)  # deterministic for a key
  assert not np.array_equal(adding(jax.random.key(4), 64, 11).xs, data.xs)


def test_adding_baseline_is_predicting_one():
  data = adding(jax.random.key(0), 20000, 10)
  y = np.asarray(data.targets, np.float64)
  np.testing.assert_allclose(adding_baseline(data.targets), np.mean((y - 1.0) ** 2), rtol=1e-5)
  np.testing.assert_allclose(adding_baseline(data.targets), 1.0 / 6.0, atol=0.005)  # Var(u1 + u2) = 2/12


@pytest.mark.parametrize("blanks", [1, 7])
def test_copy_sequences_follow_arjovsky_et_al(blanks):
  data = copy(jax.random.key(1), 16, blanks)
  tokens, labels = np.asarray(data.tokens), np.asarray(data.labels)
  L = blanks + 20
  assert data.xs.shape == (16, L, 10) and labels.shape == (16, L)
  np.testing.assert_array_equal(np.argmax(np.asarray(data.xs), -1), tokens)
  symbols = tokens[:, :10]
  assert symbols.min() >= 1 and symbols.max() <= 8
  expected_input = np.concatenate(
    [symbols, np.zeros((16, blanks - 1), int), np.full((16, 1), 9), np.zeros((16, 10), int)], axis=1
  )
  np.testing.assert_array_equal(tokens, expected_input)
  np.testing.assert_array_equal(labels, np.concatenate([np.zeros((16, blanks + 10), int), symbols], axis=1))


@pytest.mark.parametrize("blanks", [5, 100])
def test_copy_baseline_is_the_memoryless_strategy(blanks):
  """10 ln 8 / (T + 20), against the cross-entropy of the memoryless predictor on data."""
  data = copy(jax.random.key(2), 8, blanks)
  labels = np.asarray(data.labels)
  L = blanks + 20
  probs = np.zeros((L, 10))
  probs[: blanks + 10, 0] = 1.0  # blanks where the output is always blank
  probs[blanks + 10 :, 1:9] = 1.0 / 8  # a uniform guess over the 8 symbols
  ce = -np.mean(np.log(probs[np.arange(L)[None, :], labels]))
  np.testing.assert_allclose(copy_baseline(blanks), ce, rtol=1e-12)
  assert copy_baseline(100) == pytest.approx(10 * math.log(8) / 120)


def test_chars_corpus_split_and_codec():
  data = chars.chars()
  text = chars.corpus()
  assert len(text) > 400_000 and 80 <= len(data.vocab) <= 130
  assert data.vocab == "".join(sorted(set(text)))
  assert len(data.train) + len(data.valid) == len(text)
  assert len(data.valid) == pytest.approx(0.1 * len(text), abs=1)
  assert chars.decode(data.train[:500], data.vocab) == text[:500]
  assert chars.decode(data.valid[-200:], data.vocab) == text[-200:]
  with pytest.raises(ValueError, match="not in the vocabulary"):
    chars.encode("abc\u2603", "abc")


def test_bigram_baseline_against_a_counting_loop():
  text = "abracadabra, a banana bandana"
  data = chars.chars(text, valid_fraction=0.3)
  V = len(data.vocab)
  counts = {}
  for a, b in zip(data.train[:-1], data.train[1:]):
    counts[(a, b)] = counts.get((a, b), 0) + 1
  total = 0.0
  prev = data.train[-1]
  for c in data.valid:
    row = sum(n for (a, _), n in counts.items() if a == prev)
    total -= math.log((counts.get((prev, c), 0) + 1) / (row + V))
    prev = c
  np.testing.assert_allclose(chars.bigram_baseline(data.train, data.valid, V), total / len(data.valid), rtol=1e-12)
  assert chars.uniform_baseline(V) == pytest.approx(math.log(V))


def test_chars_streams_and_windows():
  ids = np.arange(103, dtype=np.int32)
  s = chars.streams(ids, 4)
  np.testing.assert_array_equal(s, np.arange(100).reshape(4, 25))
  xs, labels = chars.windows(ids, jax.random.key(0), 5, 7)
  xs, labels = np.asarray(xs), np.asarray(labels)
  assert xs.shape == labels.shape == (5, 7)
  np.testing.assert_array_equal(labels, xs + 1)  # ids are consecutive: the label is the next id


def test_generate_at_low_temperature_is_greedy_decoding(key):
  vocab = "abcde"
  cell, head = jrnn.gru(8), jrnn.linear(5)
  kc, kh = jax.random.split(key)
  params, hp = cell.init(kc, 5), head.init(kh, 8)
  text = chars.generate(cell, params, head, hp, vocab, "ab", 12, jax.random.key(1), temperature=1e-4)
  carry, _ = jrnn.unroll(cell, params, jax.nn.one_hot(jnp.array([0]), 5, dtype=jnp.float32))
  _, _, fed = jrnn.one_to_many(
    cell, params, head, hp, jax.nn.one_hot(1, 5, dtype=jnp.float32), 12, carry, feedback="argmax"
  )
  assert text == chars.decode(np.argmax(np.asarray(fed), -1), vocab)
  sample = chars.generate(cell, params, head, hp, vocab, "a", 30, jax.random.key(1))
  assert len(sample) == 30 and set(sample) <= set(vocab)
  assert sample == chars.generate(cell, params, head, hp, vocab, "a", 30, jax.random.key(1))


def test_sunspots_windows_normalisation_and_persistence():
  values = np.arange(30, dtype=np.float64) ** 1.5
  data = sunspots.sunspots(4, test_fraction=0.2, values=values)
  cut = 24  # round(30 * 0.8): targets from index 24 on are test targets
  mean, std = values[:cut].mean(), values[:cut].std()
  assert (data.mean, data.std) == pytest.approx((mean, std))
  z = (values - mean) / std
  assert data.train_xs.shape == (20, 4, 1) and data.test_xs.shape == (6, 4, 1)
  np.testing.assert_allclose(data.train_xs[0, :, 0], z[0:4], rtol=1e-6)
  np.testing.assert_allclose(data.train_ys[:, 0], z[4:24], rtol=1e-6)
  np.testing.assert_allclose(data.test_ys[:, 0], z[24:], rtol=1e-6)
  want = np.mean([(z[t - 1] - z[t]) ** 2 for t in range(24, 30)])
  np.testing.assert_allclose(sunspots.persistence_baseline(data.test_xs, data.test_ys), want, rtol=1e-6)


def test_sunspots_bundled_series():
  pytest.importorskip("statsmodels")
  years, values = sunspots.series()
  assert years[0] == 1700 and years[-1] == 2008 and len(values) == 309
  data = sunspots.sunspots(20)
  assert data.years[-1] == 2008 and len(data.test_ys) == 309 - 247
  raw = values[246:]  # the year before each test target, then the targets
  np.testing.assert_allclose(
    sunspots.persistence_baseline(data.test_xs, data.test_ys),
    np.mean((raw[:-1] - raw[1:]) ** 2) / data.std**2,
    rtol=1e-5,
  )


def test_submodules_are_modules_and_task_names_are_functions():
  """No function rebinds a submodule's name: the data sets are modules, the tasks' generators functions."""
  import importlib
  import types

  import jrnn.tasks.chars as chars_module
  import jrnn.tasks.sunspots as sunspots_module

  assert isinstance(chars_module, types.ModuleType) and chars_module is jrnn.tasks.chars
  assert isinstance(sunspots_module, types.ModuleType) and sunspots_module is jrnn.tasks.sunspots
  for name in ("copy", "adding", "dogs"):
    assert isinstance(getattr(jrnn.tasks, name), types.FunctionType), name
    assert isinstance(importlib.import_module(f"jrnn.tasks._{name}"), types.ModuleType)
  assert jrnn.tasks.copy is copy and jrnn.tasks.adding is adding
  assert jrnn.tasks.copy(jax.random.key(0), 2, 3).xs.shape == (2, 23, jrnn.tasks.COPY_CLASSES)
  assert jrnn.tasks.dogs().xs.shape == (3, len(jrnn.tasks.DOGS_VOCAB))
  for name in jrnn.tasks.__all__:
    assert hasattr(jrnn.tasks, name), name
