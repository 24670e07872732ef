"""Losses against NumPy float64 formulas, with and without masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn


def test_mse_matches_seeds_formula(x64):
  rng = np.random.default_rng(0)
  pred, target = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
  # The seeds' eq. (6): (1/T)(1/n) sum_t sum_i (a - y)^2
  want = np.sum((pred - target) ** 2) / (5 * 2)
  np.testing.assert_allclose(jrnn.losses.mse(jnp.asarray(pred), jnp.asarray(target)), want, rtol=1e-14)
  mask = np.array([1, 0, 1, 1, 0], bool)
  want_m = np.sum((pred[mask] - target[mask]) ** 2) / (mask.sum() * 2)
  np.testing.assert_allclose(jrnn.losses.mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask)),
                             want_m, rtol=1e-14)


def test_softmax_cross_entropy_matches_log_softmax(x64):
  rng = np.random.default_rng(1)
  logits, labels = rng.normal(size=(3, 6, 4)), rng.integers(0, 4, size=(3, 6))
  logp = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  nll = -np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
  got = jrnn.losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(got, nll.mean(), rtol=1e-13)
  mask = rng.random((3, 6)) < 0.5
  got_m = jrnn.losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
  np.testing.assert_allclose(got_m, nll[mask].mean(), rtol=1e-13)


def test_fully_masked_loss_is_zero_not_nan():
  z = jrnn.losses.mse(jnp.ones((3, 2)), jnp.zeros((3, 2)), jnp.zeros(3, bool))
  g = jax.grad(lambda p: jrnn.losses.mse(p, jnp.zeros((3, 2)), jnp.zeros(3, bool)))(jnp.ones((3, 2)))
  assert float(z) == 0.0 and np.all(np.isfinite(g)) and np.all(g == 0)


def test_loss_input_errors():
  with pytest.raises(ValueError, match=r"pred has shape \(3, 2\) but target has shape \(3, 3\)"):
    jrnn.losses.mse(jnp.ones((3, 2)), jnp.ones((3, 3)))
  with pytest.raises(TypeError, match="int_labels must be integers"):
    jrnn.losses.softmax_cross_entropy(jnp.ones((3, 4)), jnp.ones(3))
  with pytest.raises(ValueError, match=r"int_labels must have shape"):
    jrnn.losses.softmax_cross_entropy(jnp.ones((3, 4)), jnp.ones(4, jnp.int32))
  with pytest.raises(TypeError, match="mask must be boolean"):
    jrnn.losses.mse(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones(3))
  with pytest.raises(ValueError, match=r"mask must have shape \(3,\)"):
    jrnn.losses.mse(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones(4, bool))
