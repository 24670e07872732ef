"""The copy (memory) task (Hochreiter & Schmidhuber, 1997; Arjovsky et al., 2016).

The alphabet is ``{0, 1, ..., 9}``: 0 is the blank, 1–8 are the symbols and 9
is the delimiter. A sequence of length ``T + 20`` is

* input: 10 symbols drawn uniformly from 1–8, then ``T - 1`` blanks, the
  delimiter, and 10 more blanks;
* target: ``T + 10`` blanks, then the 10 symbols again.

The network reads one one-hot input per step and predicts a class per step
(many-to-many, cross-entropy averaged over all ``T + 20`` steps). A memoryless
strategy knows where it is but not what it saw: it predicts blanks for the first
``T + 10`` steps and a uniform guess over the 8 symbols for the last 10, which
scores (Arjovsky et al., 2016, section 4.1)

.. math::

   \\mathcal{L}_{\\mathrm{baseline}} = \\frac{10 \\ln 8}{T + 20}

References:
  Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation (1997).
  Arjovsky, Shah & Bengio, "Unitary evolution recurrent neural networks",
  ICML (2016).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _checks

COPY_CLASSES = 10
COPY_SYMBOLS = 8
COPY_LENGTH = 10
BLANK, DELIMITER = 0, 9


class CopyData(NamedTuple):
  """A batch of the copy task.

  Attributes:
    xs: one-hot inputs ``[B, T + 20, 10]``.
    labels: integer targets ``[B, T + 20]``.
    tokens: the integer inputs ``[B, T + 20]`` (``xs.argmax(-1)``).
  """

  xs: jax.Array
  labels: jax.Array
  tokens: jax.Array


def copy(key: jax.Array, batch_size: int, blanks: int, dtype=jnp.float32) -> CopyData:
  """Draws ``batch_size`` copy-task sequences with ``blanks = T >= 1`` (length ``T + 20``).

  Example:
    >>> import jax, jrnn
    >>> data = jrnn.tasks.copy(jax.random.key(0), 32, 100)
    >>> data.xs.shape, data.labels.shape
    ((32, 120, 10), (32, 120))
  """
  _checks.positive_int(blanks, "blanks (T)", "jrnn.tasks.copy")
  _checks.positive_int(batch_size, "batch_size", "jrnn.tasks.copy")
  return _draw(key, batch_size, blanks, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _draw(key, batch_size, blanks, dtype):
  symbols = jax.random.randint(key, (batch_size, COPY_LENGTH), 1, COPY_SYMBOLS + 1, dtype=jnp.int32)

  def blank(n):
    return jnp.full((batch_size, n), BLANK, jnp.int32)

  delim = jnp.full((batch_size, 1), DELIMITER, jnp.int32)
  tokens = jnp.concatenate([symbols, blank(blanks - 1), delim, blank(COPY_LENGTH)], axis=1)
  labels = jnp.concatenate([blank(blanks + COPY_LENGTH), symbols], axis=1)
  return CopyData(jax.nn.one_hot(tokens, COPY_CLASSES, dtype=dtype), labels, tokens)


def copy_baseline(blanks: int) -> float:
  """The memoryless strategy's cross-entropy, ``10 ln 8 / (T + 20)`` nats per step."""
  return COPY_LENGTH * math.log(COPY_SYMBOLS) / (blanks + 2 * COPY_LENGTH)
