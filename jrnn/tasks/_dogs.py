"""The seeds' "dogs" example: read d-o-g, predict s.

The vocabulary is the four letters of "dogs", one-hot encoded (``k = 4``).
Fed "d", "o", "g" one at a time, the network should predict the next letter at
every step, and "s" after "g" (the seeds' many-to-one reading is the last of
these predictions).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

DOGS_VOCAB = "dogs"


class DogsData(NamedTuple):
  """One sequence: ``xs [3, 4]`` one-hot d, o, g; ``labels [3]`` the indices of o, g, s."""

  xs: jax.Array
  labels: jax.Array


def dogs(dtype=jnp.float32) -> DogsData:
  """The "dogs" sequence: inputs d, o, g (one-hot) and next-letter labels o, g, s."""
  ids = jnp.array([DOGS_VOCAB.index(c) for c in "dogs"], jnp.int32)
  return DogsData(jax.nn.one_hot(ids[:-1], len(DOGS_VOCAB), dtype=dtype), ids[1:])
