"""Weight initializers used by jrnn's cells.

Input weights use Glorot-uniform (Glorot & Bengio, 2010), recurrent weights are
orthogonal (Saxe et al., 2014), one orthogonal block per gate, as Keras and Flax
do. ``identity`` gives the IRNN recurrent matrix (Le et al., 2015).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

glorot_uniform = jax.nn.initializers.glorot_uniform()
_orthogonal = jax.nn.initializers.orthogonal()


def input_weights(key: jax.Array, input_size: int, hidden_size: int, gates: int, dtype) -> jax.Array:
  """Glorot-uniform input weights ``[input_size, gates * hidden_size]``, per gate block."""
  keys = jax.random.split(key, gates)
  blocks = [glorot_uniform(k, (input_size, hidden_size), dtype) for k in keys]
  return jnp.concatenate(blocks, axis=1)


def recurrent_weights(key: jax.Array, hidden_size: int, gates: int, dtype) -> jax.Array:
  """Orthogonal recurrent weights ``[hidden_size, gates * hidden_size]``, one block per gate."""
  keys = jax.random.split(key, gates)
  blocks = [_orthogonal(k, (hidden_size, hidden_size), jnp.float32).astype(dtype) for k in keys]
  return jnp.concatenate(blocks, axis=1)
