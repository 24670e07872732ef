"""The seeds' worked examples: the 2-3-2 network by hand, and "dogs" trained with SGD and Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn.apps import demo
from jrnn.tasks import DOGS_VOCAB
from jrnn.tasks import dogs


def test_2_3_2_network_forward_by_hand(x64):
  """Eqs. (3)-(4) of the forward/backward seed, written out element by element."""
  rng = np.random.default_rng(232)
  Wxh, Whh, b1 = rng.normal(size=(2, 3)), rng.normal(size=(3, 3)), rng.normal(size=3)
  Why, b2 = rng.normal(size=(3, 2)), rng.normal(size=2)
  xs = rng.normal(size=(3, 2))
  sig = lambda z: 1.0 / (1.0 + np.exp(-z))
  a1, want = np.zeros(3), []
  for t in range(3):
    z1 = [
      sum(xs[t, i] * Wxh[i, j] for i in range(2)) + sum(a1[k] * Whh[k, j] for k in range(3)) + b1[j] for j in range(3)
    ]
    a1 = sig(np.array(z1))
    z2 = [sum(a1[j] * Why[j, m] for j in range(3)) + b2[m] for m in range(2)]
    want.append(sig(np.array(z2)))
  cell = jrnn.elman(3, activation="sigmoid", dtype=jnp.float64)
  params = jrnn.ElmanParams(jnp.asarray(Wxh), jnp.asarray(Whh), jnp.asarray(b1))
  head_params = jrnn.LinearParams(jnp.asarray(Why), jnp.asarray(b2))
  _, ys = jrnn.many_to_many(cell, params, jrnn.linear(2, dtype=jnp.float64), head_params, jnp.asarray(xs))
  np.testing.assert_allclose(jax.nn.sigmoid(ys), np.stack(want), rtol=1e-13)


def test_dogs_data():
  data = dogs()
  np.testing.assert_array_equal(data.xs, np.eye(4)[[0, 1, 2]])
  assert "".join(DOGS_VOCAB[i] for i in data.labels) == "ogs"


def test_dogs_sgd_step_equals_hand_update(x64):
  """One optax SGD step equals W - lr * dL/dW with dL/dW from jax.grad (the seeds' eqs. 17-21)."""
  data = dogs(jnp.float64)
  cell, head = jrnn.elman(3, dtype=jnp.float64), jrnn.linear(4, dtype=jnp.float64)
  params = (cell.init(jax.random.key(0), 4), head.init(jax.random.key(1), 3))

  def loss(p):
    return jrnn.losses.softmax_cross_entropy(jrnn.many_to_many(cell, p[0], head, p[1], data.xs)[1], data.labels)

  grads = jax.grad(loss)(params)
  opt = optax.sgd(0.5)
  updates, _ = opt.update(grads, opt.init(params), params)
  new = optax.apply_updates(params, updates)
  jax.tree.map(lambda n, p, g: np.testing.assert_allclose(n, p - 0.5 * g, rtol=1e-14), new, params, grads)
  assert float(loss(new)) < float(loss(params))


@pytest.mark.standard_promotion  # optax.adam
def test_dogs_trains_to_predict_s():
  for opt in (optax.sgd(0.5), optax.adam(0.05)):
    _, losses, probs = demo.train_dogs(opt, steps=200)
    assert float(losses[0]) > 1.0 and float(losses[-1]) < 0.05
    assert "".join(DOGS_VOCAB[int(i)] for i in jnp.argmax(probs, axis=-1)) == "ogs"
    assert float(probs[2, DOGS_VOCAB.index("s")]) > 0.95
