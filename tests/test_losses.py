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
  np.testing.assert_allclose(
    jrnn.losses.mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask)), want_m, rtol=1e-14
  )


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


def _numpy_cross_entropy(logits, labels, mask):
  """Mean over ``mask`` of -log softmax(logits)[label], in float64 NumPy (labels read only where mask is True)."""
  logp = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  safe = np.where(mask, labels, 0)
  nll = -np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  return nll[mask].mean()


@pytest.mark.parametrize("bad", [4, 7, -1, -4, -5])
def test_out_of_range_label_raises_eagerly(bad):
  labels = jnp.array([[0, 1, 2], [3, bad, 0]])
  with pytest.raises(
    ValueError,
    match=rf"int_labels must lie in \[0, num_classes\) = \[0, 4\) at every position, "
    rf"got {bad} at 1 position\(s\), the first at index \(1, 1\)",
  ):
    jrnn.losses.softmax_cross_entropy(jnp.zeros((2, 3, 4)), labels)
  # With the labels concrete, jax.grad with respect to the logits checks them too.
  with pytest.raises(ValueError, match="int_labels must lie in"):
    jax.grad(jrnn.losses.softmax_cross_entropy)(jnp.zeros((2, 3, 4)), labels)


def test_out_of_range_error_lists_the_values():
  """Distinct bad values, sorted; the masked 5 is not among them."""
  labels = jnp.array([9, -2, 9, 1, 5])
  with pytest.raises(ValueError, match=r"unmasked position, got -2, 9 at 3 position\(s\), the first at index \(0,\)"):
    jrnn.losses.softmax_cross_entropy(jnp.zeros((5, 3)), labels, jnp.array([True, True, True, True, False]))


def test_masked_padding_labels_do_not_raise(x64):
  """Padding ids (-1, or anything past the classes) at masked positions are ignored, eagerly and under jit."""
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(2, 5, 4))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)
  labels = np.where(mask, rng.integers(0, 4, size=(2, 5)), -1)
  labels[1, 4] = 99
  want = _numpy_cross_entropy(logits, labels, mask)
  args = jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask)
  np.testing.assert_allclose(jrnn.losses.softmax_cross_entropy(*args), want, rtol=1e-13)
  np.testing.assert_allclose(jax.jit(jrnn.losses.softmax_cross_entropy)(*args), want, rtol=1e-13)
  # The gradient equals the one with in-range labels at the masked positions: padding gets none.
  grad = jax.jit(jax.grad(jrnn.losses.softmax_cross_entropy))(*args)
  clean = jax.grad(jrnn.losses.softmax_cross_entropy)(args[0], jnp.where(args[2], args[1], 0), args[2])
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, clean, rtol=1e-13, atol=1e-15)
  assert np.all(np.asarray(grad)[~mask] == 0)


@pytest.mark.parametrize("bad", [4, 99, -1, -4, -5])
def test_out_of_range_label_under_jit_gives_nan(bad):
  """Under jit the labels are abstract: an out-of-range label at a valid position makes the loss NaN.

  optax alone would read -4 <= k < 0 as class 4 + k and return a finite, wrong loss.
  """
  logits, labels = jnp.zeros((2, 4)), jnp.array([1, bad])
  assert np.isnan(jax.jit(jrnn.losses.softmax_cross_entropy)(logits, labels))
  assert np.isnan(jax.jit(jrnn.losses.softmax_cross_entropy)(logits, labels, jnp.array([False, True])))
  assert np.isnan(jax.vmap(jrnn.losses.softmax_cross_entropy)(logits[None], labels[None])[0])
  # Masked, the same label is ignored: uniform logits over 4 classes cost log 4.
  got = jax.jit(jrnn.losses.softmax_cross_entropy)(logits, labels, jnp.array([True, False]))
  np.testing.assert_allclose(got, np.log(4.0), rtol=1e-6)
