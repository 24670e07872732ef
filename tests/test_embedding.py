"""Token embeddings and the tied output layer, against one-hot products and NumPy in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

V, D = 7, 5


@pytest.fixture
def emb():
  return jrnn.embedding(V, D, dtype=jnp.float64)


def test_lookup_is_the_one_hot_product(x64, emb):
  params = emb.init(jax.random.key(0))
  ids = np.array([[0, 6, 3, 3], [2, 1, 5, 0]])
  table = np.asarray(params.table)
  np.testing.assert_array_equal(emb.apply(params, ids), np.eye(V)[ids] @ table)
  np.testing.assert_array_equal(jax.jit(emb.apply)(params, ids), table[ids])


def test_gradient_adds_up_per_token(x64, emb):
  # d/dE sum_t <x_t, c_t> = sum over the positions of each token of c_t: a scatter-add, written with np.add.at.
  params = emb.init(jax.random.key(0))
  ids = np.array([1, 4, 1, 1, 6])
  c = np.random.default_rng(0).normal(size=(5, D))
  grad = jax.grad(lambda p: jnp.sum(emb.apply(p, ids) * c))(params).table
  expected = np.zeros((V, D))
  np.add.at(expected, ids, c)
  np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-15)


def test_init_scale_is_one_over_sqrt_dim():
  params = jrnn.embedding(4000, 16).init(jax.random.key(1))
  std = float(jnp.std(params.table))
  assert abs(std - 1 / np.sqrt(16)) < 0.01 * 1 / np.sqrt(16) * 5  # 64k draws: sampling error ~0.3%


def test_bad_ids_are_clear_errors(x64, emb):
  params = emb.init(jax.random.key(0))
  with pytest.raises(TypeError, match=r"jrnn.embedding.apply: ids must be integer token ids, got dtype float32"):
    emb.apply(params, np.zeros(3, np.float32))
  with pytest.raises(
    ValueError, match=r"ids must lie in \[0, 7\) \(vocab_size=7\), got 2 out of range, e.g. \[7, -1\]"
  ):
    emb.apply(params, np.array([0, 7, 3, -1]))
  # Under jit the values are unknown at trace time: an out-of-range id gives NaN, never a clamped row.
  rows = jax.jit(emb.apply)(params, jnp.array([2, 7]))
  assert np.isfinite(rows[0]).all() and np.isnan(rows[1]).all()
  with pytest.raises(ValueError, match="vocab_size must be"):
    jrnn.embedding(0, 3)


def test_tied_head_scores_with_the_embedding_matrix(x64, emb):
  head = jrnn.tied_linear(emb)
  params = head.init(jax.random.key(2), D)
  params = params._replace(b=jnp.arange(V, dtype=jnp.float64))
  h = np.random.default_rng(1).normal(size=(3, D))
  np.testing.assert_allclose(head.apply(params, h), h @ np.asarray(params.embedding.table).T + np.arange(V), atol=1e-14)
  assert head.output_size == V
  with pytest.raises(ValueError, match=r"input_size must equal the embedding's dim 5 .* got 6"):
    head.init(jax.random.key(2), 6)
  with pytest.raises(TypeError, match="must be a jrnn.embedding"):
    jrnn.tied_linear(jrnn.linear(3))


def test_tied_language_model_gradient_is_the_sum_of_both_uses(x64, emb):
  # An Elman LM that embeds its inputs with E and scores its outputs with E: the gradient w.r.t. the one tied E
  # equals the sum of the gradients w.r.t. two untied copies holding the same values (input use + output use).
  cell, head = jrnn.elman(D, dtype=jnp.float64), jrnn.tied_linear(emb)
  k1, k2 = jax.random.split(jax.random.key(3))
  params = jrnn.ModelParams(cell.init(k1, D), head.init(k2, D))
  ids, targets = jnp.array([1, 3, 3, 0, 6]), jnp.array([3, 3, 0, 6, 2])

  def tied(params):
    xs = emb.apply(params.head.embedding, ids)
    _, logits = jrnn.many_to_many(cell, params.cell, head, params.head, xs)
    return jrnn.losses.softmax_cross_entropy(logits, targets)

  def untied(e_in, e_out, cell_params, b):
    s, loss = jnp.zeros(D), 0.0
    for t in range(len(ids)):  # the Elman network and the softmax written out
      s = jnp.tanh(e_in[ids[t]] @ cell_params.wx + s @ cell_params.wh + cell_params.b)
      loss = loss - jax.nn.log_softmax(s @ e_out.T + b)[targets[t]]
    return loss / len(ids)

  table = params.head.embedding.table
  np.testing.assert_allclose(tied(params), untied(table, table, params.cell, params.head.b), rtol=1e-13)
  g_in, g_out = jax.grad(untied, argnums=(0, 1))(table, table, params.cell, params.head.b)
  g = jax.grad(tied)(params).head.embedding.table
  np.testing.assert_allclose(g, g_in + g_out, atol=1e-14)
  assert float(jnp.abs(g_in).max()) > 1e-3 and float(jnp.abs(g_out).max()) > 1e-3  # both uses contribute
