"""The adding problem (Hochreiter & Schmidhuber, 1997), in Le et al.'s (2015) form.

Each sequence has ``T`` steps of two channels: channel 0 holds values drawn
from U[0, 1]; channel 1 is 0 except at two marked steps, one drawn uniformly
from the first half ``[0, T//2)`` and one from the second half ``[T//2, T)``.
The target, read once after the last step (many-to-one), is the sum of the two
marked values:

.. math::

   y = \\sum_{t=1}^{T} x_{t,0} \\, x_{t,1}, \\qquad x_{t,0} \\sim U[0, 1]

Predicting the constant 1 (the mean of ``y``) whatever the input scores the
baseline ``E[(y - 1)^2] = Var(u_1 + u_2) = 2/12 ≈ 0.167``; a model that
solves the task gets far below it (Le et al. call it solved below ~0.01 or so).
:func:`adding_baseline` computes the baseline on the data itself.

References:
  Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation (1997).
  Le, Jaitly & Hinton, "A simple way to initialize recurrent networks of
  rectified linear units", arXiv:1504.00941 (2015).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _checks


class AddingData(NamedTuple):
  """A batch of the adding problem.

  Attributes:
    xs: inputs ``[B, T, 2]``: values in channel 0, markers (0 or 1) in channel 1.
    targets: ``[B, 1]``, the sum of the two marked values.
  """

  xs: jax.Array
  targets: jax.Array


def adding(key: jax.Array, batch_size: int, length: int, dtype=jnp.float32) -> AddingData:
  """Draws ``batch_size`` sequences of the adding problem of length ``length``.

  Deterministic for ``key``. ``length`` must be at least 2.

  Example:
    >>> import jax, jrnn
    >>> data = jrnn.tasks.adding(jax.random.key(0), 32, 100)
    >>> data.xs.shape, data.targets.shape
    ((32, 100, 2), (32, 1))
  """
  _checks.positive_int(length, "length (one marker per half)", "jrnn.tasks.adding", minimum=2)
  _checks.positive_int(batch_size, "batch_size", "jrnn.tasks.adding")
  return _draw(key, batch_size, length, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _draw(key, batch_size, length, dtype):
  kv, k1, k2 = jax.random.split(key, 3)
  half = length // 2
  values = jax.random.uniform(kv, (batch_size, length), dtype)
  first = jax.random.randint(k1, (batch_size,), 0, half)
  second = jax.random.randint(k2, (batch_size,), half, length)
  t = jnp.arange(length)[None, :]
  markers = ((t == first[:, None]) | (t == second[:, None])).astype(dtype)
  targets = jnp.sum(values * markers, axis=1, keepdims=True)
  return AddingData(jnp.stack([values, markers], axis=-1), targets)


def adding_baseline(targets: jax.typing.ArrayLike) -> jax.Array:
  """MSE of always predicting 1 on these ``targets`` (≈ 1/6 for large batches)."""
  targets = jnp.asarray(targets)
  return jnp.mean(jnp.square(targets - jnp.ones((), targets.dtype)))
